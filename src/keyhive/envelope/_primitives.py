"""The envelope package's only use of ``cryptography.hazmat``: key derivation, AES-GCM, ECDSA P-384.

- ``derive``: the committing suites' HKDF-SHA512 (salt: the message id). The AES-256 key
  uses info = suite id (u16) || "DERIVEKEY"; the 32-byte commitment, info = "COMMITKEY".
- ``FrameCipher``: AES-256-GCM with 12-byte IVs and 16-byte tags, writing into caller
  buffers (``encrypt_into`` / ``decrypt_into``), which release the GIL while they work.
- ``sign_digest`` / ``verify_digest``: ECDSA P-384 over a SHA-384 digest computed by the
  caller (hashlib, in another thread). Signatures are DER and, as the AWS Encryption
  SDKs write them, always 103 bytes: s is taken in its low form (s <= n/2), and a
  signature of another length is made again.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyhive.envelope._errors import MessageCorrupt

SIGNATURE_LENGTH = 103  # the AWS Encryption SDKs' fixed length for P-384 (r padded to 49 bytes, s 48)
_P384_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
_ECDSA = ec.ECDSA(Prehashed(hashes.SHA384()))
_HEADER_IV = bytes(12)
_MAX_SIGNING_ATTEMPTS = 64  # each attempt succeeds with probability about 1/2


class FrameCipher:
    """AES-256-GCM under one derived key. ``seal_into(iv, data, aad, out)`` writes ciphertext and tag
    (``len(data) + 16`` bytes); ``open_into(iv, data, aad, out)`` checks the tag, then writes the plaintext."""

    def __init__(self, key: bytes) -> None:
        aead = AESGCM(key)
        self.seal_into = aead.encrypt_into
        self.open_into = aead.decrypt_into
        self._aead = aead

    def header_tag(self, header: bytes) -> bytes:
        return self._aead.encrypt(_HEADER_IV, b"", header)

    def check_header_tag(self, header: bytes, tag: bytes) -> None:
        try:
            self._aead.decrypt(_HEADER_IV, tag, header)
        except InvalidTag:
            raise MessageCorrupt from None


def derive(data_key: bytes, message_id: bytes, suite_id: int) -> tuple[FrameCipher, bytes]:
    """(the cipher for this message's header tag and frames, its 32-byte key commitment)."""
    key = HKDF(hashes.SHA512(), 32, message_id, struct.pack(">H", suite_id) + b"DERIVEKEY").derive(data_key)
    commitment = HKDF(hashes.SHA512(), 32, message_id, b"COMMITKEY").derive(data_key)
    return FrameCipher(key), commitment


def check_commitment(expected: bytes, found: bytes) -> None:
    if not hmac.compare_digest(expected, found):
        raise MessageCorrupt


def sign_digest(private_key_der: bytes, digest: bytes) -> bytes:
    """A 103-byte DER ECDSA P-384 signature of a SHA-384 ``digest``."""
    key = serialization.load_der_private_key(private_key_der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise TypeError("the signing key is not an ECDSA P-384 key")
    for _ in range(_MAX_SIGNING_ATTEMPTS):
        r, s = decode_dss_signature(key.sign(digest, _ECDSA))
        signature = encode_dss_signature(r, min(s, _P384_ORDER - s))
        if len(signature) == SIGNATURE_LENGTH:
            return signature
    raise RuntimeError("no ECDSA signature of the expected length")  # pragma: no cover - odds below 2**-60


def verify_digest(public_key_der: bytes, signature: bytes, digest: bytes) -> None:
    """Raises MessageCorrupt unless ``signature`` is a valid ECDSA P-384 signature of ``digest``."""
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise MessageCorrupt
    try:
        key.verify(signature, digest, _ECDSA)
    except (InvalidSignature, ValueError):
        raise MessageCorrupt from None
