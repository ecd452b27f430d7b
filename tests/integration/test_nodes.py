"""Two Keyhive nodes on one PostgreSQL database: what one node changes, the other sees; failures of a node
or of PostgreSQL itself lose nothing acknowledged.

One database and two Shamir-sealed nodes (``--workers 1`` each) serve the whole module; each node is
unsealed on its own with the same shares.  Every call is a real boto3 call on 127.0.0.1.

- A change made through node A (disable, enable, schedule and cancel deletion, a denying key policy,
  a grant, an alias, an on-demand rotation) takes effect on node B within ``CHANGE_DELAY_SECONDS``.
  Node B is made to cache the old state first, so each check fails if the change feed does not
  reach B (an alias is read from storage on every call, so that check guards a future cache).
- Both nodes' audit trails land in the one database and verify as one.
- Node A is killed (SIGKILL) under load: B never fails, every acknowledged ciphertext decrypts,
  and A, restarted on its port and unsealed again, rejoins.
- PostgreSQL is shut down under the running nodes: once it is back both nodes serve again by
  themselves and hear each other's changes; calls during the outage must fail fast with a retryable
  AWS error (once they hung: every "changes unknown" reloaded from storage on the event loop).

Clients never retry (``total_max_attempts``: botocore's legacy ``max_attempts`` counts retries, so
``max_attempts=1`` would still retry once and could hide a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries.standard import RetryContext, StandardRetryConditions

from keyhive.storage.base import CHANGE_DELAY_SECONDS
from tests.conftest import (
    REGION,
    RunningServer,
    admin_call,
    code_of,
    iam_call,
    start_server,
    wait_for,
)
from tests.postgres import PgCluster, cluster, require_psycopg

require_psycopg()  # before importing psycopg
import psycopg

LOAD_THREADS = 4
LOAD_SECONDS = 4.0
FAIL_FAST_SECONDS = 10.0  # a call while PostgreSQL is away must fail well within this
RECOVERY_SECONDS = 20.0  # after PostgreSQL is back, calls succeed again within this
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)  # no retry hides a failure


@dataclass
class Cluster:
    """Two nodes on one database; ``a`` is replaced when a test restarts it."""

    pg: PgCluster
    url: str
    tmp: Path
    shares: list[str]
    access_key_id: str
    secret: str
    account: str
    a: RunningServer
    b: RunningServer
    stopped: list[RunningServer] = field(default_factory=list)

    @property
    def admin_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/admin"

    def kms(self, node: RunningServer, access_key_id: str | None = None, secret: str | None = None) -> Any:
        return boto3.client("kms", endpoint_url=node.endpoint, region_name=REGION, config=CLIENT_CONFIG,
                            aws_access_key_id=access_key_id or self.access_key_id,
                            aws_secret_access_key=secret or self.secret)

    def restart_a(self, shares: list[str]) -> None:
        """Start node A again on its port and storage, and unseal it with ``shares``."""
        self.a = start_node(self.tmp, self.url, shares, port=int(self.a.endpoint.rsplit(":", 1)[1]))


def start_node(tmp: Path, url: str, shares: list[str], port: int | None = None) -> RunningServer:
    node = start_server(tmp, "--storage", url, port=port)
    try:
        unseal(node, shares)
    except BaseException:
        node.stop()
        raise
    return node


def unseal(node: RunningServer, shares: list[str]) -> None:
    status: dict[str, Any] = {}
    for share in shares:
        code, status = admin_call(node.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        assert code == 200, status
    assert status["sealed"] is False, status


@pytest.fixture(scope="module")
def nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pg = cluster(request.config)
    tmp = tmp_path_factory.mktemp("nodes")
    url = pg.new_database()
    a = start_server(tmp, "--storage", url)
    running = [a]
    try:
        code, init = admin_call(a.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
        assert code == 200, init
        unseal(a, init["shares"][:2])
        b = start_node(tmp, url, init["shares"][1:])  # any quorum unseals any node
        running.append(b)
        both = Cluster(pg, url, tmp, init["shares"], init["access_key_id"], init["secret_access_key"], "", a, b)
        both.account = both.kms(a).create_key()["KeyMetadata"]["AWSAccountId"]
        yield both
        running = [both.a, both.b, *both.stopped]
    finally:
        for node in running:
            node.stop()
    for node in running:
        assert "Traceback" not in node.log(), node.log()[-3000:]


def propagate() -> None:
    """Wait the documented bound for a change to reach every node."""
    time.sleep(CHANGE_DELAY_SECONDS)


def new_key(nodes: Cluster, **kwargs: Any) -> str:
    return str(nodes.kms(nodes.a).create_key(**kwargs)["KeyMetadata"]["KeyId"])


def encrypts(kms: Any, key_id: str) -> bool:
    kms.encrypt(KeyId=key_id, Plaintext=b"cached on B")
    return True


# -- a change made through A takes effect on B ---------------------------------------------------
def test_disable_and_enable_reach_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    key_id = new_key(nodes)
    assert encrypts(b, key_id)  # B caches the key as enabled

    a.disable_key(KeyId=key_id)
    propagate()
    assert code_of(b.encrypt, KeyId=key_id, Plaintext=b"x") == "DisabledException"
    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"

    a.enable_key(KeyId=key_id)
    propagate()
    assert encrypts(b, key_id)
    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_scheduled_and_cancelled_deletion_reach_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    key_id = new_key(nodes)
    assert encrypts(b, key_id)

    a.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    propagate()
    assert code_of(b.encrypt, KeyId=key_id, Plaintext=b"x") == "KMSInvalidStateException"
    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"

    a.cancel_key_deletion(KeyId=key_id)  # a cancelled key comes back disabled, as in AWS
    propagate()
    assert code_of(b.encrypt, KeyId=key_id, Plaintext=b"x") == "DisabledException"
    a.enable_key(KeyId=key_id)
    propagate()
    assert encrypts(b, key_id)


def test_a_denying_key_policy_reaches_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    key_id = new_key(nodes)
    default = a.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    assert encrypts(b, key_id)

    document = json.loads(default)
    document["Statement"].append({"Sid": "NoEncryptForTheAdmin", "Effect": "Deny",
                                  "Principal": {"AWS": nodes.admin_arn}, "Action": "kms:Encrypt", "Resource": "*"})
    a.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(document))
    propagate()
    assert code_of(b.encrypt, KeyId=key_id, Plaintext=b"x") == "AccessDeniedException"

    a.put_key_policy(KeyId=key_id, PolicyName="default", Policy=default)  # still allowed: undo
    propagate()
    assert encrypts(b, key_id)


def test_a_new_user_and_a_grant_reach_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    key_id = new_key(nodes)
    admin = {"access_key_id": nodes.access_key_id, "secret": nodes.secret}
    code, reply = iam_call(nodes.a.endpoint, "CreateUser", {"UserName": "grantee"}, **admin)
    assert code == 200, reply
    code, reply = iam_call(nodes.a.endpoint, "CreateAccessKey", {"UserName": "grantee"}, **admin)
    assert code == 200, reply
    user_key = reply["AccessKey"]
    arn = f"arn:aws:iam::{nodes.account}:user/grantee"
    propagate()  # the user's access key, made on A, authenticates on B
    grantee = nodes.kms(nodes.b, user_key["AccessKeyId"], user_key["SecretAccessKey"])
    assert code_of(grantee.encrypt, KeyId=key_id, Plaintext=b"x") == "AccessDeniedException"  # B caches: no grant

    grant = a.create_grant(KeyId=key_id, GranteePrincipal=arn, Operations=["Encrypt", "Decrypt"])
    propagate()
    blob = grantee.encrypt(KeyId=key_id, Plaintext=b"granted")["CiphertextBlob"]
    assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"granted"

    a.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
    propagate()
    assert code_of(grantee.encrypt, KeyId=key_id, Plaintext=b"x") == "AccessDeniedException"


def test_alias_create_and_update_reach_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    first, second = new_key(nodes), new_key(nodes)
    alias = "alias/shared-by-both-nodes"
    assert encrypts(b, first) and encrypts(b, second)
    assert code_of(b.encrypt, KeyId=alias, Plaintext=b"x") == "NotFoundException"

    a.create_alias(AliasName=alias, TargetKeyId=first)
    propagate()
    assert b.encrypt(KeyId=alias, Plaintext=b"x")["KeyId"].endswith(first)

    a.update_alias(AliasName=alias, TargetKeyId=second)
    propagate()
    blob = b.encrypt(KeyId=alias, Plaintext=b"to the new target")["CiphertextBlob"]
    assert b.decrypt(CiphertextBlob=blob)["KeyId"].endswith(second)


def test_an_on_demand_rotation_reaches_the_other_node(nodes: Cluster) -> None:
    a, b = nodes.kms(nodes.a), nodes.kms(nodes.b)
    key_id = new_key(nodes)
    old_blob = b.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    old = b.generate_data_key(KeyId=key_id, NumberOfBytes=32)["KeyMaterialId"]  # B caches version 1
    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == old

    a.rotate_key_on_demand(KeyId=key_id)
    current = [r for r in a.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
               if r["KeyMaterialState"] == "CURRENT"]
    new = current[0]["KeyMaterialId"]
    assert new != old
    propagate()

    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == new
    rotations = b.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [(r["KeyMaterialId"], r["RotationType"]) for r in rotations] == [(new, "ON_DEMAND")]
    blob = b.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert b.generate_data_key(KeyId=key_id, NumberOfBytes=32)["KeyMaterialId"] == new
    for kms in (a, b):
        opened = kms.decrypt(CiphertextBlob=blob)
        assert (opened["Plaintext"], opened["KeyMaterialId"]) == (b"after", new)
        opened = kms.decrypt(CiphertextBlob=old_blob)
        assert (opened["Plaintext"], opened["KeyMaterialId"]) == (b"before", old)


# -- one audit trail ---------------------------------------------------------------------------
def keyhive(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    run = subprocess.run([sys.executable, "-m", "keyhive.cli.main", *args], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def audit_writers(url: str, tmp: Path) -> dict[str, set[str]]:
    """Each writer of the exported trail, with the event names it recorded."""
    export = tmp / "trail.jsonl"
    run = keyhive("audit", "export", "--storage", url, "-o", str(export))
    assert run.returncode == 0, run.stderr
    writers: dict[str, set[str]] = {}
    for line in export.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "record":
            writers.setdefault(record["writer"], set()).add(record["event"]["eventName"])
    return writers


def test_both_nodes_audit_into_one_trail_that_verifies(nodes: Cluster, tmp_path: Path) -> None:
    key_id = new_key(nodes, Description="audited on both nodes")
    blob = nodes.kms(nodes.b).encrypt(KeyId=key_id, Plaintext=b"audited")["CiphertextBlob"]
    nodes.kms(nodes.a).decrypt(CiphertextBlob=blob)

    verified = keyhive("audit", "verify", "--storage", nodes.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit trail verified" in verified.stdout

    run = keyhive("audit", "events", "--storage", nodes.url, "--json", "--max-items", "1000")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert {"Init", "Unseal", "CreateKey", "Encrypt", "Decrypt"} <= {e["eventName"] for e in events}

    writers = audit_writers(nodes.url, tmp_path)
    assert len(writers) >= 2, writers
    # B's writer recorded the Encrypt, A's the CreateKey and the Decrypt: two writers of KMS calls.
    assert sum(1 for names in writers.values() if {"Encrypt", "Decrypt"} & names) >= 2, writers


# -- kill -9 under load --------------------------------------------------------------------------
def answers(node: RunningServer) -> bool:
    try:
        urllib.request.urlopen(node.endpoint + "/keyhive/v1/sys/status", timeout=1).read()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Load:
    """What the clients saw: every acknowledged (ciphertext, plaintext), and the failures per node."""

    acknowledged: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (node, blob, plaintext)
    failures: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(nodes: Cluster, key_id: str, stop: threading.Event, load: Load, number: int) -> None:
    clients = {"a": nodes.kms(nodes.a), "b": nodes.kms(nodes.b)}
    i = 0
    while not stop.is_set():
        name = "ab"[(i + number) % 2]
        i += 1
        try:
            if i % 4 < 2:
                plaintext = f"thread {number} call {i}".encode()
                blob = clients[name].encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]
            else:
                reply = clients[name].generate_data_key(KeyId=key_id, KeySpec="AES_256")
                blob, plaintext = reply["CiphertextBlob"], reply["Plaintext"]
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever its kind
            with load.lock:
                load.failures[name].append(repr(exc))
            if name == "a":
                time.sleep(0.01)  # A is down: do not spin
            continue
        with load.lock:
            load.acknowledged.append((name, blob, plaintext))


def decrypt_all(nodes: Cluster, node: RunningServer, acknowledged: list[tuple[str, bytes, bytes]]) -> None:
    def check(part: list[tuple[str, bytes, bytes]]) -> None:
        kms = nodes.kms(node)
        for _, blob, plaintext in part:
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext

    parts = [acknowledged[i::LOAD_THREADS] for i in range(LOAD_THREADS)]
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        for done in [pool.submit(check, part) for part in parts]:
            done.result()


def test_kill_9_of_one_node_under_load_loses_nothing_and_it_rejoins(nodes: Cluster) -> None:
    key_id = new_key(nodes, Description="under load")
    load, stop = Load(), threading.Event()
    threads = [threading.Thread(target=run_load, args=(nodes, key_id, stop, load, n)) for n in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_SECONDS / 2)
        with load.lock:
            at_kill = {name: sum(1 for n, _, _ in load.acknowledged if n == name) for name in "ab"}
        nodes.a.stop("kill")  # SIGKILL to the supervisor; its worker dies with it (PR_SET_PDEATHSIG)
        killed = nodes.a
        nodes.stopped.append(killed)
        wait_for(lambda: not answers(killed), 5)
        time.sleep(LOAD_SECONDS / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    by_node = {name: sum(1 for n, _, _ in load.acknowledged if n == name) for name in "ab"}
    assert at_kill["a"] > 0 and at_kill["b"] > 0, at_kill  # both nodes served the load
    assert by_node["b"] - at_kill["b"] >= at_kill["b"] // 4, (at_kill, by_node)  # B kept serving after the kill
    assert load.failures["b"] == [], load.failures["b"][:5]
    assert load.failures["a"], "calls to the killed node should have failed"

    decrypt_all(nodes, nodes.b, load.acknowledged)  # nothing either node acknowledged is lost

    nodes.restart_a([nodes.shares[0], nodes.shares[2]])  # same port, same storage, another quorum
    nodes.stopped.remove(killed)
    decrypt_all(nodes, nodes.a, load.acknowledged)
    a = nodes.kms(nodes.a)
    blob = a.encrypt(KeyId=key_id, Plaintext=b"rejoined")["CiphertextBlob"]
    assert nodes.kms(nodes.b).decrypt(CiphertextBlob=blob)["Plaintext"] == b"rejoined"
    a.disable_key(KeyId=key_id)  # the restarted node's changes reach B again
    propagate()
    assert code_of(nodes.kms(nodes.b).encrypt, KeyId=key_id, Plaintext=b"x") == "DisabledException"

    verified = keyhive("audit", "verify", "--storage", nodes.url)  # the killed writer's chain included
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- PostgreSQL restarted under the nodes ------------------------------------------------------
def listeners(nodes: Cluster) -> int:
    """Connections of this database that are listening for changes (their last statement was LISTEN)."""
    database = nodes.url.rsplit("/", 1)[1]
    with psycopg.connect(nodes.pg.url(database), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%'",
                           (database,)).fetchone()
    assert row is not None
    return int(row[0])


def serving(clients: dict[str, Any], key_id: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            for kms in clients.values():
                kms.encrypt(KeyId=key_id, Plaintext=b"after the restart")
        except (ClientError, BotoCoreError):
            return False
        return True
    return check


def test_after_a_postgres_restart_both_nodes_recover_by_themselves(nodes: Cluster) -> None:
    key_id = new_key(nodes, Description="through a database restart")
    clients = {"a": nodes.kms(nodes.a), "b": nodes.kms(nodes.b)}
    blob = clients["b"].encrypt(KeyId=key_id, Plaintext=b"before the restart")["CiphertextBlob"]
    listening = listeners(nodes)
    assert listening >= 2

    nodes.pg.pause()
    try:
        time.sleep(2)
        for node in (nodes.a, nodes.b):
            assert node.process.poll() is None  # no crash
    finally:
        nodes.pg.resume()

    wait_for(serving(clients, key_id), RECOVERY_SECONDS)  # without restarting Keyhive
    for kms in clients.values():
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before the restart"
    wait_for(lambda: listeners(nodes) >= listening, RECOVERY_SECONDS)  # each change feed listens again

    assert encrypts(clients["b"], key_id)  # B caches the key again
    clients["a"].disable_key(KeyId=key_id)
    propagate()
    assert code_of(clients["b"].encrypt, KeyId=key_id, Plaintext=b"x") == "DisabledException"


def retryable(kms: Any, error: ClientError) -> bool:
    """Whether botocore's standard retry mode would retry this error of ``kms``."""
    status = error.response["ResponseMetadata"]["HTTPStatusCode"]

    class Response:
        status_code = status

    context = RetryContext(attempt_number=1, parsed_response=error.response, http_response=Response(),
                           operation_model=kms.meta.service_model.operation_model(error.operation_name))
    return bool(StandardRetryConditions().is_retryable(context))


def test_requests_during_a_postgres_outage_fail_fast_with_a_retryable_error(nodes: Cluster) -> None:
    key_id = new_key(nodes, Description="during a database outage")
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=FAIL_FAST_SECONDS)
    clients = {name: boto3.client("kms", endpoint_url=node.endpoint, region_name=REGION, config=config,
                                  aws_access_key_id=nodes.access_key_id, aws_secret_access_key=nodes.secret)
               for name, node in (("a", nodes.a), ("b", nodes.b))}
    for kms in clients.values():
        assert encrypts(kms, key_id)  # both nodes hold the key in cache

    nodes.pg.pause()
    try:
        for name, kms in clients.items():
            started = time.monotonic()
            outcome: Exception | None = None
            try:
                kms.encrypt(KeyId=key_id, Plaintext=b"during the outage")
            except (ClientError, BotoCoreError) as exc:
                outcome = exc
            elapsed = time.monotonic() - started
            assert isinstance(outcome, ClientError), f"node {name}: no AWS error after {elapsed:.1f} s: {outcome!r}"
            error = outcome.response
            assert error["Error"]["Code"] == "DependencyTimeoutException", (name, error)
            assert 500 <= error["ResponseMetadata"]["HTTPStatusCode"] < 600, (name, error)
            assert retryable(kms, outcome), (name, error)
            assert elapsed < FAIL_FAST_SECONDS, (name, elapsed)
        for node in (nodes.a, nodes.b):
            assert node.process.poll() is None  # no crash
            assert answers(node)  # no hang: the port still answers
    finally:
        nodes.pg.resume()
        try:  # leave the nodes serving for whatever runs next
            wait_for(serving(clients, key_id), RECOVERY_SECONDS + FAIL_FAST_SECONDS)
        except AssertionError:
            pass
