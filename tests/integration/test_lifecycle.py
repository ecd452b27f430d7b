"""Deletion and automatic rotation when their time comes, through the real HTTP server.

Waiting periods are days long, so this module runs the real Keyhive app under
uvicorn in a thread with a life-cycle clock the test moves forward (Signature V4
still uses the wall clock).  Everything else is the production path: SQLite,
the barrier, the scheduler task, boto3 over HTTP.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import boto3
import pytest
import uvicorn
from botocore.config import Config

from keyhive.node import Node, dev_unseal
from keyhive.protocol.app import KeyhiveApp
from keyhive.storage import open_storage
from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, free_port

DAY = 86400.0


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clock = ManualClock()
        node = Node(open_storage(data_dir), account_id="111122223333")
        dev_unseal(node, access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY)
        app = KeyhiveApp(node, clock=self.clock, scheduler_interval=0.05)
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.kms = boto3.client(
            "kms", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
            aws_access_key_id=DEV_ACCESS_KEY_ID, aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
            config=Config(retries={"max_attempts": 1}),
        )

    def raw_paths(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "keyhive.db") as db:
            return [row[0] for row in db.execute("SELECT path FROM records")]

    def events(self) -> list[dict]:
        with sqlite3.connect(self.data_dir / "keyhive.db") as db:
            rows = db.execute("SELECT value FROM records WHERE path LIKE 'audit/events/%'").fetchall()
        return [json.loads(value)["event"] for (value,) in rows]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("lifecycle"))
    yield h
    h.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_key_and_material_destroyed_when_waiting_period_ends(harness: Harness) -> None:
    kms = harness.kms
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"soon unrecoverable")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    harness.clock.advance(6.9)
    time.sleep(0.2)  # several scheduler passes: not yet due
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"

    harness.clock.advance(0.2)

    def gone() -> bool:
        try:
            kms.describe_key(KeyId=key_id)
        except kms.exceptions.NotFoundException:
            return True
        return False

    wait_for(gone)
    # Nothing of the key is left but its history: the audit trail keeps what happened to it.
    assert not [p for p in harness.raw_paths()
                if (key_id in p or p.endswith("alias/doomed")) and not p.startswith("audit/")]
    deletions = [e for e in harness.events() if e["eventName"] == "DeleteKey"]
    assert [e["resources"][0]["ARN"] for e in deletions] == [f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"]
    assert deletions[0]["eventType"] == "AwsServiceEvent"
    assert deletions[0]["userIdentity"] == {"accountId": "111122223333", "invokedBy": "kms.amazonaws.com"}
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob)


def test_cancelled_deletion_survives_the_deadline(harness: Harness) -> None:
    kms = harness.kms
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=key_id)
    harness.clock.advance(8)
    time.sleep(0.2)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_automatic_rotation_on_schedule_keeps_old_ciphertexts(harness: Harness) -> None:
    kms = harness.kms
    key = kms.create_key()["KeyMetadata"]
    old_blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"before rotation")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key["KeyId"], RotationPeriodInDays=90)
    first_due = kms.get_key_rotation_status(KeyId=key["KeyId"])["NextRotationDate"].timestamp()
    assert first_due == pytest.approx(harness.clock.now + 90 * DAY, abs=1)

    harness.clock.advance(91)
    wait_for(lambda: len(kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"]) == 1)
    rotation = kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"][0]
    assert rotation["RotationType"] == "AUTOMATIC"
    assert rotation["KeyMaterialState"] == "CURRENT"

    status = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert status["NextRotationDate"].timestamp() == pytest.approx(harness.clock.now + 90 * DAY, abs=5)
    decrypted = kms.decrypt(CiphertextBlob=old_blob)
    assert decrypted["Plaintext"] == b"before rotation"
    assert decrypted["KeyId"] == key["Arn"]
    new_blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"after rotation")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=new_blob)["KeyMaterialId"] == rotation["KeyMaterialId"]


def test_disabled_key_does_not_rotate(harness: Harness) -> None:
    kms = harness.kms
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    kms.disable_key(KeyId=key_id)
    harness.clock.advance(100)
    time.sleep(0.2)
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []
