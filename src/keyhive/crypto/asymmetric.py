"""Asymmetric and HMAC recipes for KMS key specs: bytes in, bytes out.

Private keys travel as PKCS#8 DER, public keys as DER SubjectPublicKeyInfo (what
GetPublicKey returns), HMAC keys as raw bytes.  Every failure to verify is a
plain False; malformed inputs raise :class:`CryptoInputError` with no detail.
"""

from __future__ import annotations

import functools
import hmac as _hmac
import os

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as UnsupportedAlgorithmError
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512, "224": hashes.SHA224, "1": hashes.SHA1}
_CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1, "secp256k1": ec.SECP256K1}
_MLDSA = {"ML_DSA_44": mldsa.MLDSA44PrivateKey, "ML_DSA_65": mldsa.MLDSA65PrivateKey, "ML_DSA_87": mldsa.MLDSA87PrivateKey}


PARSED_KEY_CACHE_SIZE = 4096


class CryptoInputError(ValueError):
    """A key, peer key or ciphertext that cannot be used. Says nothing more."""

    def __init__(self) -> None:
        super().__init__("unusable cryptographic input")


def _hash(algorithm: str) -> hashes.HashAlgorithm:
    return _HASHES[algorithm.rsplit("_", 1)[1]]()


def generate(spec: str, *, rsa_bits: int = 0, curve: str = "", hmac_bytes: int = 0) -> bytes:
    """New key material for ``spec``: PKCS#8 DER, or raw bytes for HMAC."""
    if hmac_bytes:
        return os.urandom(hmac_bytes)
    if rsa_bits:
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    elif curve == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif curve:
        key = ec.generate_private_key(_CURVES[curve]())
    else:
        key = _MLDSA[spec].generate()
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@functools.lru_cache(maxsize=PARSED_KEY_CACHE_SIZE)
def _private(der: bytes):  # type: ignore[no-untyped-def]
    """The key object for PKCS#8 DER; cached, since loading an RSA key checks it (tens of ms)."""
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise CryptoInputError() from None


def forget() -> None:
    """Drop every parsed private key (on seal, with the rest of the key material)."""
    _private.cache_clear()


def public_key(private_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a PKCS#8 private key."""
    return _private(private_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(private_der: bytes, algorithm: str, message: bytes, message_type: str) -> bytes:
    """A signature as KMS returns it (ECDSA: DER; RSA, Ed25519, ML-DSA: raw)."""
    key = _private(private_der)
    digest = message_type == "DIGEST"
    if algorithm.startswith("RSASSA_PSS"):
        h = _hash(algorithm)
        return key.sign(message, padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH),
                        Prehashed(h) if digest else h)
    if algorithm.startswith("RSASSA_PKCS1"):
        h = _hash(algorithm)
        return key.sign(message, padding.PKCS1v15(), Prehashed(h) if digest else h)
    if algorithm.startswith("ECDSA"):
        h = _hash(algorithm)
        return key.sign(message, ec.ECDSA(Prehashed(h) if digest else h))
    if algorithm == "ED25519_SHA_512":
        return key.sign(message)
    if algorithm == "ML_DSA_SHAKE_256":
        return key.sign_mu(message) if message_type == "EXTERNAL_MU" else key.sign(message)
    raise CryptoInputError()


def verify(private_der: bytes, algorithm: str, message: bytes, message_type: str, signature: bytes) -> bool:
    key = _private(private_der).public_key()
    digest = message_type == "DIGEST"
    try:
        if algorithm.startswith("RSASSA_PSS"):
            h = _hash(algorithm)
            key.verify(signature, message, padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH),
                       Prehashed(h) if digest else h)
        elif algorithm.startswith("RSASSA_PKCS1"):
            h = _hash(algorithm)
            key.verify(signature, message, padding.PKCS1v15(), Prehashed(h) if digest else h)
        elif algorithm.startswith("ECDSA"):
            h = _hash(algorithm)
            key.verify(signature, message, ec.ECDSA(Prehashed(h) if digest else h))
        elif algorithm == "ED25519_SHA_512":
            key.verify(signature, message)
        elif algorithm == "ML_DSA_SHAKE_256":
            if message_type == "EXTERNAL_MU":
                key.verify_mu(signature, message)
            else:
                key.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _oaep(algorithm: str) -> padding.OAEP:
    h = _hash(algorithm)
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def rsa_encrypt(private_der: bytes, algorithm: str, plaintext: bytes) -> bytes:
    return _private(private_der).public_key().encrypt(plaintext, _oaep(algorithm))


def rsa_decrypt(private_der: bytes, algorithm: str, ciphertext: bytes) -> bytes:
    try:
        return _private(private_der).decrypt(ciphertext, _oaep(algorithm))
    except ValueError:
        raise CryptoInputError() from None


def mac(key: bytes, algorithm: str, message: bytes) -> bytes:
    """HMAC_SHA_256 and friends."""
    return _hmac.new(key, message, "sha" + algorithm.rsplit("_", 1)[1]).digest()


def mac_valid(key: bytes, algorithm: str, message: bytes, tag: bytes) -> bool:
    return _hmac.compare_digest(mac(key, algorithm, message), tag)


def ecdh(private_der: bytes, peer_public_der: bytes) -> bytes:
    """The raw ECDH shared secret with a peer's DER SubjectPublicKeyInfo on the same curve."""
    key = _private(private_der)
    try:
        peer = serialization.load_der_public_key(peer_public_der)
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != key.curve.name:
            raise CryptoInputError()
        return key.exchange(ec.ECDH(), peer)
    except (ValueError, TypeError, UnsupportedAlgorithmError):
        raise CryptoInputError() from None


def unwrap_import(wrapping_private_der: bytes, algorithm: str, encrypted: bytes) -> bytes:
    """Key material wrapped for import (GetParametersForImport's wrapping algorithms).

    RSA_AES_KEY_WRAP_SHA_*: an ephemeral AES key under RSA-OAEP, followed by the
    material under AES key wrap with padding (RFC 5649).
    """
    key = _private(wrapping_private_der)
    try:
        if algorithm.startswith("RSAES_OAEP"):
            return key.decrypt(encrypted, _oaep(algorithm))
        if algorithm.startswith("RSA_AES_KEY_WRAP"):
            split = key.key_size // 8
            aes_key = key.decrypt(encrypted[:split], _oaep(algorithm))
            return keywrap.aes_key_unwrap_with_padding(aes_key, encrypted[split:])
    except (ValueError, keywrap.InvalidUnwrap):
        raise CryptoInputError() from None
    raise CryptoInputError()


def matches_spec(private_der: bytes, *, rsa_bits: int = 0, curve: str = "") -> bool:
    """Whether imported PKCS#8 material is a private key of this RSA size or curve."""
    try:
        key = serialization.load_der_private_key(private_der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithmError):
        return False
    if rsa_bits:
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == rsa_bits
    if curve == "ed25519":
        return isinstance(key, ed25519.Ed25519PrivateKey)
    return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve
