"""PostgreSQL storage against a real server: the conformance suite, races between nodes,
migrations, durability settings, snapshots, and losing the database.

Each test takes a fresh schema (or database) of the session's throwaway server
(tests/postgres.py).  Two PostgresStorage objects on one URL stand for two nodes.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from keyhive import backup
from keyhive.storage import Conflict, StorageUnavailable, open_storage
from keyhive.storage.conformance import exercise_change_feed, exercise_storage
from keyhive.storage.sqlite import SQLiteStorage
from tests.postgres import PgCluster, cluster, require_psycopg

require_psycopg()  # before the imports that need psycopg
import psycopg
from keyhive.storage import postgres as postgres_module
from keyhive.storage.postgres import PostgresStorage

T = TypeVar("T")


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> PgCluster:
    return cluster(request.config)


@pytest.fixture
def nodes(pg: PgCluster) -> Iterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages ("nodes") on one fresh schema."""
    url = pg.new_schema()
    a, b = PostgresStorage(url), PostgresStorage(url)
    yield a, b
    a.close()
    b.close()


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def together(*calls: Callable[[], T]) -> list[T | Exception]:
    """Run ``calls`` in threads released at the same moment; each one's result or exception."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | Exception:
        start.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


# -- the conformance suite ----------------------------------------------------------------

def test_the_test_server_does_not_collate_by_code_point(pg: PgCluster) -> None:
    """So that the conformance suite shows Keyhive's own COLLATE "C" at work, not the server's default."""
    [(b_before_a,)] = pg.admin("SELECT 'B' < 'a'")
    if b_before_a:
        pytest.skip("this PostgreSQL has no ICU: its default collation already sorts by code point")


def test_conformance(pg: PgCluster) -> None:
    made: list[str] = []

    def factory() -> PostgresStorage:
        made.append(pg.new_schema())
        return PostgresStorage(made[-1])

    exercise_storage(factory)
    assert len(set(made)) >= 6  # every check got its own fresh schema


def test_conformance_through_open_storage(pg: PgCluster) -> None:
    def factory() -> PostgresStorage:
        storage = open_storage(pg.new_schema())
        assert isinstance(storage, PostgresStorage)
        return storage

    exercise_storage(factory)


def test_without_psycopg_open_storage_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "keyhive.storage.postgres")
    with pytest.raises(ImportError, match=r"keyhive\[postgres\]"):
        open_storage("postgresql://nobody@127.0.0.1:1/none")


# -- races between nodes ------------------------------------------------------------------

def test_two_nodes_creating_one_path_exactly_one_wins(nodes: tuple[PostgresStorage, PostgresStorage]) -> None:
    a, b = nodes
    for i in range(15):
        path = f"race/{i}"
        results = together(lambda p=path: a.commit({p: b"a"}, must_be_absent=[p]),
                           lambda p=path: b.commit({p: b"b"}, must_be_absent=[p]))
        winners = [name for name, r in zip((b"a", b"b"), results) if r is None]
        assert len(winners) == 1, results
        assert all(isinstance(r, Conflict) for r in results if r is not None), results
        assert a.get(path) == b.get(path) == winners[0]


def test_write_skew_between_nodes_is_refused(nodes: tuple[PostgresStorage, PostgresStorage]) -> None:
    """Each commit creates the path the other requires absent: both passing would break both preconditions."""
    a, b = nodes
    for i in range(15):
        x, y = f"skew/{i}/x", f"skew/{i}/y"
        results = together(lambda x=x, y=y: a.commit({x: b"a"}, must_be_absent=[y]),
                           lambda x=x, y=y: b.commit({y: b"b"}, must_be_absent=[x]))
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"], results
        assert (a.get(x) is None) != (a.get(y) is None)


def test_compare_and_swap_loses_no_update(nodes: tuple[PostgresStorage, PostgresStorage]) -> None:
    """Two threads on each of two nodes increment one counter with ``expect``: every increment counts."""
    a, b = nodes
    a.commit({"counter": b"0"})
    per_worker = 8

    def increment(storage: PostgresStorage) -> int:
        conflicts = 0
        for _ in range(per_worker):
            while True:
                current = storage.get("counter")
                assert current is not None
                try:
                    storage.commit({"counter": str(int(current) + 1).encode()}, expect={"counter": current})
                    break
                except Conflict:
                    conflicts += 1
        return conflicts

    results = together(lambda: increment(a), lambda: increment(a), lambda: increment(b), lambda: increment(b))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert b.get("counter") == str(4 * per_worker).encode()


# -- migrations ---------------------------------------------------------------------------

def migrations(url: str) -> list[str]:
    return [row[0] for row in query(url, "SELECT name FROM schema_migrations ORDER BY name")]  # type: ignore[misc]


def test_migrations_run_once_when_nodes_start_together(pg: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg.new_schema()
    started = together(*[lambda: PostgresStorage(url)] * 4)
    assert all(isinstance(s, PostgresStorage) for s in started), started
    for s in started:
        s.close()  # type: ignore[union-attr]
    assert migrations(url) == [name for name, _ in postgres_module.MIGRATIONS]

    # A new migration on an existing database, with four nodes starting at once: applied once.
    # (CREATE TABLE fails if run twice, so a second run would show as an exception here.)
    extra = ("9001_extra", "CREATE TABLE extra (x INT)")
    monkeypatch.setattr(postgres_module, "MIGRATIONS", [*postgres_module.MIGRATIONS, extra])
    started = together(*[lambda: PostgresStorage(url)] * 4)
    assert all(isinstance(s, PostgresStorage) for s in started), started
    for s in started:
        s.close()  # type: ignore[union-attr]
    assert migrations(url).count("9001_extra") == 1


def test_a_failing_migration_is_rolled_back(pg: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg.new_schema()
    PostgresStorage(url).close()
    before = migrations(url)
    monkeypatch.setattr(postgres_module, "MIGRATIONS", [
        *postgres_module.MIGRATIONS, ("9001_ok", "CREATE TABLE extra (x INT)"), ("9002_bad", "THIS IS NOT SQL")])
    with pytest.raises(psycopg.errors.SyntaxError):
        PostgresStorage(url)
    assert migrations(url) == before
    assert query(url, "SELECT to_regclass('extra')") == [(None,)]


# -- durability ---------------------------------------------------------------------------

def test_commits_are_serializable_and_durable_even_where_the_server_says_otherwise(pg: PgCluster) -> None:
    url = pg.new_database()
    database = url.rsplit("/", 1)[1]
    pg.admin(f"ALTER DATABASE {database} SET synchronous_commit = off")
    storage = PostgresStorage(url)
    try:
        def inside_a_commit(conn: psycopg.Connection) -> tuple[object, ...]:
            with conn.transaction():
                row = conn.execute("SELECT current_setting('transaction_isolation'), "
                                   "current_setting('synchronous_commit')").fetchone()
                assert row is not None
                return tuple(row)

        assert storage._run(inside_a_commit) == ("serializable", "on")
    finally:
        storage.close()


def test_a_commit_is_visible_to_every_node_at_once(nodes: tuple[PostgresStorage, PostgresStorage]) -> None:
    a, b = nodes
    a.commit({"k/1": b"one", "k/2": b"two"})
    b.commit(deletes=["k/2"])
    assert a.scan("k/") == [("k/1", b"one")]
    with pytest.raises(Conflict):
        a.commit({"k/3": b"x"}, must_be_absent=["k/1"])
    assert b.get("k/3") is None


# -- snapshots ----------------------------------------------------------------------------

def restored(snapshot: bytes, tmp_path: Path, name: str) -> SQLiteStorage:
    """Restore ``snapshot`` the way an operator does, then open it with the SQLite backend."""
    backup_file = tmp_path / f"{name}.backup"
    backup_file.write_bytes(backup.pack(snapshot))
    backup.restore(backup_file, tmp_path / name)
    storage = open_storage(tmp_path / name)
    assert isinstance(storage, SQLiteStorage)
    return storage


def test_a_snapshot_restores_into_an_sqlite_data_dir(nodes: tuple[PostgresStorage, PostgresStorage],
                                                     tmp_path: Path) -> None:
    a, _ = nodes
    records = {f"s/{i:04d}": bytes([i % 256]) * (i % 50) for i in range(2500)}
    records.update({"s/é": b"\x00\xff", "s/\U0001f41d": bytes(range(256)), "\U0010ffff": b"last"})
    a.commit(records)
    copy = restored(a.snapshot(), tmp_path, "data")
    try:
        assert copy.scan("") == a.scan("") == sorted(records.items())
    finally:
        copy.close()


def test_a_snapshot_is_one_consistent_moment(nodes: tuple[PostgresStorage, PostgresStorage],
                                             tmp_path: Path) -> None:
    """While another node commits pairs of records atomically, each snapshot holds whole pairs only."""
    a, b = nodes
    stop = threading.Event()

    def write_pairs() -> int:
        i = 0
        while not stop.is_set() and i < 2000:
            b.commit({f"pair/a/{i:05d}": b"1", f"pair/b/{i:05d}": b"1"})
            i += 1
        return i

    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(write_pairs)
        try:
            copies = []
            for n in range(3):
                time.sleep(0.1)
                copies.append(restored(a.snapshot(), tmp_path, f"copy{n}"))
        finally:
            stop.set()
        assert writer.result() > 0
    for copy in copies:
        halves = [{p.rsplit("/", 1)[1] for p, _ in copy.scan(f"pair/{half}/")} for half in "ab"]
        copy.close()
        assert halves[0] == halves[1]
    assert len(halves[0]) > 0


# -- losing the database ------------------------------------------------------------------

def backends_of(pg: PgCluster, database: str) -> int:
    [(count,)] = pg.admin(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
                          "AND pid <> pg_backend_pid()")
    return int(count)  # type: ignore[call-overload]


def terminate_backends(pg: PgCluster, database: str, where: str = "true") -> int:
    rows = pg.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
                    f"AND pid <> pg_backend_pid() AND {where}")
    return len(rows)


def test_connections_killed_while_idle_are_replaced_transparently(pg: PgCluster) -> None:
    url = pg.new_database()
    database = url.rsplit("/", 1)[1]
    storage = PostgresStorage(url, min_size=3, max_size=3)
    try:
        storage.commit({"a": b"1"})
        deadline = time.monotonic() + 10
        while backends_of(pg, database) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert terminate_backends(pg, database) == 3  # as when PostgreSQL restarts
        time.sleep(0.2)
        assert storage.get("a") == b"1"
        storage.commit({"b": b"2"}, must_be_absent=["b"])
        assert storage.scan("") == [("a", b"1"), ("b", b"2")]
    finally:
        storage.close()


def test_a_commit_whose_connection_dies_before_commit_is_retried_and_applied_once(pg: PgCluster) -> None:
    url = pg.new_database()
    database = url.rsplit("/", 1)[1]
    storage = PostgresStorage(url)
    storage.commit({"x": b"old"})
    holder = psycopg.connect(url)  # holds a lock on row x, so that the commit waits mid-transaction
    try:
        holder.execute("SELECT 1 FROM records WHERE path = 'x' FOR UPDATE")
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(storage.commit, {"x": b"new", "y": b"y"}, expect={"x": b"old"})
            deadline = time.monotonic() + 10
            while not terminate_backends(pg, database, "wait_event_type = 'Lock'"):
                assert time.monotonic() < deadline, "the commit never waited for the lock"
                time.sleep(0.02)
            time.sleep(0.2)
            holder.rollback()  # release the lock: the retried commit goes through
            done.result(timeout=10)
        assert storage.scan("") == [("x", b"new"), ("y", b"y")]
    finally:
        holder.close()
        storage.close()


def test_an_unreachable_database_fails_fast_then_recovers_by_itself(pg: PgCluster) -> None:
    url = pg.new_database()
    database = url.rsplit("/", 1)[1]
    storage = PostgresStorage(url, timeout=1.0)
    try:
        storage.commit({"a": b"1"})
        pg.admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        terminate_backends(pg, database)
        for call in (lambda: storage.get("a"), lambda: storage.commit({"b": b"2"})):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                call()
            assert time.monotonic() - started < 5
        pg.admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        deadline = time.monotonic() + 20
        while True:
            try:
                assert storage.get("a") == b"1"
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the storage did not reconnect"
                time.sleep(0.1)
        storage.commit({"b": b"2"})
        assert storage.get("b") == b"2"
    finally:
        storage.close()


def test_a_database_that_cannot_be_reached_at_start_raises_storage_unavailable(pg: PgCluster) -> None:
    with pytest.raises(StorageUnavailable) as info:
        PostgresStorage(pg.url("no_such_database"))
    assert "cannot open the PostgreSQL storage" in (info.value.log_detail or "")  # for the log; the wire is generic
    assert info.value.wire_type == "DependencyTimeoutException" and info.value.status == 500


def test_a_closed_storage_is_unusable(pg: PgCluster) -> None:
    storage = PostgresStorage(pg.new_schema())
    storage.close()
    with pytest.raises(psycopg.Error):
        storage.get("a")


# -- the change feed ------------------------------------------------------------------------

def test_change_feed(pg: PgCluster) -> None:
    def pair() -> tuple[PostgresStorage, PostgresStorage]:
        url = pg.new_schema()
        return PostgresStorage(url), PostgresStorage(url)

    exercise_change_feed(pair)


def test_the_change_feed_is_per_schema(pg: PgCluster) -> None:
    one, other = PostgresStorage(pg.new_schema()), PostgresStorage(pg.new_schema())
    heard: list[list[str] | None] = []
    watch = one.watch(heard.append)
    other.commit({"kms/elsewhere": b"x"})
    time.sleep(0.5)
    watch.stop()
    one.close()
    other.close()
    assert heard == []


def test_a_change_too_long_to_notify_says_unknown(nodes: tuple[PostgresStorage, PostgresStorage]) -> None:
    a, b = nodes
    heard: list[list[str] | None] = []
    watch = a.watch(heard.append)
    b.commit({f"kms/{'x' * 100}/{i}": b"x" for i in range(100)})
    deadline = time.monotonic() + 2
    while not heard and time.monotonic() < deadline:
        time.sleep(0.02)
    watch.stop()
    assert heard == [None]
