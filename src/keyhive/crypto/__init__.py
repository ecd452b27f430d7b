"""The only module that touches ``cryptography.hazmat``: small, pure recipes.

Everything else in Keyhive encrypts through these functions.  Randomness enters
through parameters (``nonce``, ``salt``) on the ``*_from_parts`` seams so that
known-answer tests can fix it; the public functions draw it from the OS.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_BYTES = 32  # AES-256 everywhere
NONCE_BYTES = 12  # GCM's 96-bit nonce
TAG_BYTES = 16
SALT_BYTES = 16  # per-message key derivation salt


class DecryptionFailed(Exception):
    """Any failure to open a sealed box. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def new_key() -> bytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM under ``key`` with a random nonce: returns (nonce, ciphertext||tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, seal_from_parts(key, nonce, plaintext, aad)


def seal_from_parts(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal`; raises :class:`DecryptionFailed` on any mismatch."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise DecryptionFailed() from None


def derive_message_key(material: bytes, salt: bytes, info: bytes) -> bytes:
    """A one-message AES-256 key: HKDF-SHA256(material, salt, info).

    Deriving a fresh key per message (as AWS KMS does from its HBK and a random
    nonce) removes GCM's 2^32-messages-per-key limit on random nonces.
    """
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(material)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# -- signatures (the audit trail's chain heads) -----------------------------------------
def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair: (raw private key, raw public key)."""
    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def sign(private_key: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(message)


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True

