"""HMAC keys (GenerateMac, VerifyMac) and key agreement (DeriveSharedSecret) through boto3
against a live ``keyhive server --dev``.

Shared secrets are checked against the one the peer computes locally with ``cryptography``
from the public key GetPublicKey returns, so a Keyhive that only agrees with itself fails.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.conftest import code_of

HMAC_SPECS = {"HMAC_224": 28, "HMAC_256": 32, "HMAC_384": 48, "HMAC_512": 64}  # spec -> MAC length in bytes
CURVES = {"ECC_NIST_P256": (ec.SECP256R1, 32), "ECC_NIST_P384": (ec.SECP384R1, 48),
          "ECC_NIST_P521": (ec.SECP521R1, 66)}  # spec -> (curve, shared secret length)
MESSAGE = b"GET /v1/orders?since=2024-01-01"


def _algorithm(spec: str) -> str:
    return "HMAC_SHA_" + spec.split("_")[1]


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def key_for(kms: Any) -> Callable[[str, str], dict[str, Any]]:
    made: dict[tuple[str, str], dict[str, Any]] = {}

    def get(spec: str, usage: str) -> dict[str, Any]:
        if (spec, usage) not in made:
            made[(spec, usage)] = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        return made[(spec, usage)]

    return get


# -- GenerateMac / VerifyMac --------------------------------------------------------------
@pytest.mark.parametrize("spec", list(HMAC_SPECS))
def test_generate_and_verify_mac(kms: Any, key_for: Callable, spec: str) -> None:
    key = key_for(spec, "GENERATE_VERIFY_MAC")
    algorithm = _algorithm(spec)
    reply = kms.generate_mac(KeyId=key["KeyId"], Message=MESSAGE, MacAlgorithm=algorithm)
    assert (reply["KeyId"], reply["MacAlgorithm"]) == (key["Arn"], algorithm)
    mac = reply["Mac"]
    assert len(mac) == HMAC_SPECS[spec]
    assert kms.generate_mac(KeyId=key["KeyId"], Message=MESSAGE, MacAlgorithm=algorithm)["Mac"] == mac  # deterministic
    assert kms.generate_mac(KeyId=key["KeyId"], Message=MESSAGE + b"!", MacAlgorithm=algorithm)["Mac"] != mac
    verified = kms.verify_mac(KeyId=key["KeyId"], Message=MESSAGE, Mac=mac, MacAlgorithm=algorithm)
    assert verified == {**verified, "KeyId": key["Arn"], "MacValid": True, "MacAlgorithm": algorithm}
    # The largest message the model allows.
    big = kms.generate_mac(KeyId=key["KeyId"], Message=b"m" * 4096, MacAlgorithm=algorithm)["Mac"]
    assert kms.verify_mac(KeyId=key["KeyId"], Message=b"m" * 4096, Mac=big, MacAlgorithm=algorithm)["MacValid"]


@pytest.mark.parametrize("spec", list(HMAC_SPECS))
def test_verify_mac_with_a_wrong_mac_is_an_error(kms: Any, key_for: Callable, spec: str) -> None:
    key = key_for(spec, "GENERATE_VERIFY_MAC")
    algorithm = _algorithm(spec)
    mac = kms.generate_mac(KeyId=key["KeyId"], Message=MESSAGE, MacAlgorithm=algorithm)["Mac"]
    flipped = bytes([mac[0] ^ 0x80]) + mac[1:]
    for message, bad in ((MESSAGE, flipped), (MESSAGE, mac[:-1]), (MESSAGE, mac + b"\0"), (MESSAGE + b"!", mac)):
        assert code_of(kms.verify_mac, KeyId=key["KeyId"], Message=message, Mac=bad,
                       MacAlgorithm=algorithm) == "KMSInvalidMacException"


def test_macs_of_different_keys_differ(kms: Any, key_for: Callable) -> None:
    a = key_for("HMAC_256", "GENERATE_VERIFY_MAC")
    b = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    mac = kms.generate_mac(KeyId=a["KeyId"], Message=MESSAGE, MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.generate_mac(KeyId=b["KeyId"], Message=MESSAGE, MacAlgorithm="HMAC_SHA_256")["Mac"] != mac
    assert code_of(kms.verify_mac, KeyId=b["KeyId"], Message=MESSAGE, Mac=mac,
                   MacAlgorithm="HMAC_SHA_256") == "KMSInvalidMacException"


@pytest.mark.parametrize("spec", list(HMAC_SPECS))
def test_mac_algorithm_of_another_spec(kms: Any, key_for: Callable, spec: str) -> None:
    key = key_for(spec, "GENERATE_VERIFY_MAC")
    for other in HMAC_SPECS:
        if other == spec:
            continue
        assert code_of(kms.generate_mac, KeyId=key["KeyId"], Message=MESSAGE,
                       MacAlgorithm=_algorithm(other)) == "InvalidKeyUsageException"
        assert code_of(kms.verify_mac, KeyId=key["KeyId"], Message=MESSAGE, Mac=b"m" * HMAC_SPECS[other],
                       MacAlgorithm=_algorithm(other)) == "InvalidKeyUsageException"


@pytest.mark.parametrize(("spec", "usage"), [("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
                                             ("ECC_NIST_P256", "SIGN_VERIFY"), ("RSA_2048", "ENCRYPT_DECRYPT")])
def test_mac_with_a_key_of_another_usage(kms: Any, key_for: Callable, spec: str, usage: str) -> None:
    key = key_for(spec, usage)
    assert code_of(kms.generate_mac, KeyId=key["KeyId"], Message=MESSAGE,
                   MacAlgorithm="HMAC_SHA_256") == "InvalidKeyUsageException"
    assert code_of(kms.verify_mac, KeyId=key["KeyId"], Message=MESSAGE, Mac=b"m" * 32,
                   MacAlgorithm="HMAC_SHA_256") == "InvalidKeyUsageException"


def test_hmac_key_refuses_other_operations(kms: Any, key_for: Callable) -> None:
    key = key_for("HMAC_256", "GENERATE_VERIFY_MAC")
    assert code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p") == "InvalidKeyUsageException"
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=MESSAGE,
                   SigningAlgorithm="ECDSA_SHA_256") == "InvalidKeyUsageException"
    assert code_of(kms.get_public_key, KeyId=key["KeyId"]) == "UnsupportedOperationException"


def test_mac_message_longer_than_4096_bytes(kms: Any, key_for: Callable) -> None:
    key = key_for("HMAC_256", "GENERATE_VERIFY_MAC")
    assert code_of(kms.generate_mac, KeyId=key["KeyId"], Message=b"m" * 4097,
                   MacAlgorithm="HMAC_SHA_256") == "ValidationException"


# -- DeriveSharedSecret -------------------------------------------------------------------
@pytest.mark.parametrize("spec", list(CURVES))
def test_shared_secret_equals_the_peers(kms: Any, key_for: Callable, spec: str) -> None:
    key = key_for(spec, "KEY_AGREEMENT")
    curve, length = CURVES[spec]
    kms_public = serialization.load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    peer = ec.generate_private_key(curve())
    reply = kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH",
                                     PublicKey=_spki(peer.public_key()))
    assert (reply["KeyId"], reply["KeyAgreementAlgorithm"], reply["KeyOrigin"]) == (key["Arn"], "ECDH", "AWS_KMS")
    assert len(reply["SharedSecret"]) == length
    assert reply["SharedSecret"] == peer.exchange(ec.ECDH(), kms_public)
    other_peer = ec.generate_private_key(curve())
    assert kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH",
                                    PublicKey=_spki(other_peer.public_key()))["SharedSecret"] != reply["SharedSecret"]


def test_two_kms_keys_agree(kms: Any, key_for: Callable) -> None:
    alice = key_for("ECC_NIST_P384", "KEY_AGREEMENT")
    bob = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    alice_public = kms.get_public_key(KeyId=alice["KeyId"])["PublicKey"]
    bob_public = kms.get_public_key(KeyId=bob["KeyId"])["PublicKey"]
    assert kms.derive_shared_secret(KeyId=alice["KeyId"], KeyAgreementAlgorithm="ECDH",
                                    PublicKey=bob_public)["SharedSecret"] == \
        kms.derive_shared_secret(KeyId=bob["KeyId"], KeyAgreementAlgorithm="ECDH",
                                 PublicKey=alice_public)["SharedSecret"]


def _peer_keys() -> dict[str, bytes]:
    p384 = _spki(ec.generate_private_key(ec.SECP384R1()).public_key())
    return {
        "wrong curve": p384,
        "secp256k1": _spki(ec.generate_private_key(ec.SECP256K1()).public_key()),
        "ed25519": _spki(ed25519.Ed25519PrivateKey.generate().public_key()),
        "garbage": b"\x30\x82\x01\x0a" + b"\x01" * 60,
        "truncated": p384[:-10],
        "raw point": ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
    }


@pytest.mark.parametrize("peer", list(_peer_keys()))
def test_unusable_peer_public_key(kms: Any, key_for: Callable, peer: str) -> None:
    key = key_for("ECC_NIST_P256", "KEY_AGREEMENT")
    assert code_of(kms.derive_shared_secret, KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH",
                   PublicKey=_peer_keys()[peer]) == "ValidationException"


def test_rsa_peer_public_key(kms: Any, key_for: Callable) -> None:
    key = key_for("ECC_NIST_P521", "KEY_AGREEMENT")
    rsa_public = kms.get_public_key(KeyId=key_for("RSA_2048", "ENCRYPT_DECRYPT")["KeyId"])["PublicKey"]
    assert code_of(kms.derive_shared_secret, KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH",
                   PublicKey=rsa_public) == "ValidationException"


@pytest.mark.parametrize(("spec", "usage"), [("ECC_NIST_P256", "SIGN_VERIFY"), ("ECC_SECG_P256K1", "SIGN_VERIFY"),
                                             ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
                                             ("HMAC_256", "GENERATE_VERIFY_MAC")])
def test_derive_shared_secret_with_a_key_of_another_usage(kms: Any, key_for: Callable, spec: str,
                                                          usage: str) -> None:
    key = key_for(spec, usage)
    peer = _spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert code_of(kms.derive_shared_secret, KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH",
                   PublicKey=peer) == "InvalidKeyUsageException"


def test_key_agreement_key_refuses_signing(kms: Any, key_for: Callable) -> None:
    key = key_for("ECC_NIST_P256", "KEY_AGREEMENT")
    assert code_of(kms.sign, KeyId=key["KeyId"], Message=MESSAGE,
                   SigningAlgorithm="ECDSA_SHA_256") == "InvalidKeyUsageException"
