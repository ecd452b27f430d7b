"""PostgreSQL storage: one database shared by many Keyhive nodes.

Every commit is one SERIALIZABLE transaction.  PostgreSQL's serializable snapshot
isolation makes the preconditions hold against commits from every node, even in
the write-skew case (two commits that each require the path the other creates to
be absent): one of them fails with a serialization failure, is retried after a
short random pause, then sees the winner's write and raises Conflict.  A commit
returns once PostgreSQL has made it durable (``synchronous_commit``, ``on`` by
default, is set back to ``on`` on any connection where the server says ``off``).

Reads are single statements in autocommit mode.  Connections come from a
psycopg_pool pool; a pooled connection that died while idle (PostgreSQL was
restarted) is replaced and the call retried, because nothing was applied through
it.  Any other loss of the database raises StorageUnavailable, and the pool
reconnects by itself once PostgreSQL is back.  After such a loss, and until a
call succeeds again, each call waits at most ``OUTAGE_WAIT_SECONDS`` for a
connection: during an outage requests fail fast instead of each holding its
caller for the pool's full timeout.

A commit that changes cached records sends a NOTIFY on ``keyhive_changes`` in its
transaction; PostgreSQL delivers it to every listening node once, and only if, the
commit succeeds, in commit order.  Each node's watcher holds one LISTEN connection;
while it is disconnected it keeps reporting "changes unknown", so caches stay empty
until it listens again.

Paths are ``TEXT COLLATE "C"`` in a UTF8 database: they compare as UTF-8 bytes,
which is code point order, as the conformance suite requires.  Schema migrations
are named and recorded in ``schema_migrations``; each node runs the missing ones
at start, under a transaction-scoped advisory lock, so nodes that start together
apply each migration exactly once.
"""

from __future__ import annotations

import itertools
import logging
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolClosed
except ImportError as exc:  # an optional extra
    raise ImportError(
        "PostgreSQL storage needs psycopg 3 and psycopg-pool: pip install 'keyhive[postgres]'"
    ) from exc

from keyhive.storage.base import (
    CHANGE_POLL_SECONDS,
    ChangeHandler,
    Conflict,
    StorageUnavailable,
    announced,
    scan_query,
)
from keyhive.storage.changes import (
    WatchThread,
    decode_change,
    deliver,
    encode_change,
    new_writer_id,
)
from keyhive.storage.sqlite import SQLiteStorage

T = TypeVar("T")
log = logging.getLogger("keyhive.storage")

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_records",
        'CREATE TABLE records (path TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL)',
    ),
]

MIGRATION_LOCK = 0x6B65_7968_6976_6501  # the pg_advisory_xact_lock key: "keyhive" 01
CONNECT_TIMEOUT_SECONDS = 5  # libpq's connect_timeout, unless the URL sets one
POOL_TIMEOUT_SECONDS = 5.0  # longest wait for a connection: then StorageUnavailable, not a hang
OUTAGE_WAIT_SECONDS = 0.25  # the wait instead, while the last call found PostgreSQL unreachable
RETRY_SECONDS = 5.0  # how long a commit retries serialization failures and deadlocks
RETRY_PAUSE_SECONDS = (0.001, 0.05)  # random pause after a serialization failure: first, largest
SNAPSHOT_BATCH = 1000  # records per SQLite commit while building a snapshot
CHANNEL = "keyhive_changes"  # and the schema's name: a channel is per database, not per schema
MAX_NOTIFY_BYTES = 7900  # PostgreSQL's payload limit is 8000 bytes; a longer change says "unknown"

_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


class PostgresStorage:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10,
                 timeout: float = POOL_TIMEOUT_SECONDS) -> None:
        kwargs: dict[str, object] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url):
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        self._max_size = max_size
        self._url, self._kwargs = url, kwargs
        self._unreachable = False  # the last call lost PostgreSQL; cleared by the next success
        self.writer = new_writer_id()
        try:
            with psycopg.connect(url, **kwargs) as conn:  # type: ignore[arg-type]
                _require_utf8(conn)
                _migrate(conn)
                self._channel = f"{CHANNEL}:{conn.execute('SELECT current_schema()').fetchone()[0]}"  # type: ignore[index]
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"cannot open the PostgreSQL storage: {exc}") from exc
        self._pool = ConnectionPool(url, kwargs=kwargs, min_size=min_size, max_size=max_size, timeout=timeout,
                                    configure=_configure, open=False, name="keyhive-storage")
        self._pool.open()

    def get(self, path: str) -> bytes | None:
        def read(conn: psycopg.Connection) -> bytes | None:
            row = conn.execute("SELECT value FROM records WHERE path = %s", (path,)).fetchone()
            return None if row is None else bytes(row[0])

        return self._run(read)

    def scan(self, prefix: str, *, after: str = "", limit: int | None = None) -> list[tuple[str, bytes]]:
        sql, args = scan_query(prefix, after, limit, mark="%s")

        def read(conn: psycopg.Connection) -> list[tuple[str, bytes]]:
            return [(path, bytes(value)) for path, value in conn.execute(sql, args)]  # type: ignore[arg-type]

        return self._run(read)

    def commit(
        self,
        puts: Mapping[str, bytes] = {},
        deletes: Iterable[str] = (),
        *,
        must_be_absent: Iterable[str] = (),
        expect: Mapping[str, bytes] = {},
    ) -> None:
        # Sorted, so that concurrent commits lock rows in one order (a rare deadlock left is retried).
        put_items = sorted(puts.items())
        delete_paths = sorted(set(deletes))
        absent = sorted(set(must_be_absent))
        expected = dict(expect)
        change = _notification(self.writer, announced(puts, delete_paths))

        def apply(conn: psycopg.Connection) -> None:
            committing = False
            try:
                with conn.transaction():  # BEGIN ISOLATION LEVEL SERIALIZABLE (see _configure)
                    _check(conn, absent, expected)
                    if delete_paths:
                        conn.execute("DELETE FROM records WHERE path = ANY(%s::text[])", (delete_paths,))
                    if put_items:
                        conn.execute(
                            "INSERT INTO records (path, value) SELECT * FROM unnest(%s::text[], %s::bytea[]) "
                            "ON CONFLICT (path) DO UPDATE SET value = EXCLUDED.value",
                            ([p for p, _ in put_items], [v for _, v in put_items]),
                        )
                    if change is not None:
                        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, change))
                    committing = True  # leaving the block sends COMMIT
            except psycopg.OperationalError as exc:
                if committing and conn.broken:
                    raise StorageUnavailable(
                        f"lost the PostgreSQL connection while committing; the commit may or may not have been applied: {exc}"
                    ) from exc
                raise

        self._run(apply)

    def watch(self, on_change: ChangeHandler) -> WatchThread:
        listening: list[psycopg.Connection] = [self._listen()]  # listening before this returns

        def listen(stopping: threading.Event) -> None:
            if not listening:
                try:
                    listening.append(self._listen())
                except psycopg.OperationalError:
                    on_change(None)  # blind: cached records may be stale, so keep no cache
                    stopping.wait(CHANGE_POLL_SECONDS * 4)
                    return
                on_change(None)  # whatever changed while this watcher was not listening
            with listening.pop() as conn:
                try:
                    while not stopping.is_set():
                        for notify in conn.notifies(timeout=CHANGE_POLL_SECONDS * 4):
                            deliver(on_change, self.writer, *decode_change(notify.payload))
                except psycopg.OperationalError as exc:
                    log.warning("lost the PostgreSQL change feed, reconnecting: %s", exc)
                    on_change(None)

        return WatchThread("keyhive-postgres-watch", listen)

    def _listen(self) -> psycopg.Connection:
        conn = psycopg.connect(self._url, **self._kwargs)  # type: ignore[arg-type]
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    def snapshot(self) -> bytes:
        """One REPEATABLE READ snapshot of every record, written into an SQLite database file.

        The backup format is the SQLite backend's database, so ``keyhive operator
        restore`` and the SQLite backend read it unchanged.
        """
        def dump(conn: psycopg.Connection) -> bytes:
            with tempfile.TemporaryDirectory() as tmp:
                target = SQLiteStorage(Path(tmp) / "snapshot.db")
                try:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        rows = conn.cursor().stream("SELECT path, value FROM records ORDER BY path")
                        while batch := list(itertools.islice(rows, SNAPSHOT_BATCH)):
                            target.commit({path: bytes(value) for path, value in batch})
                    return target.snapshot()
                finally:
                    target.close()

        return self._run(dump)

    def close(self) -> None:
        self._pool.close()

    def _run(self, operation: Callable[[psycopg.Connection], T]) -> T:
        """``operation`` on a pooled connection; retried where that is safe, else StorageUnavailable."""
        deadline = time.monotonic() + RETRY_SECONDS
        attempt = 0
        while True:
            attempt += 1
            conn: psycopg.Connection | None = None
            try:
                with self._pool.connection(timeout=OUTAGE_WAIT_SECONDS if self._unreachable else None) as conn:
                    result = operation(conn)
                self._unreachable = False
                return result
            except PoolClosed:
                raise
            except _RETRYABLE as exc:
                if time.monotonic() >= deadline:
                    raise StorageUnavailable(f"PostgreSQL kept refusing a commit under contention: {exc}") from exc
                first, largest = RETRY_PAUSE_SECONDS
                time.sleep(random.uniform(0, min(largest, first * 2**attempt)))
            except psycopg.OperationalError as exc:
                if conn is not None and conn.broken and attempt <= self._max_size:
                    continue  # a pooled connection that died while idle: nothing was applied through it
                self._unreachable = True
                raise StorageUnavailable(f"PostgreSQL is unavailable: {exc}") from exc


def _notification(writer: str, paths: list[str]) -> str | None:
    if not paths:
        return None
    payload = encode_change(writer, paths)
    return payload if len(payload.encode()) <= MAX_NOTIFY_BYTES else encode_change(writer, None)


def _check(conn: psycopg.Connection, absent: list[str], expected: Mapping[str, bytes]) -> None:
    """Raise Conflict unless every ``absent`` path is absent and every ``expected`` path holds its value."""
    paths = absent + [p for p in expected if p not in absent]
    if not paths:
        return
    found = {path: bytes(value) for path, value in
             conn.execute("SELECT path, value FROM records WHERE path = ANY(%s::text[])", (paths,))}
    for path in absent:
        if path in found:
            raise Conflict(path)
    for path, value in expected.items():
        if found.get(path) != value:
            raise Conflict(path)


def _configure(conn: psycopg.Connection) -> None:
    """Each pooled connection: explicit transactions are SERIALIZABLE; commits wait for durability."""
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    row = conn.execute("SHOW synchronous_commit").fetchone()
    if row is not None and row[0] == "off":
        conn.execute("SET synchronous_commit = on")


def _require_utf8(conn: psycopg.Connection) -> None:
    """Code point order of paths needs UTF-8 text (COLLATE "C" then compares UTF-8 bytes)."""
    encoding = conn.info.parameter_status("server_encoding")
    if encoding != "UTF8":
        raise ValueError(f"the PostgreSQL database's encoding is {encoding}; Keyhive needs a UTF8 database")


def _migrate(conn: psycopg.Connection) -> None:
    """Apply the missing migrations in one transaction, one node at a time.

    READ COMMITTED, so that once a node holds the lock its next statements see what
    the node before it committed (a serializable snapshot would predate the wait).
    """
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, sql in MIGRATIONS:
            if name not in done:
                conn.execute(sql)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
