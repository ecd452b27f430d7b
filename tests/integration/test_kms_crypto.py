"""Cryptographic operations through boto3 against a live ``keyhive server --dev``.

Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext and
GenerateRandom: limits, encryption context, KeyId forms and errors, DryRun, key states
and tampered ciphertexts, as the AWS KMS API reference documents them.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from tests.conftest import REGION, code_of, error_of

ACCOUNT = "111122223333"




@pytest.fixture(scope="module")
def key(kms: Any) -> dict[str, Any]:
    meta = kms.create_key(Description="crypto")["KeyMetadata"]
    kms.create_alias(AliasName="alias/crypto", TargetKeyId=meta["KeyId"])
    return meta


@pytest.fixture(scope="module")
def other_key(kms: Any) -> dict[str, Any]:
    return kms.create_key(Description="other")["KeyMetadata"]


def fresh_key(kms: Any) -> dict[str, Any]:
    return kms.create_key()["KeyMetadata"]


# -- Encrypt / Decrypt ------------------------------------------------------------------
@pytest.mark.parametrize("form", ["key id", "key arn", "alias name", "alias arn"])
def test_encrypt_decrypt_round_trip_every_key_form(kms: Any, key: dict[str, Any], form: str) -> None:
    ref = {
        "key id": key["KeyId"],
        "key arn": key["Arn"],
        "alias name": "alias/crypto",
        "alias arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/crypto",
    }[form]
    encrypted = kms.encrypt(KeyId=ref, Plaintext=b"attack at dawn")
    assert encrypted["KeyId"] == key["Arn"]
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert b"attack at dawn" not in encrypted["CiphertextBlob"]
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"])  # no KeyId: symmetric
    assert decrypted["Plaintext"] == b"attack at dawn"
    assert decrypted["KeyId"] == key["Arn"]
    assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], KeyId=ref)["Plaintext"] == b"attack at dawn"


def test_encrypt_is_randomized(kms: Any, key: dict[str, Any]) -> None:
    a = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    b = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    assert a != b


def test_plaintext_limit_4096_bytes(kms: Any, key: dict[str, Any]) -> None:
    data = bytes(range(256)) * 16
    assert len(data) == 4096
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=data)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data
    code, status, message = error_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=data + b"x")
    assert (code, status) == ("ValidationException", 400)
    assert "plaintext" in message and "4096" in message
    assert data.hex()[:32] not in message  # the plaintext is never echoed


def test_empty_plaintext_refused(kms: Any, key: dict[str, Any]) -> None:
    assert code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"") == "ValidationException"


def test_encrypt_missing_key(kms: Any) -> None:
    assert code_of(kms.encrypt, KeyId=str(uuid.uuid4()), Plaintext=b"x") == "NotFoundException"
    assert code_of(kms.encrypt, KeyId="alias/nope", Plaintext=b"x") == "NotFoundException"


def test_encryption_context_must_match_exactly(kms: Any, key: dict[str, Any]) -> None:
    context = {"purpose": "test", "tenant": "42"}
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"ctx", EncryptionContext=context)["CiphertextBlob"]
    # same pairs, any order
    reordered = {"tenant": "42", "purpose": "test"}
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"ctx"
    for wrong in [
        None,
        {},
        {"purpose": "test"},
        {**context, "extra": "1"},
        {"purpose": "test", "tenant": "43"},
        {"Purpose": "test", "tenant": "42"},
    ]:
        kwargs = {} if wrong is None else {"EncryptionContext": wrong}
        code, status, _ = error_of(kms.decrypt, CiphertextBlob=blob, **kwargs)
        assert (code, status) == ("InvalidCiphertextException", 400), wrong


def test_encryption_context_is_unambiguous(kms: Any, key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext={"ab": "c"})["CiphertextBlob"]
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "bc"}) == "InvalidCiphertextException"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"ab": "c"})["Plaintext"] == b"p"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext={"a": "b", "c": "d"})["CiphertextBlob"]
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "bc", "": "d"}) == "InvalidCiphertextException"
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "d", "c": "b"}) == "InvalidCiphertextException"


def test_context_without_context_differs(kms: Any, key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"none")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={})["Plaintext"] == b"none"
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "b"}) == "InvalidCiphertextException"


def test_unicode_encryption_context(kms: Any, key: dict[str, Any]) -> None:
    context = {"naïve": "café ☕", "键": "值"}
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"u", EncryptionContext=context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"u"


def test_decrypt_with_wrong_key_id(kms: Any, key: dict[str, Any], other_key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"mine")["CiphertextBlob"]
    code, status, _ = error_of(kms.decrypt, CiphertextBlob=blob, KeyId=other_key["KeyId"])
    assert (code, status) == ("IncorrectKeyException", 400)
    assert code_of(kms.decrypt, CiphertextBlob=blob, KeyId=other_key["Arn"]) == "IncorrectKeyException"
    assert code_of(kms.decrypt, CiphertextBlob=blob, KeyId=str(uuid.uuid4())) == "NotFoundException"


def _flip(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def test_tampered_ciphertext(kms: Any, key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"integrity")["CiphertextBlob"]
    for index in (0, 1, 20, 30, 45, len(blob) // 2, len(blob) - 1):
        code, status, message = error_of(kms.decrypt, CiphertextBlob=_flip(blob, index))
        assert (code, status) == ("InvalidCiphertextException", 400), index
    messages = set()
    for bad in (blob[:-1], blob[:10], b"\x00", b"x" * 100, blob + b"\x00", _flip(blob, len(blob) - 1)):
        code, _, message = error_of(kms.decrypt, CiphertextBlob=bad)
        assert code == "InvalidCiphertextException"
        messages.add(message)
    assert len(messages) == 1  # one opaque failure, no hint which check failed


def test_ciphertext_over_model_limit(kms: Any) -> None:
    assert code_of(kms.decrypt, CiphertextBlob=b"\x01" * 6145) == "ValidationException"


# -- key states -----------------------------------------------------------------------------
def test_disabled_key_refuses_crypto(kms: Any) -> None:
    meta = fresh_key(kms)
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"before")["CiphertextBlob"]
    kms.disable_key(KeyId=meta["KeyId"])
    expected = ("DisabledException", 400, f"{meta['Arn']} is disabled.")
    assert error_of(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == expected
    assert error_of(kms.decrypt, CiphertextBlob=blob) == expected
    assert error_of(kms.decrypt, CiphertextBlob=blob, KeyId=meta["KeyId"]) == expected
    assert error_of(kms.generate_data_key, KeyId=meta["KeyId"], KeySpec="AES_256") == expected
    assert error_of(kms.generate_data_key_without_plaintext, KeyId=meta["KeyId"], NumberOfBytes=16) == expected
    assert error_of(kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=meta["KeyId"]) == expected
    kms.enable_key(KeyId=meta["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"


def test_pending_deletion_key_refuses_crypto(kms: Any) -> None:
    meta = fresh_key(kms)
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"before")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    expected = ("KMSInvalidStateException", 400, f"{meta['Arn']} is pending deletion.")
    assert error_of(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == expected
    assert error_of(kms.decrypt, CiphertextBlob=blob) == expected
    assert error_of(kms.generate_data_key, KeyId=meta["KeyId"], NumberOfBytes=32) == expected
    kms.cancel_key_deletion(KeyId=meta["KeyId"])
    kms.enable_key(KeyId=meta["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"


# -- DryRun -----------------------------------------------------------------------------------
def test_dry_run(kms: Any, key: dict[str, Any], other_key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"dry")["CiphertextBlob"]
    calls: list[tuple[Callable[..., Any], dict[str, Any]]] = [
        (kms.encrypt, {"KeyId": key["KeyId"], "Plaintext": b"dry"}),
        (kms.decrypt, {"CiphertextBlob": blob}),
        (kms.re_encrypt, {"CiphertextBlob": blob, "DestinationKeyId": other_key["KeyId"]}),
        (kms.generate_data_key, {"KeyId": key["KeyId"], "KeySpec": "AES_256"}),
        (kms.generate_data_key_without_plaintext, {"KeyId": key["KeyId"], "KeySpec": "AES_128"}),
    ]
    for call, kwargs in calls:
        code, status, _ = error_of(call, DryRun=True, **kwargs)
        assert (code, status) == ("DryRunOperationException", 412), call
        call(DryRun=False, **kwargs)  # and succeeds for real


def test_dry_run_reports_real_errors_first(kms: Any) -> None:
    meta = fresh_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    assert code_of(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x", DryRun=True) == "DisabledException"
    assert code_of(kms.encrypt, KeyId=str(uuid.uuid4()), Plaintext=b"x", DryRun=True) == "NotFoundException"


# -- ReEncrypt ---------------------------------------------------------------------------------
def test_re_encrypt(kms: Any, key: dict[str, Any], other_key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"move me", EncryptionContext={"a": "1"})["CiphertextBlob"]
    reply = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"a": "1"},
        DestinationKeyId=other_key["KeyId"],
        DestinationEncryptionContext={"b": "2"},
    )
    assert reply["SourceKeyId"] == key["Arn"]
    assert reply["KeyId"] == other_key["Arn"]
    assert reply["SourceEncryptionAlgorithm"] == reply["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    new_blob = reply["CiphertextBlob"]
    decrypted = kms.decrypt(CiphertextBlob=new_blob, EncryptionContext={"b": "2"})
    assert decrypted["Plaintext"] == b"move me" and decrypted["KeyId"] == other_key["Arn"]
    assert code_of(kms.decrypt, CiphertextBlob=new_blob, EncryptionContext={"a": "1"}) == "InvalidCiphertextException"
    # with an explicit, correct SourceKeyId (alias form)
    again = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "1"}, SourceKeyId="alias/crypto",
                           DestinationKeyId=key["Arn"])
    assert kms.decrypt(CiphertextBlob=again["CiphertextBlob"])["Plaintext"] == b"move me"


def test_re_encrypt_errors(kms: Any, key: dict[str, Any], other_key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    assert code_of(kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=other_key["KeyId"]) == "InvalidCiphertextException"
    assert code_of(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                   SourceKeyId=other_key["KeyId"], DestinationKeyId=other_key["KeyId"]) == "IncorrectKeyException"
    assert code_of(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                   DestinationKeyId=str(uuid.uuid4())) == "NotFoundException"
    assert code_of(kms.re_encrypt, CiphertextBlob=_flip(blob, len(blob) - 3), SourceEncryptionContext={"a": "1"},
                   DestinationKeyId=other_key["KeyId"]) == "InvalidCiphertextException"


# -- GenerateDataKey / GenerateDataKeyWithoutPlaintext ----------------------------------------
@pytest.mark.parametrize(("kwargs", "length"), [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16),
                                                ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 1024}, 1024)])
def test_generate_data_key(kms: Any, key: dict[str, Any], kwargs: dict[str, Any], length: int) -> None:
    reply = kms.generate_data_key(KeyId="alias/crypto", EncryptionContext={"k": "v"}, **kwargs)
    assert len(reply["Plaintext"]) == length
    assert reply["KeyId"] == key["Arn"]
    decrypted = kms.decrypt(CiphertextBlob=reply["CiphertextBlob"], EncryptionContext={"k": "v"})
    assert decrypted["Plaintext"] == reply["Plaintext"]
    assert code_of(kms.decrypt, CiphertextBlob=reply["CiphertextBlob"]) == "InvalidCiphertextException"


def test_generate_data_key_is_random(kms: Any, key: dict[str, Any]) -> None:
    keys = {kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")["Plaintext"] for _ in range(5)}
    assert len(keys) == 5


def test_generate_data_key_without_plaintext(kms: Any, key: dict[str, Any]) -> None:
    reply = kms.generate_data_key_without_plaintext(KeyId=key["Arn"], KeySpec="AES_256")
    assert "Plaintext" not in reply
    assert reply["KeyId"] == key["Arn"]
    assert len(kms.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"]) == 32
    reply = kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], NumberOfBytes=64)
    assert len(kms.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"]) == 64


@pytest.mark.parametrize("operation", ["generate_data_key", "generate_data_key_without_plaintext"])
def test_generate_data_key_length_errors(kms: Any, key: dict[str, Any], operation: str) -> None:
    call = getattr(kms, operation)
    # exactly one of NumberOfBytes and KeySpec
    assert code_of(call, KeyId=key["KeyId"]) == "ValidationException"
    assert code_of(call, KeyId=key["KeyId"], NumberOfBytes=32, KeySpec="AES_256") == "ValidationException"
    assert code_of(call, KeyId=key["KeyId"], NumberOfBytes=1025) == "ValidationException"
    assert code_of(call, KeyId=key["KeyId"], KeySpec="AES_512") == "ValidationException"
    assert code_of(call, KeyId=str(uuid.uuid4()), KeySpec="AES_256") == "NotFoundException"


# -- GenerateRandom ------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 32, 1024])
def test_generate_random(kms: Any, length: int) -> None:
    data = kms.generate_random(NumberOfBytes=length)["Plaintext"]
    assert len(data) == length


def test_generate_random_is_random(kms: Any) -> None:
    assert len({kms.generate_random(NumberOfBytes=32)["Plaintext"] for _ in range(5)}) == 5


def test_generate_random_limits(kms: Any) -> None:
    code, status, message = error_of(kms.generate_random, NumberOfBytes=1025)
    assert (code, status) == ("ValidationException", 400)
    assert "numberOfBytes" in message
    assert code_of(kms.generate_random) == "ValidationException"


def test_generate_random_in_a_custom_key_store_that_does_not_exist(kms: Any) -> None:
    code = code_of(kms.generate_random, NumberOfBytes=8, CustomKeyStoreId="cks-1234567890abcdef0")
    assert code == "CustomKeyStoreNotFoundException"
    assert code_of(kms.create_key, CustomKeyStoreId="cks-1234567890abcdef0") == "CustomKeyStoreNotFoundException"



def test_encryption_algorithm_must_suit_the_key(kms: Any, key: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="SYMMETRIC_DEFAULT")["CiphertextBlob"]
    code = code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert code == "InvalidKeyUsageException"
    assert code_of(kms.decrypt, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1") == "InvalidKeyUsageException"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionAlgorithm="SYMMETRIC_DEFAULT")["Plaintext"] == b"x"


def test_decrypt_needs_a_ciphertext(kms: Any, key: dict[str, Any]) -> None:
    # The model leaves CiphertextBlob optional (so boto3 sends the request); the docs require it
    # "in all cases except when DryRun is true and DryRunModifiers is set to IGNORE_CIPHERTEXT".
    code, _, message = error_of(kms.decrypt, KeyId=key["KeyId"])
    assert code == "ValidationException" and "ciphertextBlob" in message
    assert code_of(kms.re_encrypt, DestinationKeyId=key["KeyId"]) == "ValidationException"
    assert code_of(kms.decrypt, KeyId=key["KeyId"], DryRun=True) == "ValidationException"


def test_dry_run_ignoring_ciphertext(kms: Any, key: dict[str, Any], other_key: dict[str, Any]) -> None:
    code, status, _ = error_of(kms.decrypt, KeyId=key["KeyId"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])
    assert (code, status) == ("DryRunOperationException", 412)
    code = code_of(kms.re_encrypt, SourceKeyId=key["KeyId"], DestinationKeyId=other_key["KeyId"], DryRun=True,
                   DryRunModifiers=["IGNORE_CIPHERTEXT"])
    assert code == "DryRunOperationException"
    assert code_of(kms.decrypt, KeyId=str(uuid.uuid4()), DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"]) == "NotFoundException"
    meta = fresh_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    assert code_of(kms.decrypt, KeyId=meta["KeyId"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"]) == "DisabledException"
