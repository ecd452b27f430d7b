"""Asymmetric KMS keys through boto3 against a live ``keyhive server --dev``.

CreateKey for every key spec and usage AWS allows, Sign and Verify with every signing
algorithm (RAW, DIGEST, EXTERNAL_MU), GetPublicKey, RSA Encrypt/Decrypt/ReEncrypt and
GenerateDataKeyPair[WithoutPlaintext].  Every signature and every public key is checked
outside Keyhive with ``cryptography`` (and the ``openssl`` command line for RSA_2048 and
ECC_NIST_P256), so a Keyhive that only agrees with itself fails.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.conftest import code_of

RSA_SIGNING = ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
               "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"]
RSA_ENCRYPTION = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]

# (KeySpec, KeyUsage) -> (KeyMetadata member, its exact list), per the KMS key spec reference.
ALLOWED: dict[tuple[str, str], tuple[str, list[str]]] = {
    **{(f"RSA_{b}", "ENCRYPT_DECRYPT"): ("EncryptionAlgorithms", RSA_ENCRYPTION) for b in (2048, 3072, 4096)},
    **{(f"RSA_{b}", "SIGN_VERIFY"): ("SigningAlgorithms", RSA_SIGNING) for b in (2048, 3072, 4096)},
    ("ECC_NIST_P256", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("ECC_NIST_P384", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_384"]),
    ("ECC_NIST_P521", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_512"]),
    **{(f"ECC_NIST_P{n}", "KEY_AGREEMENT"): ("KeyAgreementAlgorithms", ["ECDH"]) for n in (256, 384, 521)},
    ("ECC_SECG_P256K1", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"): ("SigningAlgorithms", ["ED25519_SHA_512", "ED25519_PH_SHA_512"]),
    **{(f"ML_DSA_{n}", "SIGN_VERIFY"): ("SigningAlgorithms", ["ML_DSA_SHAKE_256"]) for n in (44, 65, 87)},
    **{(f"HMAC_{n}", "GENERATE_VERIFY_MAC"): ("MacAlgorithms", [f"HMAC_SHA_{n}"]) for n in (224, 256, 384, 512)},
}
ALGORITHM_MEMBERS = ("EncryptionAlgorithms", "SigningAlgorithms", "MacAlgorithms", "KeyAgreementAlgorithms")

REFUSED = [
    ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"), ("SYMMETRIC_DEFAULT", "KEY_AGREEMENT"),
    ("SYMMETRIC_DEFAULT", "GENERATE_VERIFY_MAC"),
    ("RSA_2048", "KEY_AGREEMENT"), ("RSA_2048", "GENERATE_VERIFY_MAC"), ("RSA_2048", "ENCAPSULATE_DECAPSULATE"),
    ("ECC_NIST_P256", "ENCRYPT_DECRYPT"), ("ECC_NIST_P384", "GENERATE_VERIFY_MAC"),
    ("ECC_SECG_P256K1", "KEY_AGREEMENT"), ("ECC_SECG_P256K1", "ENCRYPT_DECRYPT"),
    ("ECC_NIST_EDWARDS25519", "KEY_AGREEMENT"), ("ECC_NIST_EDWARDS25519", "ENCRYPT_DECRYPT"),
    ("ML_DSA_65", "ENCRYPT_DECRYPT"), ("ML_DSA_44", "KEY_AGREEMENT"),
    ("HMAC_256", "ENCRYPT_DECRYPT"), ("HMAC_512", "SIGN_VERIFY"),
]

# Every signing algorithm of every spec: (spec, algorithm).
SIGNING = [(f"RSA_{b}", a) for b in (2048, 3072, 4096) for a in RSA_SIGNING] + [
    ("ECC_NIST_P256", "ECDSA_SHA_256"), ("ECC_NIST_P384", "ECDSA_SHA_384"), ("ECC_NIST_P521", "ECDSA_SHA_512"),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256"), ("ECC_NIST_EDWARDS25519", "ED25519_SHA_512"),
    ("ML_DSA_44", "ML_DSA_SHAKE_256"), ("ML_DSA_65", "ML_DSA_SHAKE_256"), ("ML_DSA_87", "ML_DSA_SHAKE_256"),
]
# The algorithms that take MessageType DIGEST, and the hash that makes the digest.
DIGESTS = {"SHA_256": hashlib.sha256, "SHA_384": hashlib.sha384, "SHA_512": hashlib.sha512}
HASHES = {"SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}

# Encrypt with RSAES_OAEP: the largest plaintext (KMS Encrypt reference: k - 2*hLen - 2).
OAEP_LIMITS = {
    ("RSA_2048", "RSAES_OAEP_SHA_1"): 214, ("RSA_2048", "RSAES_OAEP_SHA_256"): 190,
    ("RSA_3072", "RSAES_OAEP_SHA_1"): 342, ("RSA_3072", "RSAES_OAEP_SHA_256"): 318,
    ("RSA_4096", "RSAES_OAEP_SHA_1"): 470, ("RSA_4096", "RSAES_OAEP_SHA_256"): 446,
}
OAEP_HASHES = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}

MESSAGE = b"release v1.2.3: sha256 of the tarball is 0123456789abcdef"


@pytest.fixture(scope="module")
def key_for(kms: Any) -> Callable[[str, str], dict[str, Any]]:
    """One key per (spec, usage) for the whole module: RSA key generation is slow."""
    made: dict[tuple[str, str], dict[str, Any]] = {}

    def get(spec: str, usage: str) -> dict[str, Any]:
        if (spec, usage) not in made:
            made[(spec, usage)] = kms.create_key(KeySpec=spec, KeyUsage=usage, Description=f"{spec} {usage}")["KeyMetadata"]
        return made[(spec, usage)]

    return get


@pytest.fixture(scope="module")
def symmetric(kms: Any) -> dict[str, Any]:
    return kms.create_key(Description="symmetric")["KeyMetadata"]


def public_key(kms: Any, key: dict[str, Any]) -> Any:
    return serialization.load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])


def _suffix(algorithm: str) -> str:
    return algorithm[-7:]  # SHA_256 / SHA_384 / SHA_512


def verify_locally(public: Any, algorithm: str, message: bytes, signature: bytes, *, digest: bool = False) -> None:
    """Raise InvalidSignature unless ``signature`` is ``algorithm`` over ``message`` (or its digest)."""
    if algorithm.startswith("RSASSA") or algorithm.startswith("ECDSA"):
        h = HASHES[_suffix(algorithm)]()
        chosen: Any = Prehashed(h) if digest else h
        if algorithm.startswith("RSASSA_PSS"):
            public.verify(signature, message, padding.PSS(padding.MGF1(h), salt_length=h.digest_size), chosen)
        elif algorithm.startswith("RSASSA_PKCS1"):
            public.verify(signature, message, padding.PKCS1v15(), chosen)
        else:
            public.verify(signature, message, ec.ECDSA(chosen))
    else:  # Ed25519 and ML-DSA (empty context) take the message itself
        public.verify(signature, message)


# -- CreateKey ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "usage"), list(ALLOWED), ids=[f"{s}-{u}" for s, u in ALLOWED])
def test_create_key_every_allowed_spec_and_usage(kms: Any, key_for: Callable, spec: str, usage: str) -> None:
    meta = key_for(spec, usage)
    member, algorithms = ALLOWED[(spec, usage)]
    assert (meta["KeySpec"], meta["CustomerMasterKeySpec"], meta["KeyUsage"]) == (spec, spec, usage)
    assert meta["KeyState"] == "Enabled" and meta["Origin"] == "AWS_KMS"
    assert meta[member] == algorithms
    assert [m for m in ALGORITHM_MEMBERS if m in meta] == [member]
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described[member] == algorithms and described["KeySpec"] == spec


@pytest.mark.parametrize(("spec", "usage"), REFUSED, ids=[f"{s}-{u}" for s, u in REFUSED])
def test_create_key_refused_spec_and_usage(kms: Any, spec: str, usage: str) -> None:
    assert code_of(kms.create_key, KeySpec=spec, KeyUsage=usage) == "ValidationException"


@pytest.mark.parametrize("spec", ["SM2", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"])
def test_create_key_specs_keyhive_does_not_implement(kms: Any, spec: str) -> None:
    usage = "SIGN_VERIFY" if spec == "SM2" else "ENCAPSULATE_DECAPSULATE"
    assert code_of(kms.create_key, KeySpec=spec, KeyUsage=usage) == "UnsupportedOperationException"


# -- GetPublicKey -------------------------------------------------------------------------
PUBLIC_TYPES = {
    "RSA": rsa.RSAPublicKey, "ECC_NIST_P": ec.EllipticCurvePublicKey, "ECC_SECG": ec.EllipticCurvePublicKey,
    "ECC_NIST_EDWARDS25519": ed25519.Ed25519PublicKey,
    "ML_DSA_44": mldsa.MLDSA44PublicKey, "ML_DSA_65": mldsa.MLDSA65PublicKey, "ML_DSA_87": mldsa.MLDSA87PublicKey,
}
CURVES = {"ECC_NIST_P256": "secp256r1", "ECC_NIST_P384": "secp384r1", "ECC_NIST_P521": "secp521r1",
          "ECC_SECG_P256K1": "secp256k1"}
ASYMMETRIC = [(s, u) for s, u in ALLOWED if not s.startswith("HMAC")]


@pytest.mark.parametrize(("spec", "usage"), ASYMMETRIC, ids=[f"{s}-{u}" for s, u in ASYMMETRIC])
def test_get_public_key_is_der_spki_with_metadata(kms: Any, key_for: Callable, spec: str, usage: str) -> None:
    key = key_for(spec, usage)
    reply = kms.get_public_key(KeyId=key["KeyId"])
    member, algorithms = ALLOWED[(spec, usage)]
    assert reply["KeyId"] == key["Arn"]
    assert (reply["KeySpec"], reply["CustomerMasterKeySpec"], reply["KeyUsage"]) == (spec, spec, usage)
    assert reply[member] == algorithms
    assert [m for m in ALGORITHM_MEMBERS if m in reply] == [member]
    public = serialization.load_der_public_key(reply["PublicKey"])
    expected_type = next(t for prefix, t in PUBLIC_TYPES.items() if spec.startswith(prefix))
    assert isinstance(public, expected_type)
    if spec.startswith("RSA"):
        assert public.key_size == int(spec[4:])
    if spec in CURVES:
        assert public.curve.name == CURVES[spec]
    assert public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo) == reply["PublicKey"]


@pytest.mark.parametrize("kind", ["symmetric", "hmac"])
def test_get_public_key_of_a_key_without_one(kms: Any, key_for: Callable, symmetric: dict[str, Any],
                                             kind: str) -> None:
    key = symmetric if kind == "symmetric" else key_for("HMAC_256", "GENERATE_VERIFY_MAC")
    assert code_of(kms.get_public_key, KeyId=key["KeyId"]) == "UnsupportedOperationException"


# -- Sign / Verify ------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "algorithm"), SIGNING, ids=[f"{s}-{a}" for s, a in SIGNING])
def test_sign_raw_verifies_in_keyhive_and_outside(kms: Any, key_for: Callable, spec: str, algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    signed = kms.sign(KeyId=key["KeyId"], Message=MESSAGE, MessageType="RAW", SigningAlgorithm=algorithm)
    assert (signed["KeyId"], signed["SigningAlgorithm"]) == (key["Arn"], algorithm)
    signature = signed["Signature"]
    verified = kms.verify(KeyId=key["KeyId"], Message=MESSAGE, MessageType="RAW", Signature=signature,
                          SigningAlgorithm=algorithm)
    assert verified == {**verified, "KeyId": key["Arn"], "SignatureValid": True, "SigningAlgorithm": algorithm}
    public = public_key(kms, key)
    verify_locally(public, algorithm, MESSAGE, signature)
    with pytest.raises(InvalidSignature):
        verify_locally(public, algorithm, MESSAGE + b"!", signature)
    # MessageType defaults to RAW.
    assert kms.verify(KeyId=key["KeyId"], Message=MESSAGE, Signature=signature,
                      SigningAlgorithm=algorithm)["SignatureValid"] is True


@pytest.mark.parametrize(("spec", "algorithm"), SIGNING, ids=[f"{s}-{a}" for s, a in SIGNING])
def test_verify_tampered_message_or_signature_is_an_error(kms: Any, key_for: Callable, spec: str,
                                                          algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    signature = kms.sign(KeyId=key["KeyId"], Message=MESSAGE, SigningAlgorithm=algorithm)["Signature"]
    flipped = bytearray(signature)
    flipped[len(flipped) // 2] ^= 0x01
    for message, bad in ((MESSAGE + b"!", signature), (MESSAGE, bytes(flipped)), (MESSAGE, signature[:-1]),
                         (b"x" + MESSAGE[1:], signature)):
        code = code_of(kms.verify, KeyId=key["KeyId"], Message=message, Signature=bad, SigningAlgorithm=algorithm)
        assert code == "KMSInvalidSignatureException"


DIGEST_SIGNING = [(s, a) for s, a in SIGNING if a[-7:] in DIGESTS and not a.startswith("ED25519")]


@pytest.mark.parametrize(("spec", "algorithm"), DIGEST_SIGNING, ids=[f"{s}-{a}" for s, a in DIGEST_SIGNING])
def test_sign_digest_verifies_outside_and_equals_raw_signing(kms: Any, key_for: Callable, spec: str,
                                                              algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    digest = DIGESTS[_suffix(algorithm)](MESSAGE).digest()
    signature = kms.sign(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST",
                         SigningAlgorithm=algorithm)["Signature"]
    public = public_key(kms, key)
    verify_locally(public, algorithm, digest, signature, digest=True)
    verify_locally(public, algorithm, MESSAGE, signature)  # the same signature as signing the message RAW
    assert kms.verify(KeyId=key["KeyId"], Message=MESSAGE, MessageType="RAW", Signature=signature,
                      SigningAlgorithm=algorithm)["SignatureValid"] is True
    assert kms.verify(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST", Signature=signature,
                      SigningAlgorithm=algorithm)["SignatureValid"] is True
    # A digest hashed again (RAW) is another message.
    assert code_of(kms.verify, KeyId=key["KeyId"], Message=digest, MessageType="RAW", Signature=signature,
                   SigningAlgorithm=algorithm) == "KMSInvalidSignatureException"


@pytest.mark.parametrize(("spec", "algorithm"), DIGEST_SIGNING, ids=[f"{s}-{a}" for s, a in DIGEST_SIGNING])
def test_digest_of_the_wrong_length_is_refused(kms: Any, key_for: Callable, spec: str, algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    size = DIGESTS[_suffix(algorithm)]().digest_size
    for length in (size - 1, size + 1, 20):
        assert code_of(kms.sign, KeyId=key["KeyId"], Message=b"d" * length, MessageType="DIGEST",
                       SigningAlgorithm=algorithm) == "ValidationException"
        assert code_of(kms.verify, KeyId=key["KeyId"], Message=b"d" * length, MessageType="DIGEST",
                       Signature=b"s" * 64, SigningAlgorithm=algorithm) == "ValidationException"


@pytest.mark.parametrize("spec", ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"])
def test_ml_dsa_external_mu(kms: Any, key_for: Callable, spec: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    public = public_key(kms, key)
    hasher = mldsa.MLDSAMuHasher(public)  # FIPS 204 mu: SHAKE256(SHAKE256(pk, 64) || 0 || 0 || M, 64)
    hasher.update(MESSAGE)
    mu = hasher.finalize()
    assert len(mu) == 64
    signature = kms.sign(KeyId=key["KeyId"], Message=mu, MessageType="EXTERNAL_MU",
                         SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    public.verify(signature, MESSAGE)  # an external-mu signature is a signature of the message
    public.verify_mu(signature, mu)
    for message, message_type in ((mu, "EXTERNAL_MU"), (MESSAGE, "RAW")):
        assert kms.verify(KeyId=key["KeyId"], Message=message, MessageType=message_type, Signature=signature,
                          SigningAlgorithm="ML_DSA_SHAKE_256")["SignatureValid"] is True
    raw = kms.sign(KeyId=key["KeyId"], Message=MESSAGE, SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    assert kms.verify(KeyId=key["KeyId"], Message=mu, MessageType="EXTERNAL_MU", Signature=raw,
                      SigningAlgorithm="ML_DSA_SHAKE_256")["SignatureValid"] is True
    other = bytes([mu[0] ^ 1]) + mu[1:]
    assert code_of(kms.verify, KeyId=key["KeyId"], Message=other, MessageType="EXTERNAL_MU", Signature=signature,
                   SigningAlgorithm="ML_DSA_SHAKE_256") == "KMSInvalidSignatureException"
    for bad in (mu[:63], mu + b"\0"):  # "the length of the Message value must be 64 bytes"
        assert code_of(kms.sign, KeyId=key["KeyId"], Message=bad, MessageType="EXTERNAL_MU",
                       SigningAlgorithm="ML_DSA_SHAKE_256") == "ValidationException"
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=mu, MessageType="DIGEST",
                   SigningAlgorithm="ML_DSA_SHAKE_256") == "ValidationException"


def test_external_mu_only_with_ml_dsa(kms: Any, key_for: Callable) -> None:
    key = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=b"m" * 64, MessageType="EXTERNAL_MU",
                   SigningAlgorithm="ECDSA_SHA_256") == "ValidationException"


def test_ed25519_message_types(kms: Any, key_for: Callable) -> None:
    """ED25519_SHA_512 requires MessageType RAW, ED25519_PH_SHA_512 requires DIGEST (Sign reference)."""
    key = key_for("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    digest = hashlib.sha512(MESSAGE).digest()
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=digest, MessageType="DIGEST",
                   SigningAlgorithm="ED25519_SHA_512") == "ValidationException"
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=MESSAGE, MessageType="RAW",
                   SigningAlgorithm="ED25519_PH_SHA_512") == "ValidationException"
    # Deviation, documented: no library here implements Ed25519ph (RFC 8032), so Keyhive
    # refuses ED25519_PH_SHA_512 where AWS would sign.
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=digest, MessageType="DIGEST",
                   SigningAlgorithm="ED25519_PH_SHA_512") == "UnsupportedOperationException"


def test_raw_message_limit(kms: Any, key_for: Callable) -> None:
    key = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    assert kms.sign(KeyId=key["KeyId"], Message=b"m" * 4096, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=b"m" * 4097,
                   SigningAlgorithm="ECDSA_SHA_256") == "ValidationException"


def test_ecdsa_and_pss_signatures_are_randomized_pkcs1_and_ed25519_are_not(kms: Any, key_for: Callable) -> None:
    def twice(spec: str, algorithm: str) -> set[bytes]:
        key = key_for(spec, "SIGN_VERIFY")
        return {kms.sign(KeyId=key["KeyId"], Message=MESSAGE, SigningAlgorithm=algorithm)["Signature"]
                for _ in range(2)}

    assert len(twice("ECC_NIST_P256", "ECDSA_SHA_256")) == 2
    assert len(twice("RSA_2048", "RSASSA_PSS_SHA_256")) == 2
    assert len(twice("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256")) == 1
    assert len(twice("ECC_NIST_EDWARDS25519", "ED25519_SHA_512")) == 1


@pytest.mark.parametrize(("spec", "usage"), [
    ("RSA_2048", "ENCRYPT_DECRYPT"), ("ECC_NIST_P256", "KEY_AGREEMENT"), ("HMAC_256", "GENERATE_VERIFY_MAC"),
])
def test_sign_and_verify_with_a_key_of_another_usage(kms: Any, key_for: Callable, spec: str, usage: str) -> None:
    key = key_for(spec, usage)
    algorithm = "RSASSA_PSS_SHA_256" if spec.startswith("RSA") else "ECDSA_SHA_256"
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=MESSAGE,
                   SigningAlgorithm=algorithm) == "InvalidKeyUsageException"
    assert code_of(kms.verify, KeyId=key["KeyId"], Message=MESSAGE, Signature=b"s" * 64,
                   SigningAlgorithm=algorithm) == "InvalidKeyUsageException"


def test_sign_with_a_symmetric_key(kms: Any, symmetric: dict[str, Any]) -> None:
    assert code_of(kms.sign, KeyId=symmetric["KeyId"], Message=MESSAGE,
                   SigningAlgorithm="RSASSA_PSS_SHA_256") == "InvalidKeyUsageException"


@pytest.mark.parametrize(("spec", "algorithm"), [
    ("ECC_NIST_P256", "ECDSA_SHA_384"), ("ECC_NIST_P384", "ECDSA_SHA_256"), ("ECC_NIST_P521", "RSASSA_PSS_SHA_512"),
    ("ECC_SECG_P256K1", "ED25519_SHA_512"), ("RSA_2048", "ECDSA_SHA_256"), ("RSA_3072", "ML_DSA_SHAKE_256"),
    ("ECC_NIST_EDWARDS25519", "ECDSA_SHA_512"), ("ML_DSA_65", "RSASSA_PKCS1_V1_5_SHA_256"),
    ("ML_DSA_44", "ED25519_SHA_512"),
])
def test_algorithm_not_of_the_spec(kms: Any, key_for: Callable, spec: str, algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=MESSAGE,
                   SigningAlgorithm=algorithm) == "InvalidKeyUsageException"
    assert code_of(kms.verify, KeyId=key["KeyId"], Message=MESSAGE, Signature=b"s" * 64,
                   SigningAlgorithm=algorithm) == "InvalidKeyUsageException"


def test_signature_of_one_key_does_not_verify_under_another(kms: Any, key_for: Callable) -> None:
    a = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    b = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    signature = kms.sign(KeyId=a["KeyId"], Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert code_of(kms.verify, KeyId=b["KeyId"], Message=MESSAGE, Signature=signature,
                   SigningAlgorithm="ECDSA_SHA_256") == "KMSInvalidSignatureException"


# -- openssl command line -----------------------------------------------------------------
OPENSSL = [("RSA_2048", a) for a in RSA_SIGNING] + [("ECC_NIST_P256", "ECDSA_SHA_256")]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command line is not installed")
@pytest.mark.parametrize(("spec", "algorithm"), OPENSSL, ids=[f"{s}-{a}" for s, a in OPENSSL])
def test_signature_verifies_with_openssl_command_line(kms: Any, key_for: Callable, tmp_path: Path, spec: str,
                                                      algorithm: str) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    (tmp_path / "pub.pem").write_bytes(public_key(kms, key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "msg").write_bytes(MESSAGE)
    signature = kms.sign(KeyId=key["KeyId"], Message=MESSAGE, SigningAlgorithm=algorithm)["Signature"]
    (tmp_path / "sig.bin").write_bytes(signature)
    bad = bytearray(signature)
    bad[-1] ^= 0x01
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    sha = "-sha" + algorithm[-3:]
    pss = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"] if "PSS" in algorithm else []

    def openssl(sig: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["openssl", "dgst", sha, "-verify", "pub.pem", "-signature", sig, *pss, "msg"],
                              cwd=tmp_path, capture_output=True, timeout=30)

    good = openssl("sig.bin")
    assert good.returncode == 0 and b"Verified OK" in good.stdout, good.stdout + good.stderr
    assert openssl("bad.bin").returncode != 0


# -- RSA encryption -----------------------------------------------------------------------
RSA_ENC = [(f"RSA_{b}", a) for b in (2048, 3072, 4096) for a in RSA_ENCRYPTION]


def _oaep(algorithm: str) -> padding.OAEP:
    h = OAEP_HASHES[algorithm]()
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


@pytest.mark.parametrize(("spec", "algorithm"), RSA_ENC, ids=[f"{s}-{a}" for s, a in RSA_ENC])
def test_encrypted_locally_with_the_public_key_decrypts_in_keyhive(kms: Any, key_for: Callable, spec: str,
                                                                   algorithm: str) -> None:
    key = key_for(spec, "ENCRYPT_DECRYPT")
    plaintext = bytes(range(256))[: OAEP_LIMITS[(spec, algorithm)]]  # the largest plaintext AWS allows
    ciphertext = public_key(kms, key).encrypt(plaintext, _oaep(algorithm))
    reply = kms.decrypt(CiphertextBlob=ciphertext, KeyId=key["KeyId"], EncryptionAlgorithm=algorithm)
    assert (reply["Plaintext"], reply["KeyId"], reply["EncryptionAlgorithm"]) == (plaintext, key["Arn"], algorithm)
    other = "RSAES_OAEP_SHA_1" if algorithm == "RSAES_OAEP_SHA_256" else "RSAES_OAEP_SHA_256"
    assert code_of(kms.decrypt, CiphertextBlob=ciphertext, KeyId=key["KeyId"],
                   EncryptionAlgorithm=other) == "InvalidCiphertextException"


@pytest.mark.parametrize(("spec", "algorithm"), RSA_ENC, ids=[f"{s}-{a}" for s, a in RSA_ENC])
def test_keyhive_rsa_encrypt_round_trip_and_plaintext_limit(kms: Any, key_for: Callable, spec: str,
                                                            algorithm: str) -> None:
    key = key_for(spec, "ENCRYPT_DECRYPT")
    limit = OAEP_LIMITS[(spec, algorithm)]
    encrypted = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p" * limit, EncryptionAlgorithm=algorithm)
    assert (encrypted["KeyId"], encrypted["EncryptionAlgorithm"]) == (key["Arn"], algorithm)
    assert len(encrypted["CiphertextBlob"]) == int(spec[4:]) // 8  # a bare RSA ciphertext, as AWS returns
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], KeyId=key["Arn"],
                            EncryptionAlgorithm=algorithm)
    assert decrypted["Plaintext"] == b"p" * limit
    assert code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p" * (limit + 1),
                   EncryptionAlgorithm=algorithm) == "ValidationException"


def test_rsa_encryption_refuses_an_encryption_context(kms: Any, key_for: Callable) -> None:
    key = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    context = {"purpose": "test"}
    assert code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                   EncryptionContext=context) == "ValidationException"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    assert code_of(kms.decrypt, CiphertextBlob=blob, KeyId=key["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                   EncryptionContext=context) == "ValidationException"


def test_rsa_ciphertext_without_key_id_is_invalid(kms: Any, key_for: Callable) -> None:
    key = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_1")["CiphertextBlob"]
    assert code_of(kms.decrypt, CiphertextBlob=blob) == "InvalidCiphertextException"
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1") == \
        "InvalidCiphertextException"


def test_tampered_rsa_ciphertext_is_invalid(kms: Any, key_for: Callable) -> None:
    key = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    blob = bytearray(kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p",
                                 EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"])
    blob[10] ^= 0x01
    assert code_of(kms.decrypt, CiphertextBlob=bytes(blob), KeyId=key["KeyId"],
                   EncryptionAlgorithm="RSAES_OAEP_SHA_256") == "InvalidCiphertextException"


def test_rsa_encryption_with_a_signing_key_or_signing_algorithm(kms: Any, key_for: Callable) -> None:
    signing = key_for("RSA_2048", "SIGN_VERIFY")
    assert code_of(kms.encrypt, KeyId=signing["KeyId"], Plaintext=b"p",
                   EncryptionAlgorithm="RSAES_OAEP_SHA_256") == "InvalidKeyUsageException"
    encrypting = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    assert code_of(kms.encrypt, KeyId=encrypting["KeyId"], Plaintext=b"p",
                   EncryptionAlgorithm="SYMMETRIC_DEFAULT") == "InvalidKeyUsageException"


def test_re_encrypt_from_rsa_to_symmetric_and_back(kms: Any, key_for: Callable, symmetric: dict[str, Any]) -> None:
    rsa_key = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    ciphertext = public_key(kms, rsa_key).encrypt(b"secret", _oaep("RSAES_OAEP_SHA_256"))
    to_symmetric = kms.re_encrypt(CiphertextBlob=ciphertext, SourceKeyId=rsa_key["KeyId"],
                                  SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                                  DestinationKeyId=symmetric["KeyId"], DestinationEncryptionContext={"a": "b"})
    assert (to_symmetric["SourceKeyId"], to_symmetric["KeyId"]) == (rsa_key["Arn"], symmetric["Arn"])
    assert to_symmetric["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert to_symmetric["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert kms.decrypt(CiphertextBlob=to_symmetric["CiphertextBlob"],
                       EncryptionContext={"a": "b"})["Plaintext"] == b"secret"
    back = kms.re_encrypt(CiphertextBlob=to_symmetric["CiphertextBlob"], SourceEncryptionContext={"a": "b"},
                          DestinationKeyId=rsa_key["KeyId"], DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert (back["SourceKeyId"], back["KeyId"]) == (symmetric["Arn"], rsa_key["Arn"])
    assert back["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"], KeyId=rsa_key["KeyId"],
                       EncryptionAlgorithm="RSAES_OAEP_SHA_1")["Plaintext"] == b"secret"
    # An RSA source needs its key named.
    assert code_of(kms.re_encrypt, CiphertextBlob=ciphertext, DestinationKeyId=symmetric["KeyId"]) == \
        "InvalidCiphertextException"


def test_generate_data_key_with_an_asymmetric_key(kms: Any, key_for: Callable) -> None:
    for spec, usage in (("RSA_2048", "ENCRYPT_DECRYPT"), ("ECC_NIST_P256", "SIGN_VERIFY")):
        key = key_for(spec, usage)
        assert code_of(kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_256") == "InvalidKeyUsageException"
        assert code_of(kms.generate_data_key_without_plaintext, KeyId=key["KeyId"],
                       NumberOfBytes=32) == "InvalidKeyUsageException"


# -- rotation -----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "usage"), [("RSA_2048", "ENCRYPT_DECRYPT"), ("ECC_NIST_P256", "SIGN_VERIFY"),
                                             ("ML_DSA_44", "SIGN_VERIFY")])
def test_asymmetric_keys_do_not_rotate(kms: Any, key_for: Callable, spec: str, usage: str) -> None:
    key = key_for(spec, usage)
    assert code_of(kms.enable_key_rotation, KeyId=key["KeyId"]) == "UnsupportedOperationException"
    assert code_of(kms.rotate_key_on_demand, KeyId=key["KeyId"]) == "UnsupportedOperationException"


# -- GenerateDataKeyPair ------------------------------------------------------------------
PAIR_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
              "ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519"]
CONTEXT = {"app": "signer", "env": "test"}


def _spki(private: Any) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_pair_type(private: Any, spec: str) -> None:
    if spec.startswith("RSA"):
        assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == int(spec[4:])
    elif spec == "ECC_NIST_EDWARDS25519":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == CURVES[spec]


@pytest.mark.parametrize("spec", PAIR_SPECS)
def test_generate_data_key_pair(kms: Any, symmetric: dict[str, Any], spec: str) -> None:
    reply = kms.generate_data_key_pair(KeyId=symmetric["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert (reply["KeyId"], reply["KeyPairSpec"]) == (symmetric["Arn"], spec)
    private = serialization.load_der_private_key(reply["PrivateKeyPlaintext"], password=None)
    _check_pair_type(private, spec)
    assert _spki(private) == reply["PublicKey"]  # the private key is the public key's pair
    assert private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()) == reply["PrivateKeyPlaintext"]  # PKCS#8 DER
    opened = kms.decrypt(CiphertextBlob=reply["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    assert opened["Plaintext"] == reply["PrivateKeyPlaintext"] and opened["KeyId"] == symmetric["Arn"]
    assert code_of(kms.decrypt, CiphertextBlob=reply["PrivateKeyCiphertextBlob"]) == "InvalidCiphertextException"


@pytest.mark.parametrize("spec", PAIR_SPECS)
def test_generate_data_key_pair_without_plaintext(kms: Any, symmetric: dict[str, Any], spec: str) -> None:
    reply = kms.generate_data_key_pair_without_plaintext(KeyId=symmetric["KeyId"], KeyPairSpec=spec,
                                                         EncryptionContext=CONTEXT)
    assert "PrivateKeyPlaintext" not in reply
    assert (reply["KeyId"], reply["KeyPairSpec"]) == (symmetric["Arn"], spec)
    der = kms.decrypt(CiphertextBlob=reply["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]
    private = serialization.load_der_private_key(der, password=None)
    _check_pair_type(private, spec)
    assert _spki(private) == reply["PublicKey"]


def test_generate_data_key_pairs_are_fresh(kms: Any, symmetric: dict[str, Any]) -> None:
    pairs = {kms.generate_data_key_pair(KeyId=symmetric["KeyId"], KeyPairSpec="ECC_NIST_P256")["PublicKey"]
             for _ in range(3)}
    assert len(pairs) == 3


@pytest.mark.parametrize("spec", ["SM2", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"])
def test_generate_data_key_pair_specs_keyhive_does_not_implement(kms: Any, symmetric: dict[str, Any],
                                                                 spec: str) -> None:
    for call in (kms.generate_data_key_pair, kms.generate_data_key_pair_without_plaintext):
        assert code_of(call, KeyId=symmetric["KeyId"], KeyPairSpec=spec) == "UnsupportedOperationException"


@pytest.mark.parametrize(("spec", "usage"), [("RSA_2048", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC"),
                                             ("ECC_NIST_P256", "SIGN_VERIFY")])
def test_generate_data_key_pair_needs_a_symmetric_encryption_key(kms: Any, key_for: Callable, spec: str,
                                                                 usage: str) -> None:
    key = key_for(spec, usage)
    for call in (kms.generate_data_key_pair, kms.generate_data_key_pair_without_plaintext):
        assert code_of(call, KeyId=key["KeyId"], KeyPairSpec="ECC_NIST_P256") == "InvalidKeyUsageException"
