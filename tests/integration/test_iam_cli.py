"""``keyhive iam ...`` as an operator runs it: the installed command against a live dev server.

Users, access keys (the secret shown once, never listed), inline identity policies from
``file://``, tags, deactivation and deletion (DeleteConflictException while keys or
policies remain), the help text naming every command, and the raw database holding no
access-key secret in any encoding.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from keyhive.service.identity import IAM_OPERATIONS
from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, RunningServer, make_user

ACCOUNT = "111122223333"
KEYHIVE = Path(sys.executable).with_name("keyhive")


def run(server: RunningServer, *args: str, access_key_id: str = DEV_ACCESS_KEY_ID,
        secret: str = DEV_SECRET_ACCESS_KEY, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "KEYHIVE_ENDPOINT": server.endpoint,
    })
    return subprocess.run([str(KEYHIVE), "iam", *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp)


def ok(server: RunningServer, *args: str, **kwargs: Any) -> dict[str, Any]:
    done = run(server, *args, **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def fails(server: RunningServer, *args: str, **kwargs: Any) -> str:
    """The error line of a command that must fail."""
    done = run(server, *args, **kwargs)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    return done.stderr


def encodings(secret: bytes) -> list[bytes]:
    """The forms a careless implementation would write a secret in."""
    b64 = base64.b64encode(secret)
    return [secret, b64, b64.rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"="),
            secret.hex().encode(), secret.hex().upper().encode(), json.dumps(secret.decode()).encode()]


def kebab(action: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", action).lower()


@pytest.fixture(scope="module")
def secrets() -> list[str]:
    """Every access-key secret this module saw, for the raw-database check at the end."""
    return []


def test_help_lists_every_command(dev_server: RunningServer) -> None:
    done = subprocess.run([str(KEYHIVE), "iam", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = {kebab(action) for action in IAM_OPERATIONS}
    assert commands == {
        "create-user", "get-user", "delete-user", "list-users", "create-access-key", "list-access-keys",
        "update-access-key", "delete-access-key", "put-user-policy", "get-user-policy", "delete-user-policy",
        "list-user-policies", "tag-user", "untag-user",
    }
    for command in commands:
        assert re.search(rf"^\s+{command}\s+\S", done.stdout, re.M), f"{command} is missing from the help"


def test_user_life_cycle(dev_server: RunningServer, kms: Any, tmp_path: Path, secrets: list[str]) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
    user = ok(dev_server, "create-user", "--user-name", name)["User"]
    assert (user["UserName"], user["Arn"], user["AccountId"], user["Admin"]) == (name, arn, ACCOUNT, False)
    assert re.fullmatch(r"AIDA[A-Z0-9]{17}", user["UserId"])
    assert "EntityAlreadyExistsException" in fails(dev_server, "create-user", "--user-name", name)
    assert name in {u["UserName"] for u in ok(dev_server, "list-users")["Users"]}

    # An access key: the secret once, in the reply to create-access-key, and never again.
    created = ok(dev_server, "create-access-key", "--user-name", name)["AccessKey"]
    key_id, secret = created["AccessKeyId"], created["SecretAccessKey"]
    secrets.append(secret)
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", key_id) and len(secret) == 40
    assert (created["UserName"], created["Status"]) == (name, "Active")
    listing = run(dev_server, "list-access-keys", "--user-name", name)
    assert listing.returncode == 0 and secret not in listing.stdout and "SecretAccessKey" not in listing.stdout
    [meta] = json.loads(listing.stdout)["AccessKeyMetadata"]
    assert (meta["AccessKeyId"], meta["UserName"], meta["Status"]) == (key_id, name, "Active")

    # The key works, and the user may do nothing until a policy says so.
    meta_key = kms.create_key()["KeyMetadata"]
    client = dev_server.client(key_id, secret)
    with pytest.raises(ClientError) as info:
        client.encrypt(KeyId=meta_key["KeyId"], Plaintext=b"x")
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"

    # An inline identity policy from a file.
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": meta_key["Arn"]}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document, indent=2))
    assert ok(dev_server, "put-user-policy", "--user-name", name, "--policy-name", "use-key",
              "--policy-document", f"file://{path}") == {}
    assert ok(dev_server, "list-user-policies", "--user-name", name) == {"PolicyNames": ["use-key"]}
    got = ok(dev_server, "get-user-policy", "--user-name", name, "--policy-name", "use-key")
    assert (got["UserName"], got["PolicyName"]) == (name, "use-key")
    assert json.loads(got["PolicyDocument"]) == document
    blob = client.encrypt(KeyId=meta_key["KeyId"], Plaintext=b"cli")["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"cli"
    assert "NoSuchEntityException" in fails(dev_server, "get-user-policy", "--user-name", name,
                                            "--policy-name", "absent")
    bad = tmp_path / "bad.json"
    bad.write_text('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow"')
    assert "MalformedPolicyDocumentException" in fails(dev_server, "put-user-policy", "--user-name", name,
                                                       "--policy-name", "bad", "--policy-document", f"file://{bad}")

    # Tags.
    assert ok(dev_server, "tag-user", "--user-name", name, "--tags", "team=blue", "env=prod") == {}
    tags = ok(dev_server, "get-user", "--user-name", name)["User"]["Tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "prod"), ("team", "blue")]
    ok(dev_server, "untag-user", "--user-name", name, "--tag-keys", "env")
    assert ok(dev_server, "get-user", "--user-name", name)["User"]["Tags"] == [{"Key": "team", "Value": "blue"}]

    # Deactivate, reactivate.
    ok(dev_server, "update-access-key", "--access-key-id", key_id, "--status", "Inactive")
    with pytest.raises(ClientError) as info:
        client.encrypt(KeyId=meta_key["KeyId"], Plaintext=b"x")
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert ok(dev_server, "list-access-keys", "--user-name", name)["AccessKeyMetadata"][0]["Status"] == "Inactive"
    ok(dev_server, "update-access-key", "--access-key-id", key_id, "--status", "Active")
    client.encrypt(KeyId=meta_key["KeyId"], Plaintext=b"x")

    # Deletion: refused while keys or policies remain.
    assert "DeleteConflictException" in fails(dev_server, "delete-user", "--user-name", name)
    ok(dev_server, "delete-access-key", "--access-key-id", key_id)
    assert ok(dev_server, "list-access-keys", "--user-name", name) == {"AccessKeyMetadata": []}
    with pytest.raises(ClientError) as info:
        client.encrypt(KeyId=meta_key["KeyId"], Plaintext=b"x")
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert "NoSuchEntityException" in fails(dev_server, "delete-access-key", "--access-key-id", key_id)
    assert "DeleteConflictException" in fails(dev_server, "delete-user", "--user-name", name)
    ok(dev_server, "delete-user-policy", "--user-name", name, "--policy-name", "use-key")
    assert ok(dev_server, "list-user-policies", "--user-name", name) == {"PolicyNames": []}
    ok(dev_server, "delete-user", "--user-name", name)
    assert "NoSuchEntityException" in fails(dev_server, "get-user", "--user-name", name)
    assert name not in {u["UserName"] for u in ok(dev_server, "list-users")["Users"]}


def test_access_key_quota(dev_server: RunningServer, secrets: list[str]) -> None:
    name = f"cli-quota-{uuid.uuid4().hex[:8]}"
    ok(dev_server, "create-user", "--user-name", name)
    for _ in range(2):
        secrets.append(ok(dev_server, "create-access-key", "--user-name", name)["AccessKey"]["SecretAccessKey"])
    assert "LimitExceededException" in fails(dev_server, "create-access-key", "--user-name", name)


def test_users_of_another_account(dev_server: RunningServer, secrets: list[str]) -> None:
    name = f"cli-other-{uuid.uuid4().hex[:8]}"
    user = ok(dev_server, "create-user", "--user-name", name, "--account-id", "444455556666")["User"]
    assert user["Arn"] == f"arn:aws:iam::444455556666:user/{name}"
    assert name in {u["UserName"] for u in ok(dev_server, "list-users", "--account-id", "444455556666")["Users"]}
    assert name not in {u["UserName"] for u in ok(dev_server, "list-users")["Users"]}
    assert "NoSuchEntityException" in fails(dev_server, "get-user", "--user-name", name)


def test_non_admin_is_refused(dev_server: RunningServer, secrets: list[str]) -> None:
    user = make_user(dev_server, f"cli-plain-{uuid.uuid4().hex[:8]}")
    secrets.append(user.secret)
    error = fails(dev_server, "list-users", access_key_id=user.access_key_id, secret=user.secret)
    assert error.startswith("keyhive: AccessDeniedException"), error


def test_unknown_credentials_are_refused(dev_server: RunningServer) -> None:
    error = fails(dev_server, "list-users", access_key_id="AKIAUNKNOWNUNKNOWN00", secret="x" * 40)
    assert "UnrecognizedClientException" in error


def test_raw_database_holds_no_access_key_secret(dev_server: RunningServer, secrets: list[str]) -> None:
    """Last in the module: every secret created above (and the dev admin's) is under the barrier."""
    user = make_user(dev_server, f"cli-db-{uuid.uuid4().hex[:8]}")
    secrets.append(user.secret)
    assert dev_server.data_dir is not None
    files = [dev_server.data_dir / "keyhive.db", dev_server.data_dir / "keyhive.db-wal"]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert user.access_key_id.encode() in raw  # an access key id is a record path, not a secret: the scan sees it
    for secret in [*secrets, DEV_SECRET_ACCESS_KEY]:
        for form in encodings(secret.encode()):
            assert form not in raw, f"an access-key secret is on disk as {form[:6]!r}..."
