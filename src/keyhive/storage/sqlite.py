"""SQLite storage: the embedded default.

One connection owns the write path (``BEGIN IMMEDIATE`` under a lock, as datasette
does); WAL with ``synchronous=FULL`` makes every commit durable before it returns.
Readers use a connection of their own per thread, so reads go on while a commit
waits for the disk.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Mapping

from keyhive.storage.base import Conflict, scan_query

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_records",
        "CREATE TABLE records (path TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    ),
]


class SQLiteStorage:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
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

    def _migrate(self) -> None:
        with self._lock:
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
        with self._lock:
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
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

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
