"""What each KMS key spec is for: usages and algorithms, as AWS documents them. Pure.

Sources: KMS developer guide, "Key spec reference" (symmetric, RSA, ECC, ML-DSA, HMAC,
SM2) and the CreateKey API reference.  Keyhive supports every spec the installed
``cryptography`` implements; SM2 (China Regions only on AWS) and ML-KEM are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
KEY_AGREEMENT = "KEY_AGREEMENT"

# In the order AWS lists them in KeyMetadata (DescribeKey example in the model).
RSA_SIGNING = ("RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
               "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512")
RSA_ENCRYPTION = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")
# No library here implements SM2; ML-KEM keys need Encapsulate/Decapsulate, which Keyhive lacks.
UNSUPPORTED_SPECS = frozenset({"SM2", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"})


@dataclass(frozen=True)
class KeySpec:
    name: str
    usages: dict[str, tuple[str, ...]]  # key usage -> the algorithms of that usage
    rsa_bits: int = 0
    curve: str = ""
    hmac_bytes: int = 0  # HMAC key length
    pair_for_data_keys: bool = False  # valid as GenerateDataKeyPair's KeyPairSpec

    @property
    def symmetric(self) -> bool:
        return self.name == "SYMMETRIC_DEFAULT"

    def algorithms(self, usage: str) -> tuple[str, ...]:
        return self.usages.get(usage, ())


def _rsa(bits: int) -> KeySpec:
    return KeySpec(f"RSA_{bits}", {ENCRYPT_DECRYPT: RSA_ENCRYPTION, SIGN_VERIFY: RSA_SIGNING}, rsa_bits=bits,
                   pair_for_data_keys=True)


def _ec(name: str, curve: str, signing: str, agreement: bool) -> KeySpec:
    usages = {SIGN_VERIFY: (signing,)}
    if agreement:
        usages[KEY_AGREEMENT] = ("ECDH",)
    return KeySpec(name, usages, curve=curve, pair_for_data_keys=True)


def _hmac(bits: int) -> KeySpec:
    return KeySpec(f"HMAC_{bits}", {GENERATE_VERIFY_MAC: (f"HMAC_SHA_{bits}",)}, hmac_bytes=bits // 8)


SPECS: dict[str, KeySpec] = {
    spec.name: spec
    for spec in (
        KeySpec("SYMMETRIC_DEFAULT", {ENCRYPT_DECRYPT: ("SYMMETRIC_DEFAULT",)}),
        _rsa(2048), _rsa(3072), _rsa(4096),
        _ec("ECC_NIST_P256", "secp256r1", "ECDSA_SHA_256", agreement=True),
        _ec("ECC_NIST_P384", "secp384r1", "ECDSA_SHA_384", agreement=True),
        _ec("ECC_NIST_P521", "secp521r1", "ECDSA_SHA_512", agreement=True),
        _ec("ECC_SECG_P256K1", "secp256k1", "ECDSA_SHA_256", agreement=False),
        KeySpec("ECC_NIST_EDWARDS25519", {SIGN_VERIFY: ("ED25519_SHA_512", "ED25519_PH_SHA_512")}, curve="ed25519",
                pair_for_data_keys=True),
        KeySpec("ML_DSA_44", {SIGN_VERIFY: ("ML_DSA_SHAKE_256",)}),
        KeySpec("ML_DSA_65", {SIGN_VERIFY: ("ML_DSA_SHAKE_256",)}),
        KeySpec("ML_DSA_87", {SIGN_VERIFY: ("ML_DSA_SHAKE_256",)}),
        _hmac(224), _hmac(256), _hmac(384), _hmac(512),
    )
}

# Encrypt with RSAES_OAEP: the largest plaintext per key size and hash (KMS Encrypt reference).
RSA_OAEP_MAX_PLAINTEXT = {
    (2048, "RSAES_OAEP_SHA_1"): 214, (2048, "RSAES_OAEP_SHA_256"): 190,
    (3072, "RSAES_OAEP_SHA_1"): 342, (3072, "RSAES_OAEP_SHA_256"): 318,
    (4096, "RSAES_OAEP_SHA_1"): 470, (4096, "RSAES_OAEP_SHA_256"): 446,
}

# Sign with MessageType DIGEST: the digest length each algorithm expects (Sign reference).
DIGEST_BYTES = {
    "RSASSA_PSS_SHA_256": 32, "RSASSA_PSS_SHA_384": 48, "RSASSA_PSS_SHA_512": 64,
    "RSASSA_PKCS1_V1_5_SHA_256": 32, "RSASSA_PKCS1_V1_5_SHA_384": 48, "RSASSA_PKCS1_V1_5_SHA_512": 64,
    "ECDSA_SHA_256": 32, "ECDSA_SHA_384": 48, "ECDSA_SHA_512": 64,
    "ED25519_PH_SHA_512": 64,
    "ML_DSA_SHAKE_256": 64,  # EXTERNAL_MU: the 64-byte mu
}
# Sign: "the message must be 4096 bytes or less" for RAW.
MAX_SIGN_MESSAGE_BYTES = 4096
# GenerateMac / VerifyMac: Message 1..4096 bytes (model).

