"""A lease in storage: one holder at a time across every process and node of a cluster.

The record at ``core/leases/{name}`` sits outside the barrier (it is not secret, and a
sealed node must be able to give it up)::

    {"version": 1, "holder": "<holder id>", "expires": <epoch seconds>}

Every change is one conditional commit: taking a free lease requires its path to be
absent, renewing or taking over an expired one requires the exact bytes just read.
Of several processes racing, the storage lets one commit win (SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's SERIALIZABLE); the others see Conflict and do not
hold the lease.

Clocks: ``expires`` is written by the holder's clock and compared with the reader's.
A reader whose clock runs ``s`` seconds ahead takes an expired-looking lease ``s``
seconds early, so the ttl must be well above the clock skew between nodes (NTP keeps it
under a second; Keyhive's ttls are tens of seconds).  A holder that wants to be sure
it still holds renews before half its ttl is gone (see ``remaining``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

from keyhive.storage import Conflict, Storage, StorageUnavailable

log = logging.getLogger("keyhive.lease")

LEASES_PREFIX = "core/leases/"  # under core/: outside the barrier (barrier.UNSEALED_PREFIXES)
RECORD_VERSION = 1
MAX_RECORD_BYTES = 1024  # a lease record is ~100 bytes; anything longer is not one of ours


@dataclass(frozen=True)
class Holding:
    holder: str
    expires: float


class Lease:
    """``try_hold`` takes or renews the lease; ``release`` gives it up.  Neither raises on a storage outage."""

    def __init__(self, storage: Storage, name: str, holder_id: str, ttl_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        if not name or "/" in name:
            raise ValueError(f"a lease name is one path segment, not {name!r}")
        if not holder_id:
            raise ValueError("a lease needs a holder id")
        if not ttl_seconds > 0:
            raise ValueError(f"a lease's ttl must be positive, not {ttl_seconds}")
        self.storage = storage
        self.path = LEASES_PREFIX + name
        self.holder_id = holder_id
        self.ttl = float(ttl_seconds)
        self._clock = clock
        self._expires = 0.0  # of our hold, as we last wrote it; 0: not held

    def __repr__(self) -> str:
        return f"Lease({self.path!r}, holder={self.holder_id!r}, ttl={self.ttl})"

    def try_hold(self) -> bool:
        """Take the lease if it is free or expired, renew it if this holder has it; whether it is held now."""
        now = self._clock()
        try:
            raw = self.storage.get(self.path)
            current = parse_record(raw) if raw is not None else None
            if current is not None and current.holder != self.holder_id and current.expires > now:
                self._expires = 0.0
                return False
            mine = record(self.holder_id, now + self.ttl)
            if raw is None:
                self.storage.commit({self.path: mine}, must_be_absent=[self.path])
            else:
                self.storage.commit({self.path: mine}, expect={self.path: raw})
        except Conflict:  # another holder committed between our read and our write
            self._expires = 0.0
            return False
        except StorageUnavailable as exc:
            log.warning("lease %s: storage unavailable, not held this time: %s", self.path, exc.log_detail)
            self._expires = 0.0
            return False
        if not self._expires:  # newly held, not renewed: say so once
            log.info("lease %s held by %s (%s)", self.path, self.holder_id, _before(raw, current, self.holder_id))
        self._expires = now + self.ttl
        return True

    def remaining(self) -> float:
        """Seconds left of this holder's lease, by its own clock and its last write; 0 if not held."""
        return max(0.0, self._expires - self._clock()) if self._expires else 0.0

    def release(self) -> None:
        """Give the lease up if this holder has it, so that another may take it at once."""
        self._expires = 0.0
        try:
            raw = self.storage.get(self.path)
            current = parse_record(raw) if raw is not None else None
            if raw is None or current is None or current.holder != self.holder_id:
                return
            self.storage.commit(deletes=[self.path], expect={self.path: raw})
        except Conflict:  # taken over meanwhile: it is not ours to delete
            return
        except StorageUnavailable as exc:
            log.warning("lease %s: storage unavailable, left to expire: %s", self.path, exc.log_detail)
            return
        log.info("lease %s released by %s", self.path, self.holder_id)


def _before(raw: bytes | None, current: Holding | None, holder_id: str) -> str:
    if raw is None:
        return "it was free"
    if current is None:
        return "its record was unreadable"
    return "it was already ours" if current.holder == holder_id else f"{current.holder}'s had expired"


def record(holder: str, expires: float) -> bytes:
    return json.dumps({"version": RECORD_VERSION, "holder": holder, "expires": expires}).encode()


def parse_record(raw: bytes) -> Holding | None:
    """The holder and expiry in a lease record; None if it is not a lease record (it may then be taken over).

    Only ``holder`` and ``expires`` are read, so a later version that adds fields is still respected.
    """
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    holder, expires = doc.get("holder"), doc.get("expires")
    if not isinstance(holder, str) or not holder or isinstance(expires, bool) or not isinstance(expires, (int, float)):
        return None
    if not math.isfinite(expires):
        return None
    return Holding(holder, float(expires))
