"""The operator's life cycle against real servers: init, unseal, seal, restart, dev mode.

One ``keyhive server --data-dir DIR`` (Shamir seal) serves the whole module; the
tests run in file order and walk it through its life: uninitialized, initialized
and sealed, unsealed by a quorum, sealed again, restarted.  Every command is the
real ``keyhive`` CLI in a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, RunningServer, admin_call, free_port, start_server

PLAINTEXT = b"keyhive operator test: survives a restart \x00\x01\xff"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without AWS or Keyhive settings (no host profile leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


def keyhive(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyhive.cli.main", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=30,
    )


def kms_client(endpoint: str, access_key_id: str, secret: str):  # type: ignore[no-untyped-def]
    """A boto3 client whose credentials come from the environment, as a user's would."""
    session = boto3.session.Session()  # fresh: the default session caches credentials
    return session.client("kms", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=access_key_id, aws_secret_access_key=secret,
                          config=Config(retries={"max_attempts": 1}))


def error_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def status_doc(endpoint: str) -> dict[str, Any]:
    code, doc = admin_call(endpoint, "GET", "/keyhive/v1/sys/status")
    assert code == 200
    return doc


def health(endpoint: str) -> int:
    return admin_call(endpoint, "GET", "/keyhive/health")[0]


@dataclass
class Flow:
    tmp: Path
    server: RunningServer
    init: dict[str, Any] = field(default_factory=dict)
    key_id: str = ""
    ciphertext: bytes = b""
    unseal_output: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def admin_env(self, **extra: str) -> dict[str, str]:
        creds = {"AWS_ACCESS_KEY_ID": self.init["access_key_id"],
                 "AWS_SECRET_ACCESS_KEY": self.init["secret_access_key"], "AWS_DEFAULT_REGION": REGION}
        return clean_env(**{**creds, **extra})

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return keyhive(*args, input=input, env=env)

    def unseal(self, share: str, **env: str) -> subprocess.CompletedProcess[str]:
        args = ("operator", "unseal") if "KEYHIVE_ENDPOINT" in env else ("operator", "unseal", "--endpoint", self.endpoint)
        result = self.run(*args, input=share + "\n", env=clean_env(**env))
        self.unseal_output += [result.stdout, result.stderr]
        return result


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    tmp = tmp_path_factory.mktemp("operator")
    server = start_server(tmp, "--data-dir", str(tmp / "data"), "--log-level", "debug")
    state = Flow(tmp, server)
    yield state
    state.server.stop()


@pytest.fixture(scope="module")
def initialized(flow: Flow) -> Flow:
    result = flow.run("operator", "init", "--shares", "5", "--threshold", "3", "--json", "--endpoint", flow.endpoint)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    flow.init = json.loads(lines[0])
    return flow


@pytest.fixture(scope="module")
def unsealed(initialized: Flow) -> Flow:
    if status_doc(initialized.endpoint)["sealed"]:
        for share in initialized.init["shares"][:3]:
            assert initialized.unseal(share).returncode == 0
    assert not status_doc(initialized.endpoint)["sealed"]
    return initialized


# -- a fresh server ---------------------------------------------------------------------
def test_fresh_server_is_sealed_and_uninitialized(flow: Flow) -> None:
    assert health(flow.endpoint) == 501
    assert status_doc(flow.endpoint) == {
        "initialized": False, "sealed": True, "seal_type": None, "shares": None, "threshold": None, "progress": 0,
    }
    result = flow.run("status", "--endpoint", flow.endpoint)
    assert result.returncode == 2
    assert result.stdout == "Initialized      false\nSealed           true\n"
    result = flow.run("status", "--json", "--endpoint", flow.endpoint)
    assert result.returncode == 2
    assert json.loads(result.stdout)["initialized"] is False


def test_unseal_before_init_is_refused(flow: Flow) -> None:
    result = flow.unseal(base64.b64encode(bytes(33)).decode())
    assert result.returncode == 1
    assert result.stderr == (
        "keyhive: ValidationException: Keyhive is not initialized; run 'keyhive operator init' first.\n"
    )


# -- init ---------------------------------------------------------------------------------
def test_init_prints_shares_and_first_admin_once(initialized: Flow) -> None:
    doc = initialized.init
    assert sorted(doc) == ["access_key_id", "secret_access_key", "shares", "threshold"]
    assert doc["threshold"] == 3
    shares = doc["shares"]
    assert len(shares) == 5 and len(set(shares)) == 5
    assert all(isinstance(s, str) and len(base64.b64decode(s, validate=True)) == 33 for s in shares)
    assert [base64.b64decode(s)[-1] for s in shares] == [1, 2, 3, 4, 5]  # x-coordinates
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", doc["access_key_id"])
    assert re.fullmatch(r"[A-Za-z0-9+/]{40}", doc["secret_access_key"])
    # Initialized, still sealed.
    assert health(initialized.endpoint) == 503
    assert status_doc(initialized.endpoint) == {
        "initialized": True, "sealed": True, "seal_type": "shamir", "shares": 5, "threshold": 3, "progress": 0,
    }


def test_second_init_is_refused(initialized: Flow) -> None:
    result = initialized.run("operator", "init", "--json", "--endpoint", initialized.endpoint)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "keyhive: ValidationException: Keyhive is already initialized\n"
    assert admin_call(initialized.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 1, "threshold": 1}) == (
        400, {"__type": "ValidationException", "message": "Keyhive is already initialized"},
    )


def test_sealed_server_refuses_every_kms_call(initialized: Flow) -> None:
    kms = kms_client(initialized.endpoint, initialized.init["access_key_id"], initialized.init["secret_access_key"])
    calls = [
        lambda: kms.list_keys(),
        lambda: kms.create_key(),
        lambda: kms.encrypt(KeyId="alias/anything", Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=b"\x01" * 80),
        lambda: kms.generate_random(NumberOfBytes=16),
    ]
    for call in calls:
        assert error_of(call) == ("KeyUnavailableException", 500)


# -- unseal ---------------------------------------------------------------------------------
def test_malformed_share_is_refused_and_resets_progress(initialized: Flow) -> None:
    shares = initialized.init["shares"]
    assert "Unseal progress  1/3" in initialized.unseal(shares[0]).stdout
    result = initialized.unseal("this is not a share!")
    assert result.returncode == 1
    assert result.stderr == (
        "keyhive: ValidationException: Unseal failed: the key share is not valid base64; progress was reset.\n"
    )
    assert status_doc(initialized.endpoint)["progress"] == 0


def test_wrong_share_resets_progress_and_does_not_unseal(initialized: Flow) -> None:
    shares = initialized.init["shares"]
    forged = base64.b64encode(bytes(range(32)) + bytes([9])).decode()  # well formed, x = 9
    assert initialized.unseal(shares[0]).returncode == 0
    assert initialized.unseal(shares[0]).returncode == 0  # the same share twice counts once
    assert status_doc(initialized.endpoint)["progress"] == 1
    assert initialized.unseal(shares[1]).returncode == 0
    result = initialized.unseal(forged)
    assert result.returncode == 1
    assert result.stderr == (
        "keyhive: ValidationException: Unseal failed: the key shares do not unseal this server; "
        "progress was reset.\n"
    )
    assert status_doc(initialized.endpoint) == {
        "initialized": True, "sealed": True, "seal_type": "shamir", "shares": 5, "threshold": 3, "progress": 0,
    }
    assert health(initialized.endpoint) == 503


def test_quorum_unseals_with_endpoint_flag_or_environment(initialized: Flow) -> None:
    shares, endpoint = initialized.init["shares"], initialized.endpoint
    first = initialized.unseal(shares[0], KEYHIVE_ENDPOINT=endpoint)  # no --endpoint: the env var
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        "Initialized      true\nSealed           true\nSeal type        shamir\n"
        "Total shares     5\nThreshold        3\nUnseal progress  1/3\n"
    )
    second = initialized.unseal(shares[2])
    assert second.returncode == 0 and "Unseal progress  2/3\n" in second.stdout
    assert status_doc(endpoint)["sealed"] is True
    third = initialized.unseal(shares[4], KEYHIVE_ENDPOINT=endpoint)
    assert third.returncode == 0, third.stderr
    assert third.stdout == (
        "Initialized      true\nSealed           false\nSeal type        shamir\n"
        "Total shares     5\nThreshold        3\n"
    )
    assert health(endpoint) == 200
    status = initialized.run("status", env=clean_env(KEYHIVE_ENDPOINT=endpoint))
    assert status.returncode == 0
    assert status.stdout == third.stdout
    assert json.loads(initialized.run("status", "--json", "--endpoint", endpoint).stdout) == {
        "initialized": True, "sealed": False, "seal_type": "shamir", "shares": 5, "threshold": 3, "progress": 0,
    }


def test_status_of_unreachable_server_is_an_error() -> None:
    result = keyhive("status", "--endpoint", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("keyhive: cannot reach Keyhive at http://127.0.0.1:1:")


def test_admin_credentials_from_the_environment_work(unsealed: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in unsealed.admin_env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    kms = boto3.session.Session().client("kms", endpoint_url=unsealed.endpoint,
                                         config=Config(retries={"max_attempts": 1}))
    key = kms.create_key(Description="operator test")["KeyMetadata"]
    assert key["Arn"] == f"arn:aws:kms:{REGION}:111122223333:key/{key['KeyId']}"
    reply = kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT, EncryptionContext={"test": "operator"})
    assert reply["KeyId"] == key["Arn"]
    assert kms.decrypt(CiphertextBlob=reply["CiphertextBlob"], EncryptionContext={"test": "operator"})["Plaintext"] == PLAINTEXT
    unsealed.key_id, unsealed.ciphertext = key["KeyId"], reply["CiphertextBlob"]


def test_unseal_when_unsealed_is_harmless(unsealed: Flow) -> None:
    result = unsealed.unseal(base64.b64encode(bytes(33)).decode())
    assert result.returncode == 0
    assert "Sealed           false\n" in result.stdout


# -- seal -----------------------------------------------------------------------------------
def test_seal_needs_admin_credentials(unsealed: Flow) -> None:
    endpoint = unsealed.endpoint
    no_creds = unsealed.run("operator", "seal", "--endpoint", endpoint)
    assert no_creds.returncode == 1
    assert no_creds.stderr == "keyhive: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    wrong_secret = unsealed.run("operator", "seal", "--endpoint", endpoint,
                                env=unsealed.admin_env(AWS_SECRET_ACCESS_KEY="x" * 40))
    assert wrong_secret.returncode == 1
    assert wrong_secret.stderr.startswith("keyhive: InvalidSignatureException: ")
    unknown = unsealed.run("operator", "seal", "--endpoint", endpoint,
                           env=unsealed.admin_env(AWS_ACCESS_KEY_ID="AKIAUNKNOWNUNKNOWN00"))
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("keyhive: UnrecognizedClientException: ")
    assert status_doc(endpoint)["sealed"] is False


def test_seal_forgets_keys_and_refuses_crypto(unsealed: Flow) -> None:
    assert unsealed.ciphertext, "needs test_admin_credentials_from_the_environment_work"
    result = unsealed.run("operator", "seal", env=unsealed.admin_env(KEYHIVE_ENDPOINT=unsealed.endpoint))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Keyhive is sealed.\n"
    assert health(unsealed.endpoint) == 503
    status = unsealed.run("status", "--endpoint", unsealed.endpoint)
    assert status.returncode == 2
    assert "Sealed           true\n" in status.stdout
    kms = kms_client(unsealed.endpoint, unsealed.init["access_key_id"], unsealed.init["secret_access_key"])
    assert error_of(lambda: kms.decrypt(CiphertextBlob=unsealed.ciphertext,
                                        EncryptionContext={"test": "operator"})) == ("KeyUnavailableException", 500)
    assert error_of(lambda: kms.encrypt(KeyId=unsealed.key_id, Plaintext=b"x")) == ("KeyUnavailableException", 500)
    again = unsealed.run("operator", "seal", "--endpoint", unsealed.endpoint, env=unsealed.admin_env())
    assert again.returncode == 1
    assert again.stderr.startswith("keyhive: KeyUnavailableException: ")


# -- restart ----------------------------------------------------------------------------------
def test_restart_is_sealed_and_a_quorum_brings_back_the_keys(unsealed: Flow) -> None:
    assert unsealed.ciphertext, "needs test_admin_credentials_from_the_environment_work"
    unsealed.server.stop()
    assert unsealed.server.process.returncode is not None
    unsealed.server = start_server(unsealed.tmp, *unsealed.server.args)
    endpoint = unsealed.endpoint
    assert health(endpoint) == 503
    assert status_doc(endpoint) == {
        "initialized": True, "sealed": True, "seal_type": "shamir", "shares": 5, "threshold": 3, "progress": 0,
    }
    kms = kms_client(endpoint, unsealed.init["access_key_id"], unsealed.init["secret_access_key"])
    decrypt = lambda: kms.decrypt(CiphertextBlob=unsealed.ciphertext, EncryptionContext={"test": "operator"})  # noqa: E731
    assert error_of(decrypt) == ("KeyUnavailableException", 500)
    shares = unsealed.init["shares"]
    for share in (shares[3], shares[1]):
        assert unsealed.unseal(share).returncode == 0
        assert error_of(decrypt) == ("KeyUnavailableException", 500)
    assert unsealed.unseal(shares[2]).returncode == 0
    assert health(endpoint) == 200
    reply = decrypt()
    assert reply["Plaintext"] == PLAINTEXT
    assert reply["KeyId"] == f"arn:aws:kms:{REGION}:111122223333:key/{unsealed.key_id}"
    assert error_of(lambda: kms.decrypt(CiphertextBlob=unsealed.ciphertext)) == ("InvalidCiphertextException", 400)


def test_server_log_and_cli_output_hold_no_share_or_secret(unsealed: Flow) -> None:
    logs = "".join(p.read_text(errors="replace") for p in sorted(unsealed.tmp.glob("server-*.log")))
    assert "Application startup complete" in logs  # the logs are the ones we think
    assert "DEBUG" in logs  # started with --log-level debug
    secrets = [*unsealed.init["shares"], unsealed.init["secret_access_key"]]
    secrets += [base64.b64decode(s).hex() for s in unsealed.init["shares"]]
    for secret in secrets:
        assert secret not in logs
    for text in (PLAINTEXT.decode(errors="replace"), base64.b64encode(PLAINTEXT).decode()):
        assert text not in logs
    # `operator unseal` reads the share from stdin and never echoes it back.
    echoed = "".join(unsealed.unseal_output)
    assert "Unseal progress  2/3" in echoed
    for share in unsealed.init["shares"]:
        assert share not in echoed


# -- dev mode ---------------------------------------------------------------------------------
def test_dev_server_prints_warning_and_honours_dev_credentials(tmp_path: Path) -> None:
    akid, secret = "AKIAOPERATORDEVTEST1", "operator-dev-secret-0123456789abcdefghijk"
    data = tmp_path / "dev-data"
    server = start_server(tmp_path, "--dev", "--data-dir", str(data),
                          env={"KEYHIVE_DEV_ACCESS_KEY_ID": akid, "KEYHIVE_DEV_SECRET_ACCESS_KEY": secret})
    try:
        assert health(server.endpoint) == 200
        log = server.log()
        assert "==> Keyhive dev server\n" in log
        assert "WARNING: dev mode keeps its root key only in this server's memory" in log
        assert f"Endpoint:          {server.endpoint}\n" in log
        assert f"Access key id:     {akid}\n" in log
        assert f"Secret access key: {secret}\n" in log
        assert f"export AWS_ACCESS_KEY_ID={akid} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION={REGION}\n" in log
        kms = kms_client(server.endpoint, akid, secret)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"dev")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"dev"
        other = server.client()  # conftest's default dev credentials are not this server's
        assert error_of(lambda: other.list_keys()) == ("UnrecognizedClientException", 400)
        wrong = kms_client(server.endpoint, akid, secret[:-1] + "X")
        assert error_of(lambda: wrong.list_keys()) == ("InvalidSignatureException", 400)
        status = keyhive("status", "--endpoint", server.endpoint)
        assert status.returncode == 0
        assert status.stdout == (
            "Initialized      true\nSealed           false\nSeal type        shamir\n"
            "Total shares     1\nThreshold        1\n"
        )
    finally:
        server.stop()
    # A dev data dir cannot be reused: its root key died with the process.
    rerun = subprocess.run(
        [sys.executable, "-m", "keyhive.cli.main", "server", "--dev", "--port", str(free_port()), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=30, env=clean_env(),
    )
    assert rerun.returncode == 1
    assert "was initialized by an earlier run" in rerun.stderr


def test_dev_server_generates_credentials_when_none_given(tmp_path: Path) -> None:
    env = {"KEYHIVE_DEV_ACCESS_KEY_ID": "", "KEYHIVE_DEV_SECRET_ACCESS_KEY": ""}
    server = start_server(tmp_path, "--dev", "--data-dir", str(tmp_path / "d"), env=env)
    try:
        log = server.log()
        akid = re.search(r"Access key id:     (\S+)\n", log)
        secret = re.search(r"Secret access key: (\S+)\n", log)
        assert akid and secret
        assert re.fullmatch(r"AKIA[A-Z0-9]{16}", akid.group(1))
        kms = kms_client(server.endpoint, akid.group(1), secret.group(1))
        assert kms.list_keys()["Keys"] == []
    finally:
        server.stop()
