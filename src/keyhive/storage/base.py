"""The storage interface every backend implements, and how to open one.

Storage holds opaque bytes under ``/``-separated paths and knows nothing about
keys or encryption: everything secret arrives already sealed by the barrier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

from keyhive.errors import DependencyTimeoutException


class Conflict(Exception):
    """A commit's precondition failed (a path that must be absent exists)."""


class StorageUnavailable(DependencyTimeoutException):
    """The storage cannot be reached now (a lost connection, a restarting database): retrying later may succeed.

    On the wire it is DependencyTimeoutException, which AWS clients retry.  A commit
    that raises it may or may not have been applied when the connection was lost
    while committing; the log detail says so.
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__()
        self.log_detail = detail or "storage unavailable"

    @property
    def wire_type(self) -> str:
        return "DependencyTimeoutException"


# Paths every request writes and no node caches: their commits are not announced to watchers.
UNANNOUNCED_PREFIXES = ("audit/", "core/leases/")

CHANGE_DELAY_SECONDS = 0.25  # the documented bound: a change reaches every watcher within it
CHANGE_POLL_SECONDS = 0.05  # how often a polling watcher looks for new changes

# A watcher's callback: the paths another writer committed, or None when changes may have
# been missed (the watcher was disconnected or fell behind): then forget everything cached.
ChangeHandler = Callable[[list[str] | None], None]


def announced(puts: Iterable[str], deletes: Iterable[str]) -> list[str]:
    """The paths of a commit that other processes and nodes must hear about."""
    return sorted({p for p in (*puts, *deletes) if not p.startswith(UNANNOUNCED_PREFIXES)})


class Watch(Protocol):
    def stop(self) -> None:
        """Stop delivering changes (the watcher thread ends soon after)."""


class Storage(Protocol):
    def get(self, path: str) -> bytes | None:
        """The value at ``path``, or None."""

    def scan(self, prefix: str, *, after: str = "", limit: int | None = None) -> list[tuple[str, bytes]]:
        """(path, value) pairs under ``prefix`` in path order, strictly after ``after``."""

    def commit(
        self,
        puts: Mapping[str, bytes] = {},
        deletes: Iterable[str] = (),
        *,
        must_be_absent: Iterable[str] = (),
        expect: Mapping[str, bytes] = {},
    ) -> None:
        """Apply all puts and deletes atomically and durably, or raise Conflict and apply none.

        Preconditions: every ``must_be_absent`` path is absent, every ``expect`` path holds that value.
        """

    def watch(self, on_change: ChangeHandler) -> Watch:
        """Call ``on_change`` (from a thread of its own) with the paths that other storage objects,
        in this process or any other, commit from now on; this object's own commits are not
        reported.  Changes arrive in commit order, within ``CHANGE_DELAY_SECONDS`` of the commit.
        """

    def snapshot(self) -> bytes:
        """A consistent copy of everything stored, as the bytes of an SQLite database file (the backup format)."""

    def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""


POSTGRES_URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_URL_SCHEMES)


def open_storage(location: str | Path) -> Storage:
    """A backend for ``location``: a ``postgresql://`` URL (a database many nodes share), else a data
    directory (SQLite, the embedded default), made readable by its owner only.

    PostgreSQL needs the ``postgres`` extra; without it this raises ImportError saying so.
    """
    if is_postgres_url(location):
        from keyhive.storage.postgres import PostgresStorage

        return PostgresStorage(str(location))
    from keyhive.storage.sqlite import SQLiteStorage

    directory = Path(location)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SQLiteStorage(directory / "keyhive.db")


def scan_query(prefix: str, after: str, limit: int | None, *, mark: str) -> tuple[str, list[object]]:
    """The SQL (with ``mark`` placeholders) and arguments of a scan, for the SQL backends."""
    sql = f"SELECT path, value FROM records WHERE path >= {mark} AND path <> {mark}"
    args: list[object] = [max(prefix, after), after]
    end = _prefix_end(prefix)
    if end is not None:
        sql += f" AND path < {mark}"
        args.append(end)
    sql += " ORDER BY path"
    if limit is not None:
        sql += f" LIMIT {mark}"
        args.append(limit)
    return sql, args


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None if unbounded.

    SQLite compares TEXT as UTF-8 bytes, which is code point order.  ``prefix +
    U+10FFFF`` is not an upper bound: it excludes paths that continue with U+10FFFF.
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    successor = ord(stem[-1]) + 1
    if successor == 0xD800:  # surrogates cannot be stored as UTF-8; skip them
        successor = 0xE000
    return stem[:-1] + chr(successor)
