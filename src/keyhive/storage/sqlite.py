"""SQLite storage: the embedded default.

One connection owns the write path (``BEGIN IMMEDIATE`` under a lock, as datasette
does); WAL with ``synchronous=FULL`` makes every commit durable before it returns.
Readers use a connection of their own per thread, so reads go on while a commit
waits for the disk.

Several processes (the server's workers) may share one database file.  Their
commits take an exclusive ``flock`` on ``<db>.lock`` first: the kernel wakes the
next writer the moment the lock is free, where SQLite's own busy handler would
sleep and poll (for up to 100 ms a try), which under load made tail latency.  Each commit that changes a cached record
appends a row to ``changes``, in the same transaction, so row ids follow commit
order; each process's watcher polls that table for rows after its cursor.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from keyhive.storage.base import (
    CHANGE_POLL_SECONDS,
    ChangeHandler,
    Conflict,
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

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_records",
        "CREATE TABLE records (path TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    ),
    (
        "0002_changes",
        "CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, change TEXT NOT NULL)",
    ),
]
CHANGES_KEPT = 10_000  # rows of the change log kept; a watcher further behind forgets everything
PRUNE_EVERY = 1024  # commits between prunings of the change log


class SQLiteStorage:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._lock_file = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
        self.writer = new_writer_id()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed storage.")
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = self._connect()
            with self._lock:
                self._all_readers.append(db)
        return db

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock: this process's threads, then the other processes on this file."""
        with self._lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _migrate(self) -> None:
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                done = {row[0] for row in self._db.execute("SELECT name FROM schema_migrations")}
                for name, sql in MIGRATIONS:
                    if name not in done:
                        self._db.execute(sql)
                        self._db.execute(
                            "INSERT INTO schema_migrations VALUES (?, datetime('now'))", (name,)
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, path: str) -> bytes | None:
        row = self._reader().execute("SELECT value FROM records WHERE path = ?", (path,)).fetchone()
        return None if row is None else bytes(row[0])

    def scan(self, prefix: str, *, after: str = "", limit: int | None = None) -> list[tuple[str, bytes]]:
        sql, args = scan_query(prefix, after, limit, mark="?")
        rows = self._reader().execute(sql, args).fetchall()
        return [(path, bytes(value)) for path, value in rows]

    def commit(
        self,
        puts: Mapping[str, bytes] = {},
        deletes: Iterable[str] = (),
        *,
        must_be_absent: Iterable[str] = (),
        expect: Mapping[str, bytes] = {},
    ) -> None:
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for path in must_be_absent:
                    if self._db.execute("SELECT 1 FROM records WHERE path = ?", (path,)).fetchone():
                        raise Conflict(path)
                for path, value in expect.items():
                    row = self._db.execute("SELECT value FROM records WHERE path = ?", (path,)).fetchone()
                    if row is None or bytes(row[0]) != value:
                        raise Conflict(path)
                self._db.executemany("DELETE FROM records WHERE path = ?", [(p,) for p in deletes])
                self._db.executemany(
                    "INSERT OR REPLACE INTO records (path, value) VALUES (?, ?)", list(puts.items())
                )
                self._announce(announced(puts, deletes))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _announce(self, paths: list[str]) -> None:
        if not paths:
            return
        row = self._db.execute("INSERT INTO changes (change) VALUES (?)", (encode_change(self.writer, paths),))
        if row.lastrowid is not None and row.lastrowid % PRUNE_EVERY == 0:
            self._db.execute("DELETE FROM changes WHERE id <= ?", (row.lastrowid - CHANGES_KEPT,))

    def watch(self, on_change: ChangeHandler) -> WatchThread:
        db = self._connect()
        (cursor,) = db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()

        def poll(stopping: threading.Event) -> None:
            nonlocal cursor
            while not stopping.wait(CHANGE_POLL_SECONDS):
                rows = db.execute("SELECT id, change FROM changes WHERE id > ? ORDER BY id", (cursor,)).fetchall()
                if rows and rows[0][0] != cursor + 1:  # pruned before this watcher read it
                    on_change(None)
                for row_id, change in rows:
                    deliver(on_change, self.writer, *decode_change(change))
                    cursor = row_id
            db.close()

        return WatchThread("keyhive-sqlite-watch", poll)

    def snapshot(self) -> bytes:
        """An online, consistent copy of the database (SQLite's backup API), as file bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            target = sqlite3.connect(Path(tmp) / "snapshot.db")
            try:
                self._reader().backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
            finally:
                target.close()
            return (Path(tmp) / "snapshot.db").read_bytes()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for db in self._all_readers:
                db.close()
            self._db.close()
            os.close(self._lock_file)
