"""``keyhive server --storage postgresql://...``: a real server on the session's throwaway PostgreSQL,
real boto3 calls, and the records found in PostgreSQL's table."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.postgres import PgCluster, cluster, require_psycopg

require_psycopg()  # before importing psycopg
import psycopg


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> PgCluster:
    return cluster(request.config)


def keyhive_server(*args: str) -> subprocess.CompletedProcess[str]:
    """``keyhive server ARGS`` expected to exit at once (bad flags, unreachable storage)."""
    return subprocess.run([sys.executable, "-m", "keyhive.cli.main", "server", "--port", "1", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)


def test_a_dev_server_on_postgres_serves_kms_and_stores_there(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.new_database()
    server = start_server(tmp_path, "--dev", "--storage", url)
    try:
        kms = server.client()
        key_id = kms.create_key(Description="on postgres")["KeyMetadata"]["KeyId"]
        plaintext = b"stored in a shared database, sealed"
        blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "on postgres"
        assert url.rsplit("/", 1)[1] in server.log()  # the banner says where the data is

        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT path, value FROM records").fetchall()
        paths = [path for path, _ in rows]
        assert f"kms/111122223333/us-east-1/key/{key_id}" in paths
        assert f"kms/111122223333/us-east-1/material/{key_id}/0000000001" in paths
        assert any(path.startswith("audit/") for path in paths), paths[:20]
        # Sealed at rest: the plaintext appears in no stored value (the audit trail never holds it).
        for _, value in rows:
            assert plaintext not in value and base64.b64encode(plaintext) not in value
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_a_second_dev_run_on_the_same_database_refuses_clearly(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.new_database()
    server = start_server(tmp_path, "--dev", "--storage", url)
    server.stop()
    again = keyhive_server("--dev", "--storage", url)
    assert again.returncode != 0
    assert "was initialized by an earlier run" in again.stderr and "--storage" in again.stderr


def test_storage_flag_mistakes_are_refused_with_a_message(pg: PgCluster, tmp_path: Path) -> None:
    both = keyhive_server("--storage", pg.url(), "--data-dir", str(tmp_path / "data"))
    assert both.returncode != 0 and "not both" in both.stderr
    not_a_url = keyhive_server("--storage", str(tmp_path / "data"))
    assert not_a_url.returncode != 0 and "postgresql://" in not_a_url.stderr
    unreachable = keyhive_server("--storage", "postgresql://postgres:s3cret@127.0.0.1:1/keyhive")
    assert unreachable.returncode != 0
    assert "cannot open the PostgreSQL storage" in unreachable.stderr and "Traceback" not in unreachable.stderr
    assert "s3cret" not in unreachable.stderr
