"""Keyhive's own implementation of the AWS Encryption SDK message format, against a running dev server.

Both key-committing suites (signed by default, ``signed=False`` / ``--unsigned``): round
trips at every frame boundary, interoperability both ways with the aws-encryption-sdk
library and aws-encryption-cli, known answers (key derivation against RFC 5869 written
out here; a fixed message that the SDK itself must decrypt), every byte of a message
flipped, every truncation, frames reordered, headers swapped, a signature stripped, and
several GiB streamed through a pipe in constant memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.materials_managers import DecryptionMaterials
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.structures import DataKey, MasterKeyInfo
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyhive.envelope import FRAME_LENGTH, CacheLimits, Envelope, EnvelopeError, _materials
from keyhive.envelope import _format as fmt
from keyhive.envelope._encrypt import WriteMaterials, write_message
from keyhive.envelope._errors import FieldTooLong
from keyhive.envelope._primitives import derive
from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, RunningServer, start_server

MiB = 1 << 20
SIGNED = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
UNSIGNED = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
SUITES = pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
KEYHIVE = [sys.executable, "-m", "keyhive.cli.main"]
ESDK_CLI = shutil.which("aws-encryption-cli",
                        path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


pytestmark = pytest.mark.usefixtures("dev_aws_environment")


@pytest.fixture
def key(kms) -> str:  # type: ignore[no-untyped-def]
    return str(kms.create_key(Description="envelope format")["KeyMetadata"]["Arn"])


def envelope(server: RunningServer, key: str, *, signed: bool = True, cache: bool = False) -> Envelope:
    limits = CacheLimits(max_age_seconds=600) if cache else None
    return Envelope([key], endpoint_url=server.endpoint, signed=signed, cache=limits)


@pytest.fixture
def sdk_provider(dev_server: RunningServer, key: str, monkeypatch: pytest.MonkeyPatch) -> StrictAwsKmsMasterKeyProvider:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", dev_server.endpoint)
    return StrictAwsKmsMasterKeyProvider(key_ids=[key], botocore_session=botocore.session.Session())


def sdk() -> Any:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def small_frames(box: Envelope, data: bytes, context: dict[str, str], frame_length: int) -> bytes:
    """A message written by Keyhive's writer with tiny frames, so that every byte can be tried."""
    materials = _materials.for_encryption(box._manager("encrypt", box.key_ids), context, signed=box.signed,
                                          frame_length=frame_length, size=len(data), max_data_keys=16)
    out = io.BytesIO()
    write_message(io.BytesIO(data), out, materials, frame_length=frame_length, size=len(data))
    return out.getvalue()


def body_start(message: bytes) -> int:
    stream = io.BytesIO(message)
    deserialize_header(stream)  # the SDK's parser: an independent reading of the header
    return stream.tell() + fmt.TAG_LENGTH


# -- round trips ----------------------------------------------------------------------------------
@SUITES
@pytest.mark.parametrize("size", [0, 1, FRAME_LENGTH - 1, FRAME_LENGTH, FRAME_LENGTH + 1, 3 * FRAME_LENGTH + 100])
def test_round_trip_at_every_frame_boundary(dev_server: RunningServer, key: str, signed: bool,
                                            size: int) -> None:
    box = envelope(dev_server, key, signed=signed)
    data = os.urandom(size)
    message = box.encrypt(data, {"size": str(size)})
    header, _ = deserialize_header(io.BytesIO(message))
    assert message[0] == 2 and header.algorithm is (SIGNED if signed else UNSIGNED)
    assert header.frame_length == FRAME_LENGTH
    # whole frames, then a final frame that holds the rest (empty when size is a multiple: SDK 3.x
    # refuses a full final frame)
    regular = size // FRAME_LENGTH
    footer = 2 + 103 if signed else 0
    assert len(message) == (body_start(message) + regular * (16 + FRAME_LENGTH + 16)
                            + 24 + (size - regular * FRAME_LENGTH) + 16 + footer)
    assert box.decrypt(message, expected_context={"size": str(size)}) == (data, {"size": str(size)})
    # and from files (the read-ahead thread) into a file
    assert _through_files(box, data) == data


def _through_files(box: Envelope, data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        plain, sealed, opened = Path(tmp, "p"), Path(tmp, "s"), Path(tmp, "o")
        plain.write_bytes(data)
        with open(plain, "rb") as src, open(sealed, "wb") as dst:
            box.encrypt_stream(src, dst, size=len(data))
        with open(sealed, "rb") as src, open(opened, "wb") as dst:
            box.decrypt_stream(src, dst)
        return opened.read_bytes()


@SUITES
def test_tiny_frames_every_length(dev_server: RunningServer, key: str, signed: bool) -> None:
    """Frames of 16 bytes, messages of 0..70 bytes: every final-frame length, exact multiples included."""
    box = envelope(dev_server, key, signed=signed, cache=True)
    for size in range(71):
        data = os.urandom(size)
        message = small_frames(box, data, {}, 16)
        assert box.decrypt(message)[0] == data
        plaintext, _ = sdk().decrypt(source=message, materials_manager=box._manager("decrypt", box.key_ids))
        assert plaintext == data


def test_the_unsigned_suite_is_chosen_in_the_library_and_the_cli(dev_server: RunningServer, key: str) -> None:
    assert Envelope([key], endpoint_url=dev_server.endpoint).signed is True
    message = envelope(dev_server, key, signed=False).encrypt(b"x" * 1000)
    assert fmt.u16(message[1:3]) == fmt.SUITE_COMMIT_KEY
    assert "aws-crypto-public-key" not in deserialize_header(io.BytesIO(message))[0].encryption_context
    result = subprocess.run([*KEYHIVE, "encrypt", "--unsigned", "--key", key], input=b"via cli", capture_output=True,
                            env=_cli_env(dev_server), timeout=60, check=True)
    assert fmt.u16(result.stdout[1:3]) == fmt.SUITE_COMMIT_KEY
    # decryption reads both suites without being told which
    assert envelope(dev_server, key).decrypt(result.stdout)[0] == b"via cli"


# -- the AWS Encryption SDK, both ways ---------------------------------------------------------------------
@SUITES
def test_the_sdk_decrypts_what_keyhive_writes(dev_server: RunningServer, key: str, signed: bool,
                                              sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    data = os.urandom(2 * FRAME_LENGTH + 12345)
    message = envelope(dev_server, key, signed=signed).encrypt(data, {"to": "sdk"})
    plaintext, header = sdk().decrypt(source=message, key_provider=sdk_provider)
    assert plaintext == data and header.encryption_context["to"] == "sdk"
    assert header.algorithm is (SIGNED if signed else UNSIGNED)


@pytest.mark.parametrize("algorithm", [SIGNED, UNSIGNED], ids=["signed", "unsigned"])
@pytest.mark.parametrize("frame_length", [0, 1024, 4096, 3 * MiB])  # 0: the SDK's single-block (unframed) body
def test_keyhive_decrypts_what_the_sdk_writes(dev_server: RunningServer, key: str, algorithm: Algorithm,
                                              frame_length: int, sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    data = os.urandom(3 * MiB + 5)
    message, _ = sdk().encrypt(source=data, key_provider=sdk_provider, algorithm=algorithm, frame_length=frame_length,
                               encryption_context={"from": "sdk"})
    box = envelope(dev_server, key)
    assert box.decrypt(message, expected_context={"from": "sdk"}) == (data, {"from": "sdk"})
    assert _through_files_decrypt(box, message) == data


def _through_files_decrypt(box: Envelope, message: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "s").write_bytes(message)
        with open(Path(tmp, "s"), "rb") as src, open(Path(tmp, "o"), "wb") as dst:
            box.decrypt_stream(src, dst)
        return Path(tmp, "o").read_bytes()


def test_unframed_bodies_over_the_limit_are_refused(dev_server: RunningServer, key: str,
                                                    sdk_provider: StrictAwsKmsMasterKeyProvider) -> None:
    message, _ = sdk().encrypt(source=b"x" * (4 * MiB + 1), key_provider=sdk_provider, frame_length=0)
    with pytest.raises(EnvelopeError, match="limits"):
        envelope(dev_server, key).decrypt(message)


def _cli_env(server: RunningServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    env.update(AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=DEV_SECRET_ACCESS_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", KEYHIVE_ENDPOINT=server.endpoint,
               AWS_ENDPOINT_URL_KMS=server.endpoint)
    return env


@pytest.mark.skipif(ESDK_CLI is None, reason="aws-encryption-cli not installed (pip install aws-encryption-sdk-cli)")
def test_aws_encryption_cli_and_keyhive_with_the_unsigned_suite(dev_server: RunningServer, key: str,
                                                                tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 3)
    (tmp_path / "plain").write_bytes(data)
    env = _cli_env(dev_server)
    esdk = [str(ESDK_CLI), "--commitment-policy", "require-encrypt-require-decrypt", "-S",
            "--wrapping-keys", f"key={key}"]
    subprocess.run([*KEYHIVE, "encrypt", "--unsigned", "--key", key, "--context", "app=x",
                    "-i", str(tmp_path / "plain"), "-o", str(tmp_path / "k.khe")], env=env, check=True, timeout=60)
    subprocess.run([*esdk, "--decrypt", "-i", str(tmp_path / "k.khe"), "-o", str(tmp_path / "k.out"),
                    "--encryption-context", "app=x"], env=env, check=True, timeout=60, capture_output=True)
    assert (tmp_path / "k.out").read_bytes() == data
    subprocess.run([*esdk, "--encrypt", "--algorithm", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", "-i",
                    str(tmp_path / "plain"), "-o", str(tmp_path / "e.khe")], env=env, check=True, timeout=60,
                   capture_output=True)
    assert fmt.u16((tmp_path / "e.khe").read_bytes()[1:3]) == fmt.SUITE_COMMIT_KEY
    subprocess.run([*KEYHIVE, "decrypt", "--key", key, "-i", str(tmp_path / "e.khe"), "-o", str(tmp_path / "e.out")],
                   env=env, check=True, timeout=60)
    assert (tmp_path / "e.out").read_bytes() == data


# -- known answers ------------------------------------------------------------------------------------
def _hkdf_sha512(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out with hmac: an independent check of the derivation."""
    prk = hmac.new(salt, ikm, hashlib.sha512).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha512).digest()
        out += block
        counter += 1
    return out[:length]


DATA_KEY = bytes(range(32))
MESSAGE_ID = bytes(range(100, 132))
KAT_CONTEXT = {"purpose": "known answer", "tenant": "t-7"}
KAT_ENTRY = fmt.DataKeyEntry("aws-kms", b"arn:aws:kms:us-east-1:111122223333:key/kat", b"\x01" * 40)


def test_key_derivation_and_commitment_follow_rfc_5869() -> None:
    cipher, commitment = derive(DATA_KEY, MESSAGE_ID, fmt.SUITE_COMMIT_KEY)
    assert commitment == _hkdf_sha512(DATA_KEY, MESSAGE_ID, b"COMMITKEY", 32)
    key = _hkdf_sha512(DATA_KEY, MESSAGE_ID, struct.pack(">H", 0x0478) + b"DERIVEKEY", 32)
    assert cipher.header_tag(b"header") == AESGCM(key).encrypt(bytes(12), b"", b"header")
    assert derive(DATA_KEY, MESSAGE_ID, fmt.SUITE_COMMIT_KEY_ECDSA_P384)[1] == commitment  # no suite id in it


class _FixedKey(CryptoMaterialsManager):  # type: ignore[misc]
    """Hands the SDK a known data key: the SDK then decrypts a message built without KMS."""

    def __init__(self, verification_key: bytes | None = None) -> None:
        self._verification_key = verification_key

    def get_encryption_materials(self, request: Any) -> Any:
        raise NotImplementedError

    def decrypt_materials(self, request: Any) -> DecryptionMaterials:
        provider = MasterKeyInfo(provider_id=KAT_ENTRY.provider_id, key_info=KAT_ENTRY.provider_info)
        return DecryptionMaterials(data_key=DataKey(key_provider=provider, data_key=DATA_KEY,
                                                    encrypted_data_key=KAT_ENTRY.ciphertext),
                                   verification_key=self._verification_key)


def _known_message(plaintext: bytes, frame_length: int, signing_key: bytes | None = None,
                   context: dict[str, str] | None = None) -> bytes:
    suite = fmt.SUITE_COMMIT_KEY_ECDSA_P384 if signing_key else fmt.SUITE_COMMIT_KEY
    materials = WriteMaterials(suite, DATA_KEY, (KAT_ENTRY,), context or KAT_CONTEXT, signing_key)
    out = io.BytesIO()
    write_message(io.BytesIO(plaintext), out, materials, frame_length=frame_length, message_id=MESSAGE_ID)
    return out.getvalue()


# SHA-256 of _known_message(b"known answer plaintext " * 9, 64): pinned, and decrypted by the SDK below.
KNOWN_MESSAGE_SHA256 = "cdd6f8342f342bdac6de3ff6bca6a519be6da265eda2384d57ec06bcf7b53e8e"


def test_a_fixed_message_is_byte_for_byte_stable_and_the_sdk_decrypts_it() -> None:
    plaintext = b"known answer plaintext " * 9  # 207 bytes: three 64-byte frames and a final one of 15
    message = _known_message(plaintext, 64)
    header = fmt.encode_header(fmt.Header(fmt.SUITE_COMMIT_KEY, MESSAGE_ID, KAT_CONTEXT, (KAT_ENTRY,), 64,
                                          _hkdf_sha512(DATA_KEY, MESSAGE_ID, b"COMMITKEY", 32)))
    assert message.startswith(header)
    # the layout by hand: version, suite, message id, context (sorted by key), one data key, framed, 64
    context = b"\x00\x02" + b"\x00\x07purpose\x00\x0cknown answer" + b"\x00\x06tenant\x00\x03t-7"
    assert header == (b"\x02\x04\x78" + MESSAGE_ID + struct.pack(">H", len(context)) + context + b"\x00\x01"
                      + b"\x00\x07aws-kms" + struct.pack(">H", 42) + KAT_ENTRY.provider_info
                      + b"\x00\x28" + KAT_ENTRY.ciphertext + b"\x02\x00\x00\x00\x40" + header[-32:])
    body = message[len(header) + 16:]
    assert body[:16] == b"\x00\x00\x00\x01" + bytes(8) + b"\x00\x00\x00\x01"  # sequence number 1, its IV
    final = body[3 * (16 + 64 + 16):]
    assert final[:24] == b"\xff\xff\xff\xff\x00\x00\x00\x04" + bytes(8) + b"\x00\x00\x00\x04" + b"\x00\x00\x00\x0f"
    assert len(final) == 24 + 15 + 16  # unsigned: no footer
    assert hashlib.sha256(message).hexdigest() == KNOWN_MESSAGE_SHA256
    decrypted, sdk_header = sdk().decrypt(source=message, materials_manager=_FixedKey())
    assert decrypted == plaintext and sdk_header.encryption_context == KAT_CONTEXT


def test_a_fixed_signed_message_verifies_with_the_sdk() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    point = private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    context = {**KAT_CONTEXT, "aws-crypto-public-key": base64.b64encode(point).decode()}
    for size in (0, 1, 64, 200):
        plaintext = os.urandom(size)
        message = _known_message(plaintext, 64, der, context)
        assert struct.unpack(">H", message[-105:-103])[0] == 103  # the SDKs' fixed signature length
        decrypted, _ = sdk().decrypt(source=message, materials_manager=_FixedKey(public))
        assert decrypted == plaintext
        with pytest.raises(InvalidSignature):
            sdk().decrypt(source=message[:-1] + bytes([message[-1] ^ 1]), materials_manager=_FixedKey(public))


# -- tampering --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tamper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("tamper"), "--dev", "--log-level", "warning")
    yield server
    server.stop()


def _refused_writing_only_whole_earlier_frames(box: Envelope, message: bytes, data: bytes, frame_length: int, *,
                                               whole: bool) -> None:
    """Refused, and what reached dst was authenticated: whole frames from the start (all of them
    only when the damage is in the signature, which is checked after the last frame)."""
    out = io.BytesIO()
    with pytest.raises(EnvelopeError):
        box.decrypt_stream(io.BytesIO(message), out)
    written = out.getvalue()
    assert data.startswith(written)
    assert written == data if whole else len(written) % frame_length == 0 and len(written) < len(data)


@SUITES
def test_every_byte_flipped_is_refused(tamper_server: RunningServer, signed: bool) -> None:
    kms = tamper_server.client()
    key = kms.create_key()["KeyMetadata"]["Arn"]
    box = envelope(tamper_server, key, signed=signed, cache=True)  # cached: one KMS call per distinct header
    data = os.urandom(100)
    message = small_frames(box, data, {"tamper": "every byte"}, 32)  # three frames of 32 and a final one of 4
    assert box.decrypt(message)[0] == data
    footer = len(message) - (2 + 103) if signed else len(message)
    for position in range(len(message)):
        for bit in (0x01, 0x80):
            bad = bytearray(message)
            bad[position] ^= bit
            _refused_writing_only_whole_earlier_frames(box, bytes(bad), data, 32, whole=position >= footer)


@SUITES
def test_every_truncation_is_refused(tamper_server: RunningServer, signed: bool) -> None:
    key = tamper_server.client().create_key()["KeyMetadata"]["Arn"]
    box = envelope(tamper_server, key, signed=signed, cache=True)
    data = os.urandom(100)
    message = small_frames(box, data, {}, 32)
    for end in range(len(message)):
        with pytest.raises(EnvelopeError, match="corrupt"):
            box.decrypt(message[:end])
    for extra in (b"\x00", message):
        with pytest.raises(EnvelopeError, match="corrupt"):
            box.decrypt(message + extra)


@SUITES
def test_frames_reordered_dropped_or_repeated_are_refused(tamper_server: RunningServer, signed: bool) -> None:
    key = tamper_server.client().create_key()["KeyMetadata"]["Arn"]
    box = envelope(tamper_server, key, signed=signed, cache=True)
    data = os.urandom(4 * 32 - 5)  # four frames: three regular, then a final one of 27 bytes
    message = small_frames(box, data, {}, 32)
    start, size = body_start(message), 16 + 32 + 16
    frames = [message[start + i * size: start + (i + 1) * size] for i in range(3)]
    head, rest = message[:start], message[start + 3 * size:]
    assert [fmt.u32(f[:4]) for f in frames] == [1, 2, 3] and fmt.u32(rest[:4]) == fmt.FINAL_FRAME_MARKER
    for order in ([1, 0, 2], [0, 2, 1], [0, 2], [1, 2], [0, 1, 1, 2], [0, 0, 1, 2], [0, 1]):
        with pytest.raises(EnvelopeError, match="corrupt"):
            box.decrypt(head + b"".join(frames[i] for i in order) + rest)
    # the final frame marked as a regular one, or a regular one as final
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(head + b"".join(frames) + struct.pack(">I", 4) + rest[8:])


def test_a_header_or_body_moved_to_another_message_is_refused(tamper_server: RunningServer) -> None:
    key = tamper_server.client().create_key()["KeyMetadata"]["Arn"]
    box = envelope(tamper_server, key, signed=False, cache=True)  # same data key for both (cached)
    first, second = (small_frames(box, os.urandom(100), {"same": "context"}, 32) for _ in range(2))
    assert first[:3] == second[:3] and first[35:] != second[35:]
    start = body_start(first)
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(first[:start] + second[start:])  # the body's AAD names its message id
    # the message id of one with the rest of the other: the commitment and header tag no longer match
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(first[:3] + second[3:35] + first[35:])


def test_a_signed_message_cannot_be_turned_into_an_unsigned_one(tamper_server: RunningServer) -> None:
    key = tamper_server.client().create_key()["KeyMetadata"]["Arn"]
    box = envelope(tamper_server, key)
    message = box.encrypt(os.urandom(1000))
    downgraded = message[:1] + struct.pack(">H", fmt.SUITE_COMMIT_KEY) + message[3:-(2 + 103)]
    with pytest.raises(EnvelopeError):
        box.decrypt(downgraded)
    with pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt(message[:-(2 + 103)])  # the signature dropped


@SUITES
def test_wrong_context_and_wrong_key_are_refused(tamper_server: RunningServer, signed: bool) -> None:
    kms = tamper_server.client()
    key, other = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    box = envelope(tamper_server, key, signed=signed)
    message = box.encrypt(b"bound", {"tenant": "t-7"})
    out = io.BytesIO()
    with pytest.raises(EnvelopeError, match="'tenant' differs"):
        box.decrypt_stream(io.BytesIO(message), out, expected_context={"tenant": "t-8"})
    with pytest.raises(EnvelopeError, match="has no 'stage'"):
        box.decrypt_stream(io.BytesIO(message), out, expected_context={"stage": "prod"})
    assert out.getvalue() == b""
    with pytest.raises(EnvelopeError, match="no allowed KMS key"):
        box.decrypt(message, allowed_key_ids=[other])


# -- streams that misbehave ----------------------------------------------------------------------------
def test_an_input_longer_than_its_stated_size_is_refused(dev_server: RunningServer, key: str) -> None:
    box = envelope(dev_server, key)
    with pytest.raises(EnvelopeError, match="longer than its stated size"):
        box.encrypt_stream(io.BytesIO(b"x" * (3 * MiB)), io.BytesIO(), size=MiB)


def test_a_context_too_large_is_refused(dev_server: RunningServer, key: str) -> None:
    with pytest.raises(EnvelopeError, match=r"could not make or wrap a data key \(ValidationException\)"):
        envelope(dev_server, key, signed=False).encrypt(b"x", {"big": "v" * 9000})  # KMS takes 8192 bytes
    # a materials manager that allowed more would still meet the header's 65535-byte field
    materials = WriteMaterials(fmt.SUITE_COMMIT_KEY, DATA_KEY, (KAT_ENTRY,), {"big": "v" * 70_000})
    with pytest.raises(FieldTooLong):
        write_message(io.BytesIO(b"x"), io.BytesIO(), materials, frame_length=64)


class _FailingOutput:
    """A writer that fails once it has taken ``limit`` bytes, as a full disk would."""

    def __init__(self, limit: int) -> None:
        self.limit, self.taken = limit, 0

    def write(self, data: bytes) -> int:
        if self.taken + len(data) > self.limit:
            raise OSError(28, "No space left on device")
        self.taken += len(data)
        return len(data)


@SUITES
def test_a_failing_output_stops_both_directions_and_leaves_no_thread(dev_server: RunningServer, key: str,
                                                                     signed: bool, tmp_path: Path) -> None:
    box = envelope(dev_server, key, signed=signed)
    data = os.urandom(8 * MiB)
    (tmp_path / "plain").write_bytes(data)
    message = box.encrypt(data)
    (tmp_path / "sealed").write_bytes(message)
    before = threading.active_count()
    for limit in (0, 100, 3 * MiB):
        with open(tmp_path / "plain", "rb") as src, pytest.raises(EnvelopeError, match="No space left|I/O error"):
            box.encrypt_stream(src, _FailingOutput(limit))
        with open(tmp_path / "sealed", "rb") as src, pytest.raises(EnvelopeError, match="No space left|I/O error"):
            box.decrypt_stream(src, _FailingOutput(limit))
    assert threading.active_count() == before


def test_a_refused_message_leaves_no_thread(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    box = envelope(dev_server, key)
    message = bytearray(box.encrypt(os.urandom(12 * MiB)))
    message[len(message) // 2] ^= 1  # a frame in the middle: read ahead, hashed, refused
    (tmp_path / "bad").write_bytes(message)
    before = threading.active_count()
    out = io.BytesIO()
    with open(tmp_path / "bad", "rb") as src, pytest.raises(EnvelopeError, match="corrupt"):
        box.decrypt_stream(src, out)
    assert threading.active_count() == before
    assert len(out.getvalue()) % FRAME_LENGTH == 0 and 0 < len(out.getvalue()) < 12 * MiB


# -- several GiB, streamed --------------------------------------------------------------------------
STREAM_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys, threading, time
    from keyhive.envelope import Envelope

    endpoint, key, total, signed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "signed"
    PERIOD = (1 << 20) + 7  # not a multiple of the frame length: a misplaced frame cannot match
    PATTERN = os.urandom(PERIOD)
    TWICE = PATTERN + PATTERN

    class Generated:
        '''total bytes of a repeating random pattern, made as they are asked for (never stored)'''
        def __init__(self, total):
            self.offset, self.total = 0, total
        def readinto(self, view):
            n = min(len(view), self.total - self.offset, PERIOD)
            at = self.offset % PERIOD
            view[:n] = TWICE[at: at + n]
            self.offset += n
            return n

    class Checking:
        '''compares what arrives with the pattern, keeping nothing'''
        def __init__(self):
            self.offset, self.good = 0, True
        def write(self, data):
            view, done = memoryview(data), 0
            while done < len(view):
                at = (self.offset + done) % PERIOD
                n = min(len(view) - done, PERIOD - at)
                self.good &= view[done: done + n] == TWICE[at: at + n]
                done += n
            self.offset += len(view)
            return len(view)

    box = Envelope([key], endpoint_url=endpoint, signed=signed)
    box.decrypt(box.encrypt(os.urandom(1024), {"warm": "up"}))  # KMS and imports warm, no bulk buffers yet
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    source, sink, failures = Generated(total), Checking(), []
    r, w = os.pipe()

    def encrypt():
        try:
            with open(w, "wb") as dst:
                box.encrypt_stream(source, dst, {"stream": "large"})
        except BaseException as exc:
            failures.append(repr(exc))

    started = time.monotonic()
    writer = threading.Thread(target=encrypt)
    writer.start()
    with open(r, "rb") as src:
        context = box.decrypt_stream(src, sink, expected_context={"stream": "large"})
    writer.join()
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"bytes": sink.offset, "good": sink.good, "baseline": baseline, "peak": peak,
                      "failures": failures, "context": context, "seconds": seconds}))
""")


@SUITES
def test_3_gib_streamed_through_a_pipe_in_constant_memory(dev_server: RunningServer, key: str, signed: bool) -> None:
    """3 GiB made on the fly, encrypted into a pipe and decrypted from it at once, in one process."""
    total = 3 << 30
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, dev_server.endpoint, key, str(total),
                             "signed" if signed else "unsigned"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["failures"] == [] and report["context"] == {"stream": "large"}
    assert report["bytes"] == total and report["good"]
    growth = report["peak"] - report["baseline"]
    assert growth < 32 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB while streaming 3 GiB"
    print(f"3 GiB encrypt|decrypt ({'signed' if signed else 'unsigned'}): {report['seconds']:.1f}s, "
          f"{total / report['seconds'] / 1e6:.0f} MB/s each way, RSS growth {growth / MiB:.1f} MiB")
