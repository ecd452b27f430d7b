"""The storage interface every backend implements, and how to open one.

Storage holds opaque bytes under ``/``-separated paths and knows nothing about
keys or encryption: everything secret arrives already sealed by the barrier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Protocol


class Conflict(Exception):
    """A commit's precondition failed (a path that must be absent exists)."""


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

    def snapshot(self) -> bytes:
        """A consistent copy of everything stored, in this backend's own file format (for backups)."""

    def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""


def open_storage(data_dir: str | Path) -> Storage:
    """A backend for a data directory (SQLite, the embedded default), readable by its owner only."""
    from keyhive.storage.sqlite import SQLiteStorage

    directory = Path(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SQLiteStorage(directory / "keyhive.db")
