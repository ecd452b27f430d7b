"""Backups: a consistent snapshot of a data directory's database, checksummed.

The snapshot holds records exactly as stored: everything secret is still sealed
by the barrier, so a backup is useless without the seal (the key shares or the
HSM).  File format::

    KEYHIVE-BACKUP 1\\n
    {"format": 1, "created": ISO 8601, "size": N, "sha256": hex}\\n
    N bytes: an SQLite database file
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

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
