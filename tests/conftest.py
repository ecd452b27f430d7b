"""Shared fixtures: real Keyhive servers on 127.0.0.1, real AWS clients.

Servers are started once per test module (``scope="module"``) as subprocesses
running the installed ``keyhive`` command, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

DEV_ACCESS_KEY_ID = "AKIAKEYHIVETESTDEV01"
DEV_SECRET_ACCESS_KEY = "keyhive-test-dev-secret-access-key-0001"
REGION = "us-east-1"


def error_of(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int, str]:
    """The (code, HTTP status, message) of the AWS error ``call(**kwargs)`` must raise."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"].get("Message", "")


def code_of(call: Callable[..., Any], **kwargs: Any) -> str:
    return error_of(call, **kwargs)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    endpoint: str
    data_dir: Path | None
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: str = "term") -> None:
        if self.process.poll() is None:
            self.process.kill() if sig == "kill" else self.process.terminate()
            self.process.wait(timeout=15)

    def client(self, access_key_id: str = DEV_ACCESS_KEY_ID, secret: str = DEV_SECRET_ACCESS_KEY,
               region: str = REGION, service: str = "kms"):  # type: ignore[no-untyped-def]
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )


def start_server(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    health_url: str | None = None,
    ca_file: Path | None = None,
) -> RunningServer:
    """Start ``keyhive server ARGS`` and wait until it answers its status endpoint."""
    port = port or free_port()
    log_path = tmp / f"server-{port}.log"
    full_env = {**os.environ, "KEYHIVE_DEV_ACCESS_KEY_ID": DEV_ACCESS_KEY_ID,
                "KEYHIVE_DEV_SECRET_ACCESS_KEY": DEV_SECRET_ACCESS_KEY, **(env or {})}
    if "--workers" not in args:  # one process: tests of KMS behaviour need no cross-worker delays
        args = (*args, "--workers", "1")  # (tests/integration/test_workers.py covers several)
    argv = [sys.executable, "-m", "keyhive.cli.main", "server", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    scheme = "https" if "--tls-cert" in args else "http"
    endpoint = f"{scheme}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keyhive server exited early:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(health_url or endpoint + "/keyhive/v1/sys/status", timeout=1, context=context).read()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"keyhive server did not start:\n{log_path.read_text()}")
    data_dir = None
    if "--data-dir" in args:
        data_dir = Path(args[args.index("--data-dir") + 1])
    return RunningServer(endpoint, data_dir, process, log_path, list(args))


def admin_call(endpoint: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(endpoint + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def iam_call(endpoint: str, action: str, body: dict, access_key_id: str = DEV_ACCESS_KEY_ID,
             secret: str = DEV_SECRET_ACCESS_KEY) -> tuple[int, dict]:
    """One signed call to the admin API's IAM operations (``CreateUser`` ...)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{endpoint}/keyhive/v1/iam/{action}"
    request = AWSRequest(method="POST", url=url, data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(access_key_id, secret), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(url, data=request.body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(wire, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@dataclass
class User:
    """An IAM user made through the admin API, with one access key and a boto3 KMS client."""

    name: str
    account: str
    access_key_id: str
    secret: str
    kms: object

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/{self.name}"


def make_user(server: RunningServer, name: str, *, account: str | None = None,
              policies: dict[str, dict] | None = None) -> User:
    """Create ``name`` (in ``account``), give it an access key and inline identity policies."""
    extra = {"AccountId": account} if account else {}
    code, reply = iam_call(server.endpoint, "CreateUser", {"UserName": name, **extra})
    assert code == 200, reply
    code, reply = iam_call(server.endpoint, "CreateAccessKey", {"UserName": name, **extra})
    assert code == 200, reply
    key = reply["AccessKey"]
    for policy_name, document in (policies or {}).items():
        code, reply = iam_call(server.endpoint, "PutUserPolicy", {
            "UserName": name, "PolicyName": policy_name, "PolicyDocument": json.dumps(document), **extra})
        assert code == 200, reply
    return User(name, key["AccountId"], key["AccessKeyId"], key["SecretAccessKey"],
                server.client(key["AccessKeyId"], key["SecretAccessKey"]))


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One ``keyhive server --dev`` per test module, with fixed dev credentials."""
    tmp = tmp_path_factory.mktemp("dev")
    server = start_server(tmp, "--dev", "--data-dir", str(tmp / "data"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(dev_server: RunningServer):  # type: ignore[no-untyped-def]
    return dev_server.client()


@pytest.fixture
def dev_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS credential chain finds the dev credentials and nothing else (for code that
    builds its own clients, like the Encryption SDK)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DEV_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``condition()``'s first truthy value, polled every 50 ms; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s")
