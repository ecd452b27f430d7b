"""SQLite storage: the conformance suite, durability across reopen and kill -9, migrations."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyhive.storage import Conflict, open_storage
from keyhive.storage import base as base_module
from keyhive.storage import sqlite as sqlite_module
from keyhive.storage.conformance import exercise_change_feed, exercise_storage
from keyhive.storage.sqlite import SQLiteStorage


def test_conformance(tmp_path: Path) -> None:
    counter = iter(range(1000))
    exercise_storage(lambda: SQLiteStorage(tmp_path / f"db-{next(counter)}.sqlite"))
    assert next(counter) >= 5  # every check got its own fresh storage


def test_conformance_through_open_storage(tmp_path: Path) -> None:
    counter = iter(range(1000))
    exercise_storage(lambda: open_storage(tmp_path / f"dir-{next(counter)}" / "nested"))


def test_conformance_can_fail(tmp_path: Path) -> None:
    """A backend that ignores deletes must not pass."""

    class ForgetfulStorage(SQLiteStorage):
        def commit(self, puts={}, deletes=(), *, must_be_absent=()):  # type: ignore[no-untyped-def]
            super().commit(puts, (), must_be_absent=must_be_absent)

    counter = iter(range(1000))
    with pytest.raises(AssertionError):
        exercise_storage(lambda: ForgetfulStorage(tmp_path / f"db-{next(counter)}.sqlite"))


# -- durability ---------------------------------------------------------------------------

def test_a_commit_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keyhive.db"
    s = SQLiteStorage(path)
    s.commit({"a/1": b"one", "a/2": b"two"})
    s.commit(deletes=["a/2"])
    s.close()
    reopened = SQLiteStorage(path)
    assert reopened.scan("") == [("a/1", b"one")]
    reopened.close()


def test_a_second_connection_sees_a_commit_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keyhive.db"
    writer, reader = SQLiteStorage(path), SQLiteStorage(path)
    writer.commit({"a/1": b"one"})
    assert reader.get("a/1") == b"one"
    with pytest.raises(Conflict):
        reader.commit({"a/2": b"x"}, must_be_absent=["a/1"])
    writer.close()
    reader.close()


def test_a_commit_survives_kill_9(tmp_path: Path) -> None:
    """The writer is killed with SIGKILL right after commit returns, without close."""
    path = tmp_path / "keyhive.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from keyhive.storage.sqlite import SQLiteStorage
        s = SQLiteStorage(Path({str(path)!r}))
        s.commit({{"k/" + str(i): bytes([i]) * 100 for i in range(50)}})
        s.commit({{"last": b"acknowledged"}}, deletes=["k/0"])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    s = SQLiteStorage(path)
    assert s.get("last") == b"acknowledged"
    assert s.get("k/0") is None and s.get("k/49") == bytes([49]) * 100
    assert len(s.scan("k/")) == 49
    s.close()


def test_commits_are_durable_by_configuration(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path / "keyhive.db")
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_a_failed_commit_applies_nothing(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path / "keyhive.db")
    s.commit({"a": b"1"})
    with pytest.raises(sqlite3.Error):
        s.commit({"b": b"2", "c": object()}, deletes=["a"])  # type: ignore[dict-item]
    assert s.scan("") == [("a", b"1")]
    s.commit({"d": b"4"})  # and the connection is still usable
    assert s.get("d") == b"4"
    s.close()


def test_closed_storage_is_unusable(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path / "keyhive.db")
    s.close()
    with pytest.raises(sqlite3.ProgrammingError):
        s.get("a")


# -- migrations ---------------------------------------------------------------------------

def _migrations(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, applied_at FROM schema_migrations ORDER BY name").fetchall()


def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "keyhive.db"
    SQLiteStorage(path).close()
    first = _migrations(path)
    assert [name for name, _ in first] == [name for name, _ in sqlite_module.MIGRATIONS]
    assert all(applied for _, applied in first)
    s = SQLiteStorage(path)
    s.commit({"a": b"1"})
    s.close()
    s = SQLiteStorage(path)  # reopening neither re-runs nor re-records anything
    assert _migrations(path) == first
    assert s.get("a") == b"1"
    s.close()


def test_a_new_migration_runs_once_on_an_existing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keyhive.db"
    SQLiteStorage(path).close()
    extra = ("9001_extra", "CREATE TABLE extra (x)")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, extra])
    SQLiteStorage(path).close()
    SQLiteStorage(path).close()
    assert [n for n, _ in _migrations(path)].count("9001_extra") == 1


def test_a_failing_migration_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keyhive.db"
    SQLiteStorage(path).close()
    before = _migrations(path)
    monkeypatch.setattr(
        sqlite_module,
        "MIGRATIONS",
        [*sqlite_module.MIGRATIONS, ("9001_ok", "CREATE TABLE extra (x)"), ("9002_bad", "THIS IS NOT SQL")],
    )
    with pytest.raises(sqlite3.OperationalError):
        SQLiteStorage(path)
    assert _migrations(path) == before
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "extra" not in tables


# -- scan against a model -----------------------------------------------------------------

ALPHABET = st.sampled_from(["a", "b", "B", "/", "-", "_", ":", "é", "\U0001f41d", "\U0010ffff"])
PATHS = st.text(ALPHABET, min_size=1, max_size=5)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStorage]:
    s = SQLiteStorage(tmp_path_factory.mktemp("model") / "keyhive.db")
    yield s
    s.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    paths=st.sets(PATHS, max_size=12),
    prefix=st.text(ALPHABET, max_size=3),
    after=st.one_of(st.just(""), PATHS),
    limit=st.one_of(st.none(), st.integers(1, 5)),
)
def test_scan_matches_a_sorted_model(
    shared: SQLiteStorage, paths: set[str], prefix: str, after: str, limit: int | None
) -> None:
    shared.commit({p: p.encode() for p in paths}, deletes=[p for p, _ in shared.scan("")])
    expected = [(p, p.encode()) for p in sorted(paths) if p.startswith(prefix) and p > after]
    assert shared.scan(prefix, after=after, limit=limit) == expected[:limit]


def test_prefix_end() -> None:
    end = base_module._prefix_end
    assert end("") is None and end("\U0010ffff\U0010ffff") is None
    assert end("k/") == "k0"
    assert end("k/\U0010ffff") == "k0"
    assert end("a\ud7ff") == "a\ue000"


def test_change_feed(tmp_path: Path) -> None:
    exercise_change_feed(lambda: (SQLiteStorage(tmp_path / "shared.db"), SQLiteStorage(tmp_path / "shared.db")))


def test_a_watcher_that_fell_behind_the_pruned_log_forgets_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "CHANGES_KEPT", 3)
    monkeypatch.setattr(sqlite_module, "PRUNE_EVERY", 4)
    monkeypatch.setattr(sqlite_module, "CHANGE_POLL_SECONDS", 1.0)  # the commits below come before its first poll
    a, b = SQLiteStorage(tmp_path / "shared.db"), SQLiteStorage(tmp_path / "shared.db")
    heard: list[list[str] | None] = []
    watch = a.watch(heard.append)
    for i in range(8):
        b.commit({f"kms/{i}": b"x"})
    time.sleep(1.5)
    watch.stop()
    assert heard == [None, ["kms/5"], ["kms/6"], ["kms/7"]]  # rows 1-5 were pruned unread
