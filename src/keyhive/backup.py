"""Backups: a consistent snapshot of the storage, checksummed.

The snapshot holds records exactly as stored: everything secret is still sealed
by the barrier, so a backup is useless without the seal (the key shares or the
HSM).  File format::

    KEYHIVE-BACKUP 1\\n
    {"format": 1, "created": ISO 8601, "size": N, "sha256": hex}\\n
    N bytes: an SQLite database file (``Storage.snapshot()``, whatever the backend)

A backup restores into an empty data directory (the file becomes its database)
or into any empty storage (its records are copied in one atomic commit).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from keyhive.storage import Conflict, Storage
from keyhive.storage.sqlite import SQLiteStorage

MAGIC = b"KEYHIVE-BACKUP 1\n"
MAX_HEADER_BYTES = 4096
DATABASE_NAME = "keyhive.db"


class BackupError(Exception):
    """A backup file that cannot be restored (damaged, truncated, not a backup), or a bad target."""


def pack(database: bytes) -> bytes:
    header = {
        "format": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "size": len(database),
        "sha256": hashlib.sha256(database).hexdigest(),
    }
    return MAGIC + json.dumps(header).encode() + b"\n" + database


def unpack(data: bytes) -> bytes:
    """The database bytes of a backup, once its checksum holds."""
    if not data.startswith(MAGIC):
        raise BackupError("not a Keyhive backup file")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise BackupError("the backup header is damaged")
    try:
        header = json.loads(data[len(MAGIC):end])
        size, digest = int(header["size"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        raise BackupError("the backup header is damaged") from None
    database = data[end + 1:]
    if len(database) != size or hashlib.sha256(database).hexdigest() != digest:
        raise BackupError("the backup is damaged or truncated: its checksum does not match")
    return database


def restore(backup_file: Path, data_dir: Path) -> None:
    """Write a backup's database into an empty (or new) data directory."""
    database = unpack(backup_file.read_bytes())
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore only into an empty data directory")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = data_dir / DATABASE_NAME
    with open(target, "wb") as out:
        out.write(database)
        out.flush()
        os.fsync(out.fileno())



def restore_into(database: bytes, target: Storage, name: str) -> int:
    """Copy the records of ``database`` (a backup's, see :func:`unpack`) into ``target``, which must hold none.

    One commit, so a failed restore leaves ``target`` empty; each path must still be
    absent when it commits (a node that wrote meanwhile makes it refuse).  ``name``
    says which storage in messages.  Returns how many records were copied.
    """
    try:
        with open_snapshot(database) as source:
            records = dict(source.scan(""))
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the backup's database cannot be read: {exc}") from None
    not_empty = BackupError(f"{name} is not empty: restore only into an empty database")
    if target.scan("", limit=1):
        raise not_empty
    try:
        target.commit(records, must_be_absent=records)
    except Conflict:
        raise not_empty from None
    return len(records)


@contextlib.contextmanager
def open_snapshot(database: bytes) -> Iterator[Storage]:
    """The bytes of an SQLite database file (a snapshot, a backup's database) as a storage, in a private
    temporary directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="keyhive-snapshot-") as tmp:
        path = Path(tmp) / DATABASE_NAME
        path.write_bytes(database)
        storage = SQLiteStorage(path)
        try:
            yield storage
        finally:
            storage.close()
