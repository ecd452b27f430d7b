"""Real AWS clients against a Keyhive dev server: the AWS CLI and the AWS Encryption SDK."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.exceptions import DecryptKeyError
from cryptography.exceptions import InvalidSignature, InvalidTag

from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, RunningServer

AWS = str(Path(sys.executable).with_name("aws"))
ACCOUNT = "111122223333"


# -- the AWS CLI -------------------------------------------------------------------------------
def aws_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
    )
    return env


def run_aws(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AWS, "kms", *args, "--endpoint-url", server.endpoint],
                          capture_output=True, text=True, env=aws_env(), timeout=60)


def aws(server: RunningServer, *args: str) -> str:
    result = run_aws(server, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_aws_cli_round_trip(dev_server: RunningServer, tmp_path: Path) -> None:
    created = json.loads(aws(dev_server, "create-key", "--description", "aws cli test"))["KeyMetadata"]
    key_id = created["KeyId"]
    assert created["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"
    assert created["KeyState"] == "Enabled" and created["Description"] == "aws cli test"

    plaintext = bytes(range(256)) + b"aws cli round trip \x00\xff"
    (tmp_path / "plain.bin").write_bytes(plaintext)
    encrypted = json.loads(aws(dev_server, "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain.bin'}",
                               "--encryption-context", "app=cli,stage=test"))
    assert encrypted["KeyId"] == created["Arn"]
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = base64.b64decode(encrypted["CiphertextBlob"])
    assert blob[0] == 1 and blob[1:17] == uuid.UUID(key_id).bytes
    (tmp_path / "blob.bin").write_bytes(blob)

    out = aws(dev_server, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob.bin'}",
              "--encryption-context", "app=cli,stage=test", "--output", "text", "--query", "Plaintext")
    assert base64.b64decode(out.strip()) == plaintext

    key_of = aws(dev_server, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob.bin'}",
                 "--encryption-context", "app=cli,stage=test", "--output", "text", "--query", "KeyId")
    assert key_of.strip() == created["Arn"]


def test_aws_cli_reports_aws_errors(dev_server: RunningServer, tmp_path: Path) -> None:
    key_id = json.loads(aws(dev_server, "create-key"))["KeyMetadata"]["KeyId"]
    (tmp_path / "plain.bin").write_bytes(b"secret")
    blob = base64.b64decode(json.loads(aws(dev_server, "encrypt", "--key-id", key_id, "--plaintext",
                                           f"fileb://{tmp_path / 'plain.bin'}"))["CiphertextBlob"])
    (tmp_path / "blob.bin").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    result = run_aws(dev_server, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob.bin'}")
    assert result.returncode == 255
    assert "An error occurred (InvalidCiphertextException) when calling the Decrypt operation" in result.stderr
    assert result.stdout == ""


# -- the AWS Encryption SDK ------------------------------------------------------------------------
@pytest.fixture
def esdk_provider(dev_server: RunningServer, kms, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # aws-encryption-sdk 4 makes its own clients from a botocore session
    # (key_providers/kms.py: session.client("kms", region_name=...)) and takes no
    # endpoint: botocore's per-service endpoint variable points them at Keyhive.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", dev_server.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    key_arn = kms.create_key(Description="encryption sdk")["KeyMetadata"]["Arn"]
    session = botocore.session.Session()
    session.set_credentials(DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY)
    session.set_config_variable("region", REGION)
    provider = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)
    return key_arn, provider


def test_encryption_sdk_round_trip_of_one_mebibyte(esdk_provider, kms) -> None:  # type: ignore[no-untyped-def]
    key_arn, provider = esdk_provider
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    message = os.urandom(1 << 20)
    context = {"purpose": "keyhive integration", "tenant": "t-7"}

    ciphertext, encrypt_header = client.encrypt(source=message, key_provider=provider, encryption_context=context)
    assert len(ciphertext) > len(message)
    assert message[:4096] not in ciphertext
    (edk,) = encrypt_header.encrypted_data_keys
    assert edk.key_provider.provider_id == "aws-kms"
    assert edk.key_provider.key_info.decode() == key_arn
    assert edk.encrypted_data_key[0] == 1  # a Keyhive ciphertext blob made by GenerateDataKey
    assert edk.encrypted_data_key[1:17] == uuid.UUID(key_arn.rsplit("/", 1)[1]).bytes

    plaintext, decrypt_header = client.decrypt(source=ciphertext, key_provider=provider)
    assert plaintext == message
    assert {k: decrypt_header.encryption_context[k] for k in context} == context
    assert set(decrypt_header.encryption_context) == {*context, "aws-crypto-public-key"}
    assert decrypt_header.algorithm.name == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"

    # The data key sealed in the message is an ordinary KMS ciphertext: Keyhive opens it
    # only with the SDK's own encryption context (which holds the public key too).
    data_key = kms.decrypt(CiphertextBlob=edk.encrypted_data_key,
                           EncryptionContext=decrypt_header.encryption_context)["Plaintext"]
    assert len(data_key) == 32


def test_encryption_sdk_refuses_tampered_messages(esdk_provider) -> None:  # type: ignore[no-untyped-def]
    _, provider = esdk_provider
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ciphertext, header = client.encrypt(source=os.urandom(200_000), key_provider=provider,
                                        encryption_context={"tamper": "test"})
    (edk,) = header.encrypted_data_keys
    blob_at = ciphertext.index(edk.encrypted_data_key)

    def flipped(position: int) -> bytes:
        bad = bytearray(ciphertext)
        bad[position] ^= 0x01
        return bytes(bad)

    # A byte of the Keyhive blob in the header: Keyhive says InvalidCiphertext, no data key.
    with pytest.raises(DecryptKeyError):
        client.decrypt(source=flipped(blob_at + 60), key_provider=provider)
    # A byte of the framed body: the frame's GCM tag fails.
    with pytest.raises(InvalidTag):
        client.decrypt(source=flipped(len(ciphertext) // 2), key_provider=provider)
    # The last byte: the ECDSA footer signature fails.
    with pytest.raises(InvalidSignature):
        client.decrypt(source=flipped(len(ciphertext) - 1), key_provider=provider)
