"""Offline commands on PostgreSQL storage: ``keyhive audit ... --storage URL`` reads (and verifies) the trail
straight from the database, and ``keyhive operator restore --storage URL`` restores a backup into an empty one.

One Shamir-sealed server runs on the session's throwaway PostgreSQL for the whole module; a second one
starts on the restored database.  Every URL given to the CLI carries a password (trust authentication
ignores it), so every test also checks that no output shows it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, RunningServer, admin_call, start_server
from tests.postgres import SUPERUSER, PgCluster, cluster, require_psycopg

require_psycopg()  # before importing psycopg
import psycopg

PASSWORD = "pg-Pa55word-never-shown"
PLAINTEXT = b"made before the backup, decrypted after the restore"


def with_password(url: str) -> str:
    return url.replace(f"//{SUPERUSER}@", f"//{SUPERUSER}:{PASSWORD}@", 1)


def keyhive(*args: str, creds: dict[str, str] | None = None, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """The ``keyhive`` CLI in a subprocess; its output must never show the URL's password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    env.update({"AWS_DEFAULT_REGION": REGION, **(creds or {})})
    if endpoint:
        env["KEYHIVE_ENDPOINT"] = endpoint
    run = subprocess.run([sys.executable, "-m", "keyhive.cli.main", *args], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert PASSWORD not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run


@dataclass
class Site:
    url: str  # with the password
    server: RunningServer
    shares: list[str]
    creds: dict[str, str]
    key_id: str
    blob: bytes  # a ciphertext made before the backup
    backup: Path

    def kms(self, server: RunningServer | None = None) -> Any:
        return (server or self.server).client(self.creds["AWS_ACCESS_KEY_ID"], self.creds["AWS_SECRET_ACCESS_KEY"])


def unseal(server: RunningServer, shares: list[str]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for share in shares:
        _, status = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    return status


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> PgCluster:
    return cluster(request.config)


@pytest.fixture(scope="module")
def site(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An initialized, unsealed server on PostgreSQL, some audited calls (one refused), and a backup of it."""
    tmp = tmp_path_factory.mktemp("pg-offline")
    url = with_password(pg.new_database())
    server = start_server(tmp, "--storage", url)
    try:
        code, init = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
        assert code == 200, init
        assert unseal(server, init["shares"][:2])["sealed"] is False
        creds = {"AWS_ACCESS_KEY_ID": init["access_key_id"], "AWS_SECRET_ACCESS_KEY": init["secret_access_key"]}
        kms = server.client(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
        key_id = kms.create_key(Description="offline")["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
        with pytest.raises(ClientError):
            kms.decrypt(CiphertextBlob=b"not a ciphertext" * 4)  # a refusal, audited with its error code
        backup = tmp / "site.backup"
        made = keyhive("operator", "backup", str(backup), creds=creds, endpoint=server.endpoint)
        assert made.returncode == 0, made.stderr
        yield Site(url, server, init["shares"], creds, key_id, blob, backup)
    finally:
        server.stop()
    assert PASSWORD not in server.log()


def events(*source: str) -> list[dict[str, Any]]:
    run = keyhive("audit", "events", *source, "--json", "--max-items", "1000")
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_events_export_and_public_key_read_the_database_offline(site: Site, tmp_path: Path) -> None:
    found = events("--storage", site.url)
    names = [e["eventName"] for e in found]
    assert {"Init", "Unseal", "CreateKey", "Encrypt", "Decrypt", "Backup"} <= set(names), names
    encrypt = next(e for e in found if e["eventName"] == "Encrypt")
    assert any(site.key_id in r["ARN"] for r in encrypt["resources"])
    assert any(e["eventName"] == "Decrypt" and "errorCode" in e for e in found)
    assert events("--storage", site.url, "--errors-only")  # the filters work on this source too

    export = tmp_path / "trail.jsonl"
    run = keyhive("audit", "export", "--storage", site.url, "-o", str(export))
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert lines[0]["type"] == "header" and sum(line["type"] == "record" for line in lines) >= len(found)

    public_key = keyhive("audit", "public-key", "--storage", site.url)
    assert public_key.returncode == 0, public_key.stderr
    assert public_key.stdout.strip() == lines[0]["publicKey"]
    assert len(base64.b64decode(public_key.stdout)) == 32  # Ed25519
    trusted = tmp_path / "audit.pub"
    trusted.write_text(public_key.stdout)
    verified = keyhive("audit", "verify", "--file", str(export), "--public-key", str(trusted))
    assert verified.returncode == 0, verified.stderr


def test_verify_reads_one_snapshot_while_the_server_keeps_writing(site: Site) -> None:
    stop = threading.Event()

    def writer() -> None:  # every call appends an event and moves the head
        kms = site.kms()
        while not stop.is_set():
            kms.encrypt(KeyId=site.key_id, Plaintext=b"busy")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            run = keyhive("audit", "verify", "--storage", site.url)
            assert run.returncode == 0, run.stderr
            assert "audit trail verified" in run.stdout and "every chain and signature intact" in run.stdout
    finally:
        stop.set()
        thread.join()


def test_restore_into_an_empty_database_then_unseal_with_the_same_shares(site: Site, pg: PgCluster,
                                                                        tmp_path: Path) -> None:
    target = with_password(pg.new_database())
    run = keyhive("operator", "restore", "--storage", target, str(site.backup))
    assert run.returncode == 0, run.stderr
    assert "Restored" in run.stdout and target.rsplit("/", 1)[1] in run.stdout

    again = keyhive("operator", "restore", "--storage", target, str(site.backup))
    assert again.returncode == 1 and "not empty" in again.stderr
    live = keyhive("operator", "restore", "--storage", site.url, str(site.backup))
    assert live.returncode == 1 and "not empty" in live.stderr

    assert keyhive("audit", "verify", "--storage", target).returncode == 0  # the trail came along intact
    restored = start_server(tmp_path, "--storage", target)
    try:
        _, status = admin_call(restored.endpoint, "GET", "/keyhive/v1/sys/status")
        assert status["initialized"] is True and status["sealed"] is True  # useless without the shares
        assert unseal(restored, site.shares[1:])["sealed"] is False
        kms = site.kms(restored)
        assert kms.decrypt(CiphertextBlob=site.blob)["Plaintext"] == PLAINTEXT
        assert kms.describe_key(KeyId=site.key_id)["KeyMetadata"]["Description"] == "offline"
    finally:
        restored.stop()
    assert PASSWORD not in restored.log()


def test_restore_refuses_a_damaged_backup_before_touching_the_database(site: Site, pg: PgCluster,
                                                                      tmp_path: Path) -> None:
    data = site.backup.read_bytes()
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    target = with_password(pg.new_database())
    run = keyhive("operator", "restore", "--storage", target, str(damaged))
    assert run.returncode == 1 and "checksum" in run.stderr
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'records'").fetchone() == (0,)


def test_tampering_with_one_stored_event_fails_verification(site: Site, pg: PgCluster) -> None:
    copy = with_password(pg.new_database())  # a restored copy, so the live trail stays intact for other tests
    assert keyhive("operator", "restore", "--storage", copy, str(site.backup)).returncode == 0
    assert keyhive("audit", "verify", "--storage", copy).returncode == 0
    with psycopg.connect(copy) as conn:
        path, value = conn.execute(
            "SELECT path, value FROM records WHERE path LIKE 'audit/events/%' ORDER BY path LIMIT 1 OFFSET 1"
        ).fetchone()  # type: ignore[misc]
        record = json.loads(bytes(value))
        record["event"]["sourceIPAddress"] = "203.0.113.9"  # an edit that keeps the JSON well formed
        conn.execute("UPDATE records SET value = %s WHERE path = %s", (json.dumps(record).encode(), path))
    run = keyhive("audit", "verify", "--storage", copy)
    assert run.returncode == 1
    assert "FAILED verification" in run.stderr and "hash mismatch" in run.stderr


def test_flag_mistakes_and_failures_are_clear_and_hide_the_password(site: Site, tmp_path: Path) -> None:
    both = keyhive("audit", "verify", "--storage", site.url, "--data-dir", str(tmp_path))
    assert both.returncode == 2 and "not allowed with" in both.stderr
    for other in (["--endpoint", site.server.endpoint], ["--file", str(tmp_path / "x.jsonl")]):
        mixed = keyhive("audit", "events", "--storage", site.url, *other)
        assert mixed.returncode == 2 and "not allowed with" in mixed.stderr
    restore_both = keyhive("operator", "restore", "--storage", site.url, "--data-dir", str(tmp_path / "d"),
                           str(site.backup))
    assert restore_both.returncode == 2 and "not allowed with" in restore_both.stderr
    neither = keyhive("operator", "restore", str(site.backup))
    assert neither.returncode == 2 and "--data-dir" in neither.stderr and "--storage" in neither.stderr

    not_a_url = keyhive("audit", "verify", "--storage", str(tmp_path / "data"))
    assert not_a_url.returncode == 1 and "postgresql://" in not_a_url.stderr
    assert not (tmp_path / "data").exists()

    for url in (f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:1/keyhive",  # nothing listens there
                f"postgresql://{SUPERUSER}:{PASSWORD}@[::1/keyhive",  # malformed: libpq quotes it whole
                f"postgresql://{SUPERUSER}@127.0.0.1:1/keyhive?password={PASSWORD}&bogus=1"):
        for command in (["audit", "verify", "--storage", url],
                        ["operator", "restore", "--storage", url, str(site.backup)]):
            failed = keyhive(*command)  # keyhive() asserts that the password is not shown
            assert failed.returncode == 1 and failed.stderr.startswith("keyhive: postgresql://"), failed.stderr
            assert "***" in failed.stderr
