"""Root operations on a Shamir-sealed server: barrier key rotation with re-wrap, and rekey."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from keyhive.blob import RECORD_HEADER
from tests.conftest import REGION, RunningServer, admin_call, start_server

PLAINTEXT = b"root operations keep this readable"
UNSEALED = ("core/", "audit/")


def keyhive(server: RunningServer, *args: str, creds: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYHIVE_ENDPOINT": server.endpoint, "AWS_DEFAULT_REGION": REGION, **creds}
    return subprocess.run([sys.executable, "-m", "keyhive.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)


def terms_on_disk(data_dir: Path) -> dict[int, int]:
    """How many barrier records of each term the database holds."""
    counts: dict[int, int] = {}
    with sqlite3.connect(data_dir / "keyhive.db") as db:
        for path, value in db.execute("SELECT path, value FROM records"):
            if not path.startswith(UNSEALED):
                term = RECORD_HEADER.unpack_from(bytes(value))[1]
                counts[term] = counts.get(term, 0) + 1
    return counts


class Installation:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.data = tmp, tmp / "data"
        self.server = start_server(tmp, "--data-dir", str(self.data))
        code, init = admin_call(self.server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
        assert code == 200, init
        self.shares: list[str] = init["shares"]
        self.current_shares = self.shares[:2]  # a quorum that unseals now (rekey replaces it)
        self.creds = {"AWS_ACCESS_KEY_ID": init["access_key_id"], "AWS_SECRET_ACCESS_KEY": init["secret_access_key"]}
        self.unseal(self.shares[:2])

    def unseal(self, shares: list[str]) -> dict[str, Any]:
        status: dict[str, Any] = {}
        for share in shares:
            _, status = admin_call(self.server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        return status

    def kms(self) -> Any:
        return self.server.client(self.creds["AWS_ACCESS_KEY_ID"], self.creds["AWS_SECRET_ACCESS_KEY"])

    def restart(self) -> None:
        self.server.stop()
        self.server = start_server(self.tmp, "--data-dir", str(self.data))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("root"))
    yield installation
    installation.server.stop()


def test_rotate_then_rewrap_retires_the_old_term(site: Installation) -> None:
    kms = site.kms()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    old = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
    assert set(terms_on_disk(site.data)) == {1}

    rotated = keyhive(site.server, "operator", "rotate", creds=site.creds)
    assert rotated.returncode == 0, rotated.stderr
    assert "Active barrier key term: 2 (oldest still in use: 1)" in rotated.stdout
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "after", "TagValue": "rotation"}])  # a write under term 2
    assert terms_on_disk(site.data).keys() == {1, 2}
    new = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == PLAINTEXT
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == PLAINTEXT

    rewrapped = keyhive(site.server, "operator", "rotate", "--rewrap", creds=site.creds)
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert "Retired terms: [1, 2]" in rewrapped.stdout or "retired terms: [1, 2]" in rewrapped.stdout
    assert set(terms_on_disk(site.data)) == {3}
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == PLAINTEXT

    site.restart()  # the retired keyring is what the next unseal loads
    assert site.unseal(site.shares[1:])["sealed"] is False
    kms = site.kms()
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == PLAINTEXT
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "after", "TagValue": "rotation"}]


def test_rotation_needs_an_admin(site: Installation) -> None:
    unsigned = keyhive(site.server, "operator", "rotate", creds={"AWS_ACCESS_KEY_ID": "AKIANOBODY0000000000",
                                                                 "AWS_SECRET_ACCESS_KEY": "x" * 40})
    assert unsigned.returncode == 1 and "UnrecognizedClientException" in unsigned.stderr


def test_rekey_replaces_the_shares_and_keeps_every_key(site: Installation) -> None:
    kms = site.kms()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]

    too_few = keyhive(site.server, "operator", "rekey", "--shares", "5", "--threshold", "3", "--json",
                      creds=site.creds, stdin=site.shares[0] + "\n")
    assert too_few.returncode == 1 and "needs 2 distinct current shares" in too_few.stderr
    forged = keyhive(site.server, "operator", "rekey", "--json", creds=site.creds,
                     stdin=site.shares[0] + "\n" + site.shares[0][:-4] + "AAA=\n")
    assert forged.returncode == 1 and "Rekey refused" in forged.stderr

    done = keyhive(site.server, "operator", "rekey", "--shares", "5", "--threshold", "3", "--json",
                   creds=site.creds, stdin="\n".join(site.shares[1:]) + "\n")
    assert done.returncode == 0, done.stderr
    new_shares = json.loads(done.stdout)["shares"]
    site.current_shares = new_shares[:3]
    assert len(new_shares) == 5 and not set(new_shares) & set(site.shares)
    for share in site.shares:
        assert share not in done.stderr

    site.restart()
    _, status = admin_call(site.server.endpoint, "GET", "/keyhive/v1/sys/status")
    assert (status["shares"], status["threshold"]) == (5, 3)
    code, failed = admin_call(site.server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": site.shares[0]})
    for share in site.shares[1:]:  # the old shares, as many as the new threshold: they no longer open it
        code, failed = admin_call(site.server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    assert (code, failed["__type"]) == (400, "ValidationException") and "progress was reset" in failed["message"]
    assert site.unseal(new_shares[2:])["sealed"] is False
    assert site.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT  # the root key never changed


def test_backup_under_load_restores_elsewhere(site: Installation, tmp_path: Path) -> None:
    import threading

    kms = site.kms()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
    stop, made = threading.Event(), []

    def writer() -> None:  # keeps writing while the backup is taken
        client = site.kms()
        while not stop.is_set():
            made.append(client.create_key(Description="under load")["KeyMetadata"]["KeyId"])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = keyhive(site.server, "operator", "backup", str(tmp_path / "site.backup"), creds=site.creds)
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "site.backup").read_bytes()
    assert data.startswith(b"KEYHIVE-BACKUP 1\n")
    for secret in (PLAINTEXT, site.creds["AWS_SECRET_ACCESS_KEY"].encode(), *[s.encode() for s in site.shares]):
        assert secret not in data

    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    refused = keyhive(site.server, "operator", "restore", "--data-dir", str(tmp_path / "x"), str(damaged), creds={})
    assert refused.returncode == 1 and "checksum" in refused.stderr
    occupied = keyhive(site.server, "operator", "restore", "--data-dir", str(site.data), str(tmp_path / "site.backup"),
                       creds={})
    assert occupied.returncode == 1 and "not empty" in occupied.stderr

    restored = tmp_path / "restored"
    ok = keyhive(site.server, "operator", "restore", "--data-dir", str(restored), str(tmp_path / "site.backup"), creds={})
    assert ok.returncode == 0, ok.stderr
    elsewhere = start_server(tmp_path, "--data-dir", str(restored))
    try:
        _, status = admin_call(elsewhere.endpoint, "GET", "/keyhive/v1/sys/status")
        assert status["sealed"] is True  # a backup is useless without the seal
        shares = site.current_shares
        for share in shares:
            _, status = admin_call(elsewhere.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        assert status["sealed"] is False
        client = elsewhere.client(site.creds["AWS_ACCESS_KEY_ID"], site.creds["AWS_SECRET_ACCESS_KEY"])
        assert client.decrypt(CiphertextBlob=before)["Plaintext"] == PLAINTEXT
        restored_keys = {k["KeyId"] for k in client.list_keys(Limit=1000)["Keys"]}
        assert key_id in restored_keys and made[0] in restored_keys  # a consistent point during the load
        verified = subprocess.run([sys.executable, "-m", "keyhive.cli.main", "audit", "verify", "--data-dir",
                                   str(restored)], capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0, verified.stderr
    finally:
        elsewhere.stop()


def test_barrier_rotates_itself_when_its_interval_is_up(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--dev", "--data-dir", str(tmp_path / "data"), "--scheduler-interval", "0.1",
                          "--barrier-rotation-days", str(0.5 / 86400))  # half a second
    try:
        kms = server.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
        import time

        deadline = time.monotonic() + 15
        while max(terms_on_disk(tmp_path / "data")) < 3:  # rotated twice, old records re-wrapped
            assert time.monotonic() < deadline, terms_on_disk(tmp_path / "data")
            kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "t", "TagValue": str(time.monotonic())}])
            time.sleep(0.2)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
    finally:
        server.stop()
    assert "rotated: its interval was up" in server.log()
