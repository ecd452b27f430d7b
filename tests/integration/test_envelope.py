"""keyhive.envelope against a running dev server and the real AWS Encryption SDK.

Round trips (streams of several GiB: test_envelope_format.py), several keys,
interoperability with the SDK used directly, tampering, truncation, reordering, wrong
context and wrong key, and the data key cache's limits counted in the audit trail.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from typing import Any

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header, deserialize_header_auth

from keyhive.envelope import FRAME_LENGTH, CacheLimits, Envelope, EnvelopeError
from tests.conftest import REGION, RunningServer

MiB = 1 << 20
COMMITTING_SIGNED = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384


pytestmark = pytest.mark.usefixtures("dev_aws_environment")


@pytest.fixture
def key(kms) -> str:  # type: ignore[no-untyped-def]
    return str(kms.create_key(Description="envelope")["KeyMetadata"]["Arn"])


@pytest.fixture
def box(dev_server: RunningServer, key: str) -> Envelope:
    return Envelope([key], endpoint_url=dev_server.endpoint)


def generate_data_key_calls(server: RunningServer, key_arn: str, event: str = "GenerateDataKey") -> int:
    """How many ``event`` calls on ``key_arn`` the server's audit trail recorded."""
    result = subprocess.run(
        [sys.executable, "-m", "keyhive.cli.main", "audit", "events", "--endpoint", server.endpoint,
         "--event-name", event, "--key", key_arn, "--max-items", "1000", "--json"],
        capture_output=True, text=True, timeout=60, check=True)
    return sum(1 for line in result.stdout.splitlines() if json.loads(line)["eventName"] == event)


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, MiB])
def test_round_trip(box: Envelope, size: int) -> None:
    data = os.urandom(size)
    context = {"tenant": "t-7", "purpose": "round trip"}
    message = box.encrypt(data, context)
    if size >= 4096:
        assert data[:4096] not in message
    plaintext, found = box.decrypt(message, expected_context=context)
    assert plaintext == data
    assert found == context  # the SDK's own aws-crypto-public-key is not the caller's


def test_messages_are_aws_encryption_sdk_v2_with_key_commitment(box: Envelope, key: str) -> None:
    message = box.encrypt(b"x" * 200_000, {"a": "b"})
    stream = io.BytesIO(message)
    header, _ = deserialize_header(stream)
    assert message[0] == 2  # message format version 2
    assert header.algorithm is COMMITTING_SIGNED
    assert header.frame_length == FRAME_LENGTH
    (edk,) = header.encrypted_data_keys
    assert edk.key_provider.provider_id == "aws-kms" and edk.key_provider.key_info.decode() == key
    assert set(header.encryption_context) == {"a", "aws-crypto-public-key"}


# -- several keys ------------------------------------------------------------------------------
def test_any_one_of_several_keys_decrypts(dev_server: RunningServer, kms) -> None:  # type: ignore[no-untyped-def]
    first, second, other = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(3))
    message = Envelope([first, second], endpoint_url=dev_server.endpoint).encrypt(b"for either", {"k": "v"})
    header, _ = deserialize_header(io.BytesIO(message))
    assert {edk.key_provider.key_info.decode() for edk in header.encrypted_data_keys} == {first, second}

    reader = Envelope(endpoint_url=dev_server.endpoint)
    assert reader.decrypt(message, allowed_key_ids=[first])[0] == b"for either"
    assert reader.decrypt(message, allowed_key_ids=[second])[0] == b"for either"
    with pytest.raises(EnvelopeError, match="no allowed KMS key"):
        reader.decrypt(message, allowed_key_ids=[other])

    # With the first key disabled, the second alone still opens it.
    kms.disable_key(KeyId=first)
    with pytest.raises(EnvelopeError, match="no allowed KMS key"):
        Envelope(endpoint_url=dev_server.endpoint).decrypt(message, allowed_key_ids=[first])
    assert Envelope([second], endpoint_url=dev_server.endpoint).decrypt(message)[0] == b"for either"


def test_decrypt_defaults_to_the_envelopes_own_keys(dev_server: RunningServer, kms, key: str) -> None:  # type: ignore[no-untyped-def]
    message = Envelope([key], endpoint_url=dev_server.endpoint).encrypt(b"mine")
    other = kms.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(EnvelopeError, match="no allowed KMS key"):
        Envelope([other], endpoint_url=dev_server.endpoint).decrypt(message)
    # An Envelope without keys decrypts with whichever key the message names (discovery).
    assert Envelope(endpoint_url=dev_server.endpoint).decrypt(message)[0] == b"mine"
    with pytest.raises(EnvelopeError, match="empty"):
        Envelope(endpoint_url=dev_server.endpoint).decrypt(message, allowed_key_ids=[])


def test_keys_named_by_alias_or_id(dev_server: RunningServer, kms, key: str) -> None:  # type: ignore[no-untyped-def]
    alias = f"alias/envelope-{os.urandom(4).hex()}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    box = Envelope([alias], endpoint_url=dev_server.endpoint)
    message = box.encrypt(b"by alias")
    header, _ = deserialize_header(io.BytesIO(message))
    assert header.encrypted_data_keys.pop().key_provider.key_info.decode() == key  # stored as the key's ARN
    assert box.decrypt(message)[0] == b"by alias"  # the alias is resolved to its key's ARN
    key_id = key.rsplit("/", 1)[1]
    assert Envelope(endpoint_url=dev_server.endpoint).decrypt(message, allowed_key_ids=[key_id])[0] == b"by alias"


# -- the AWS Encryption SDK, used directly -----------------------------------------------------------
@pytest.fixture
def sdk_provider(dev_server: RunningServer, key: str, monkeypatch: pytest.MonkeyPatch) -> StrictAwsKmsMasterKeyProvider:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", dev_server.endpoint)  # how a plain SDK user points at Keyhive
    session = botocore.session.Session()
    return StrictAwsKmsMasterKeyProvider(key_ids=[key], botocore_session=session)


def sdk_client(policy: CommitmentPolicy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT) -> Any:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)


def test_the_sdk_decrypts_what_keyhive_writes(box: Envelope, sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    data = os.urandom(300_000)
    message = box.encrypt(data, {"direction": "keyhive to sdk"})
    plaintext, header = sdk_client().decrypt(source=message, key_provider=sdk_provider)
    assert plaintext == data
    assert header.encryption_context["direction"] == "keyhive to sdk"


def test_keyhive_decrypts_what_the_sdk_writes(box: Envelope, sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    data = os.urandom(300_000)
    message, header = sdk_client().encrypt(source=data, key_provider=sdk_provider,
                                           encryption_context={"direction": "sdk to keyhive"})
    assert header.frame_length == 4096  # the SDK's default, not ours
    plaintext, context = box.decrypt(message, expected_context={"direction": "sdk to keyhive"})
    assert plaintext == data and context == {"direction": "sdk to keyhive"}
    # and through a stream, in pieces
    out = io.BytesIO()
    assert box.decrypt_stream(io.BytesIO(message), out) == context
    assert out.getvalue() == data


def test_messages_without_key_commitment_are_refused(box: Envelope,
                                                     sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    legacy, _ = sdk_client(CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT).encrypt(
        source=b"old format", key_provider=sdk_provider,
        algorithm=Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384)
    with pytest.raises(EnvelopeError, match="commit"):
        box.decrypt(legacy)


def test_frames_larger_than_the_limit_are_refused_before_reading_them(
        box: Envelope, sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    huge, _ = sdk_client().encrypt(source=b"x" * 100, key_provider=sdk_provider, frame_length=64 * MiB)
    with pytest.raises(EnvelopeError, match="limits"):
        box.decrypt(huge)


def test_messages_with_too_many_data_keys_are_refused(dev_server: RunningServer, kms, box: Envelope,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [kms.create_key()["KeyMetadata"]["Arn"] for _ in range(17)]
    with pytest.raises(EnvelopeError, match="at most 16"):
        Envelope(keys, endpoint_url=dev_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", dev_server.endpoint)
    many = StrictAwsKmsMasterKeyProvider(key_ids=keys, botocore_session=botocore.session.Session())
    message, _ = sdk_client().encrypt(source=b"x", key_provider=many)
    # refused while reading the header: no KMS call is made for any of the 17
    with pytest.raises(EnvelopeError, match="limits"):
        Envelope(endpoint_url=dev_server.endpoint).decrypt(message)
    assert generate_data_key_calls(dev_server, keys[-1], "Decrypt") == 0


# -- attacks ---------------------------------------------------------------------------------------
def layout(message: bytes) -> tuple[int, int]:
    """(where the body starts, where the footer starts) of a framed, signed message."""
    stream = io.BytesIO(message)
    header, _ = deserialize_header(stream)
    deserialize_header_auth(version=header.version, stream=stream, algorithm=header.algorithm)
    # The SDK pads every ECDSA signature to the suite's fixed length (103 bytes for P-384).
    footer = len(message) - 2 - header.algorithm.signature_len
    assert struct.unpack(">H", message[footer: footer + 2])[0] == header.algorithm.signature_len
    return stream.tell(), footer


def flipped(message: bytes, position: int) -> bytes:
    bad = bytearray(message)
    bad[position] ^= 0x01
    return bytes(bad)


@pytest.fixture
def three_frames(box: Envelope) -> tuple[bytes, bytes]:
    data = os.urandom(3 * FRAME_LENGTH + 100)
    return data, box.encrypt(data, {"tamper": "test"})


def test_any_flipped_bit_is_refused(box: Envelope, three_frames: tuple[bytes, bytes]) -> None:
    data, message = three_frames
    body, footer = layout(message)
    header, _ = deserialize_header(io.BytesIO(message))
    edk_at = message.index(header.encrypted_data_keys.pop().encrypted_data_key)
    context_at = message.index(b"tamper")
    positions = {
        "version": 0, "algorithm id": 2, "message id": 10, "context": context_at, "data key": edk_at + 40,
        "frame length": body - 33 - 4, "commitment / header tag": body - 1,
        "first frame's sequence number": body + 3, "first frame's iv": body + 6,
        "first frame's ciphertext": body + 100, "first frame's tag": body + 16 + FRAME_LENGTH + 10,
        "final frame": footer - 50, "footer length": footer, "signature": len(message) - 1,
    }
    for where, position in positions.items():
        with pytest.raises(EnvelopeError) as info:
            box.decrypt(flipped(message, position))
        assert data[:16].hex() not in str(info.value), where


def test_truncation_is_refused_anywhere(box: Envelope, three_frames: tuple[bytes, bytes]) -> None:
    _, message = three_frames
    body, footer = layout(message)
    for end in (0, 1, 20, body - 1, body, body + 4000, body + FRAME_LENGTH + 32,  # whole frames only
                footer - 1, footer, footer + 1, len(message) - 1):
        with pytest.raises(EnvelopeError, match="corrupt"):
            box.decrypt(message[:end])


def test_reordered_dropped_or_repeated_frames_are_refused(box: Envelope, three_frames: tuple[bytes, bytes]) -> None:
    _, message = three_frames
    body, _ = layout(message)
    size = 4 + 12 + FRAME_LENGTH + 16  # sequence number, IV, ciphertext, tag
    head, frames, rest = message[:body], [message[body + i * size: body + (i + 1) * size] for i in range(3)], \
        message[body + 3 * size:]
    assert [struct.unpack(">I", f[:4])[0] for f in frames] == [1, 2, 3]
    for order in ([1, 0, 2], [0, 2, 1], [0, 2], [0, 1, 1, 2], [0, 0, 1, 2]):
        with pytest.raises(EnvelopeError, match="corrupt"):
            box.decrypt(head + b"".join(frames[i] for i in order) + rest)


def test_appended_bytes_are_refused(box: Envelope) -> None:
    message = box.encrypt(b"one message")
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(message + b"\x00")
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(message + message)


def test_wrong_or_missing_context_is_refused_without_showing_values(box: Envelope) -> None:
    message = box.encrypt(b"bound", {"tenant": "t-7", "purpose": "billing"})
    with pytest.raises(EnvelopeError, match="'tenant' differs") as info:
        box.decrypt(message, expected_context={"tenant": "t-8"})
    assert "t-7" not in str(info.value) and "t-8" not in str(info.value)
    with pytest.raises(EnvelopeError, match="has no 'region'"):
        box.decrypt(message, expected_context={"tenant": "t-7", "region": "eu"})
    # a subset of the message's context is enough; the SDK's own entry is no concern of the caller
    assert box.decrypt(message, expected_context={"purpose": "billing"})[0] == b"bound"
    with pytest.raises(EnvelopeError, match="reserved"):
        box.encrypt(b"x", {"aws-crypto-public-key": "mine"})


def test_nothing_is_written_before_the_context_is_checked(box: Envelope) -> None:
    message = box.encrypt(os.urandom(3 * FRAME_LENGTH), {"tenant": "t-7"})
    out = io.BytesIO()
    with pytest.raises(EnvelopeError):
        box.decrypt_stream(io.BytesIO(message), out, expected_context={"tenant": "t-8"})
    assert out.getvalue() == b""


def test_errors_name_the_problem_not_the_secret(dev_server: RunningServer, key: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EnvelopeError, match="cannot reach KMS"):
        Envelope([key], endpoint_url="http://127.0.0.1:9").encrypt(b"x")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(EnvelopeError, match="no AWS credentials"):
        Envelope([key], endpoint_url=dev_server.endpoint).encrypt(b"x")
    with pytest.raises(EnvelopeError, match="no KMS key"):
        Envelope(endpoint_url=dev_server.endpoint).encrypt(b"x")
    with pytest.raises(EnvelopeError, match="not both"):
        Envelope([key], endpoint_url=dev_server.endpoint, botocore_session=botocore.session.Session())


def test_region_and_a_callers_own_session(dev_server: RunningServer, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    key_id = key.rsplit("/", 1)[1]
    with pytest.raises(EnvelopeError, match="region"):
        Envelope([key_id], endpoint_url=dev_server.endpoint).encrypt(b"x")
    box = Envelope([key_id], endpoint_url=dev_server.endpoint, region=REGION)
    message = box.encrypt(b"regional")
    assert box.decrypt(message)[0] == b"regional"
    # A session of the caller's, pointed at Keyhive by its own configuration, and left unchanged.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", dev_server.endpoint)
    session = botocore.session.Session()
    assert Envelope([key], botocore_session=session, region=REGION).decrypt(message)[0] == b"regional"
    assert session.get_config_variable("region") is None


def test_the_endpoint_does_not_leak_into_other_clients(dev_server: RunningServer, key: str) -> None:
    Envelope([key], endpoint_url=dev_server.endpoint).encrypt(b"x")
    assert "AWS_ENDPOINT_URL_KMS" not in os.environ
    plain = botocore.session.Session().create_client("kms", region_name=REGION)
    assert plain.meta.endpoint_url == f"https://kms.{REGION}.amazonaws.com"


# -- the data key cache ----------------------------------------------------------------------------
def test_without_a_cache_every_message_gets_its_own_data_key(dev_server: RunningServer, box: Envelope,
                                                             key: str) -> None:
    for _ in range(5):
        box.encrypt(b"small")
    assert generate_data_key_calls(dev_server, key) == 5


def test_the_cache_reuses_a_data_key_for_max_messages(dev_server: RunningServer, key: str) -> None:
    box = Envelope([key], endpoint_url=dev_server.endpoint,
                   cache=CacheLimits(max_age_seconds=300, max_messages_encrypted=10))
    messages = [box.encrypt(f"message {i}".encode(), {"batch": "1"}) for i in range(100)]
    assert generate_data_key_calls(dev_server, key) == 10
    data_keys = {deserialize_header(io.BytesIO(m))[0].encrypted_data_keys.pop().encrypted_data_key for m in messages}
    assert len(data_keys) == 10
    # decryption materials are cached too: one Decrypt call per distinct data key
    assert [box.decrypt(m)[0] for m in messages] == [f"message {i}".encode() for i in range(100)]
    assert generate_data_key_calls(dev_server, key, "Decrypt") == 10


def test_the_cache_honours_max_bytes(dev_server: RunningServer, key: str) -> None:
    box = Envelope([key], endpoint_url=dev_server.endpoint,
                   cache=CacheLimits(max_age_seconds=300, max_bytes_encrypted=10_000))
    for _ in range(20):
        box.encrypt(b"x" * 1000)  # ten messages fit under one data key
    assert generate_data_key_calls(dev_server, key) == 2
    box.encrypt(b"y" * 10_000)  # a message as large as the limit is never served from the cache
    assert generate_data_key_calls(dev_server, key) == 3


def test_the_cache_honours_max_age(dev_server: RunningServer, key: str) -> None:
    box = Envelope([key], endpoint_url=dev_server.endpoint, cache=CacheLimits(max_age_seconds=0.3))
    for _ in range(3):
        box.encrypt(b"a")
        box.encrypt(b"b")
        time.sleep(0.4)
    assert generate_data_key_calls(dev_server, key) == 3


def test_the_cache_keeps_contexts_apart(dev_server: RunningServer, key: str) -> None:
    box = Envelope([key], endpoint_url=dev_server.endpoint, cache=CacheLimits(max_age_seconds=300))
    for tenant in ("a", "b", "a", "b"):
        box.encrypt(b"x", {"tenant": tenant})
    assert generate_data_key_calls(dev_server, key) == 2


def test_cache_limits_are_checked() -> None:
    for bad in ({"max_age_seconds": 0}, {"max_age_seconds": 1, "max_messages_encrypted": 0},
                {"max_age_seconds": 1, "capacity": 0}, {"max_age_seconds": 1, "max_bytes_encrypted": -1}):
        with pytest.raises(ValueError):
            CacheLimits(**bad)

