"""Worker processes: one port, several processes, one seal state, caches kept in step.

Requests go out on fresh connections (urllib does not keep them alive), so the
kernel spreads them over the workers; the audit trail names the writer (the
worker) of every event, which shows that each worker took part.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import REGION, RunningServer, admin_call, free_port, start_server, wait_for

WORKERS = 2
FRESH_CALLS = 40  # fresh connections per check: the chance that one worker gets none is 2 * 2**-40


def kms_call(server: RunningServer, creds: tuple[str, str], operation: str, body: dict[str, Any]) -> tuple[int, dict]:
    """One signed KMS call on a connection of its own."""
    request = AWSRequest(method="POST", url=server.endpoint + "/", data=json.dumps(body).encode(), headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{operation}"})
    SigV4Auth(Credentials(*creds), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(wire, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def health_codes(server: RunningServer, count: int = FRESH_CALLS) -> set[int]:
    codes = set()
    for _ in range(count):
        try:
            with urllib.request.urlopen(server.endpoint + "/keyhive/health", timeout=10) as response:
                codes.add(response.status)
        except urllib.error.HTTPError as exc:
            codes.add(exc.code)
    return codes


def worker_pids(server: RunningServer) -> set[int]:
    """The supervisor's living children, from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == server.process.pid and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A two-worker server initialized with 3-of-5 shares, sealed."""
    tmp = tmp_path_factory.mktemp("workers")
    server = start_server(tmp, "--data-dir", str(tmp / "data"), "--workers", str(WORKERS),
                          "--scheduler-interval", "0.5")
    code, reply = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 5, "threshold": 3})
    assert code == 200, reply
    creds = (reply["access_key_id"], reply["secret_access_key"])
    yield {"server": server, "shares": reply["shares"], "creds": creds, "tmp": tmp}
    server.stop()


def unseal(cluster: dict[str, Any]) -> None:
    for share in cluster["shares"][:3]:  # each share on a fresh connection: any worker may take it
        code, reply = admin_call(cluster["server"].endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        assert code == 200, reply


def seal(cluster: dict[str, Any]) -> None:
    server = cluster["server"]
    request = AWSRequest(method="POST", url=server.endpoint + "/keyhive/v1/sys/seal", data=b"{}",
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(*cluster["creds"]), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers.items()), method="POST")
    with urllib.request.urlopen(wire, timeout=10) as response:
        assert response.status == 200


def test_the_server_runs_the_workers_it_was_asked_for(cluster: dict[str, Any]) -> None:
    assert len(worker_pids(cluster["server"])) == WORKERS


def test_unseal_progress_is_shared_and_a_quorum_unseals_every_worker(cluster: dict[str, Any]) -> None:
    server = cluster["server"]
    assert health_codes(server) == {503}
    code, reply = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": cluster["shares"][0]})
    assert code == 200 and reply["progress"] == 1
    progress = set()
    for _ in range(FRESH_CALLS):
        code, status = admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")
        progress.add(status["progress"])
    assert progress == {1}  # every worker counted the share, whichever took it
    for share in cluster["shares"][1:3]:
        admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    assert health_codes(server) == {200}  # at once: the last Unseal answered after every worker had the key


def test_a_refused_share_resets_the_progress_on_every_worker(cluster: dict[str, Any]) -> None:
    server = cluster["server"]
    unseal(cluster)
    seal(cluster)
    assert health_codes(server) == {503}
    admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": cluster["shares"][3]})
    code, reply = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": "not-a-share"})
    assert code == 400 and "progress was reset" in reply["message"]
    time.sleep(0.1)  # a reset is passed on without waiting for the others
    for _ in range(FRESH_CALLS):
        assert admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]["progress"] == 0
    for share in cluster["shares"][:2]:  # two more shares are not a quorum, wherever they land
        admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    assert health_codes(server) == {503}
    admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": cluster["shares"][2]})
    assert health_codes(server) == {200}


def test_seal_seals_every_worker(cluster: dict[str, Any]) -> None:
    server = cluster["server"]
    unseal(cluster)
    seal(cluster)
    assert health_codes(server) == {503}
    unseal(cluster)
    assert health_codes(server) == {200}


def test_every_worker_serves_and_writes_its_own_audit_chain(cluster: dict[str, Any]) -> None:
    server, creds = cluster["server"], cluster["creds"]
    unseal(cluster)
    code, reply = kms_call(server, creds, "CreateKey", {})
    assert code == 200, reply
    key_id = reply["KeyMetadata"]["KeyId"]
    for _ in range(FRESH_CALLS):
        code, reply = kms_call(server, creds, "Encrypt", {"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode()})
        assert code == 200, reply
    out = subprocess.run([sys.executable, "-m", "keyhive.cli.main", "audit", "export", "--data-dir",
                          str(cluster["tmp"] / "data")], capture_output=True, text=True, check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    writers = {r["writer"] for r in records if r["type"] == "record" and r["event"]["eventName"] == "Encrypt"}
    assert len(writers) == WORKERS, writers
    verify = subprocess.run([sys.executable, "-m", "keyhive.cli.main", "audit", "verify", "--data-dir",
                             str(cluster["tmp"] / "data")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_change_made_on_one_worker_holds_on_every_worker(cluster: dict[str, Any]) -> None:
    server, creds = cluster["server"], cluster["creds"]
    unseal(cluster)
    code, reply = kms_call(server, creds, "CreateKey", {})
    key_id = reply["KeyMetadata"]["KeyId"]
    plaintext = base64.b64encode(b"cached everywhere").decode()
    for _ in range(FRESH_CALLS):  # every worker caches the key as Enabled
        assert kms_call(server, creds, "Encrypt", {"KeyId": key_id, "Plaintext": plaintext})[0] == 200
    assert kms_call(server, creds, "DisableKey", {"KeyId": key_id})[0] == 200
    time.sleep(0.25)  # the documented bound (keyhive.storage.base.CHANGE_DELAY_SECONDS)
    for _ in range(FRESH_CALLS):
        code, reply = kms_call(server, creds, "Encrypt", {"KeyId": key_id, "Plaintext": plaintext})
        assert reply.get("__type") == "DisabledException", reply
    assert kms_call(server, creds, "EnableKey", {"KeyId": key_id})[0] == 200
    time.sleep(0.25)
    for _ in range(FRESH_CALLS):
        assert kms_call(server, creds, "Encrypt", {"KeyId": key_id, "Plaintext": plaintext})[0] == 200


def test_a_barrier_rotation_on_one_worker_is_used_by_every_worker(cluster: dict[str, Any]) -> None:
    server, creds = cluster["server"], cluster["creds"]
    unseal(cluster)
    request = AWSRequest(method="POST", url=server.endpoint + "/keyhive/v1/sys/rotate", data=b"{}",
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(*creds), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers.items()), method="POST")
    with urllib.request.urlopen(wire, timeout=10) as response:
        assert response.status == 200
    for i in range(FRESH_CALLS):  # keys made by each worker after the rotation are readable by every worker
        code, reply = kms_call(server, creds, "CreateKey", {"Description": f"after rotation {i}"})
        assert code == 200, reply
        code, reply = kms_call(server, creds, "DescribeKey", {"KeyId": reply["KeyMetadata"]["KeyId"]})
        assert code == 200, reply


def test_a_killed_worker_is_replaced_and_unsealed_without_help(cluster: dict[str, Any]) -> None:
    server, creds = cluster["server"], cluster["creds"]
    unseal(cluster)
    code, reply = kms_call(server, creds, "CreateKey", {})
    key_id = reply["KeyMetadata"]["KeyId"]
    before = worker_pids(server)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(server)) == WORKERS and victim not in worker_pids(server))
    wait_for(lambda: health_codes(server, 10) == {200})
    assert health_codes(server) == {200}
    for _ in range(FRESH_CALLS):
        code, reply = kms_call(server, creds, "Encrypt", {"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode()})
        assert code == 200, reply
    assert "died (signal SIGKILL); starting another" in server.log()


def test_killing_the_supervisor_stops_every_worker(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, "--dev", "--data-dir", str(tmp_path / "data"), "--workers", str(WORKERS), port=port)
    workers = worker_pids(server)
    assert len(workers) == WORKERS
    server.stop("kill")

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/status").exists() and "zombie" in Path(f"/proc/{pid}/status").read_text()

    wait_for(lambda: all(gone(pid) for pid in workers), timeout=5)
    restarted = start_server(tmp_path, "--dev", "--data-dir", str(tmp_path / "data2"), "--workers", "1", port=port)
    restarted.stop()
