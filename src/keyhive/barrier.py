"""The barrier: every record at rest is encrypted and bound to its storage path.

Barrier keys are numbered by term.  The keyring (all terms) is itself a record
sealed by the root key; the root key is handed in by a seal at unseal time and
lives only in this object's memory.  A record encrypted under one path fails to
decrypt under any other, so a row copied or moved elsewhere is useless.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Iterable, Mapping

from keyhive import crypto
from keyhive.blob import MalformedBlob, Record, parse_record
from keyhive.errors import KMSInternalException, SealedException, StoredRecordCorrupt
from keyhive.storage import Conflict, Storage
from keyhive.storage.work import commit_or_stage, current_work

log = logging.getLogger("keyhive.barrier")

KEYRING_PATH = "core/keyring"
ROOT_TERM = 0  # records sealed directly by the root key (only the keyring)
# Paths outside the barrier: seal state, and the audit trail (readable offline by design).
UNSEALED_PREFIXES = ("core/", "audit/events/", "audit/heads/", "audit/usage/", "audit/public-key",
                     "audit/tracking-start")
# Random 96-bit GCM nonces: NIST SP 800-38D bounds one key at 2^32 encryptions; rotate
# the barrier key long before that.
MAX_ENCRYPTIONS_PER_TERM = 2**30


class Barrier:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._keys: dict[int, bytes] = {}
        self._active_term = 0
        self._root_key: bytes | None = None  # kept while unsealed: rotation rewrites the keyring
        self._keyring_raw = b""  # the stored keyring this process read: a rewrite expects it unchanged
        self._stale = False  # another process changed the keyring: reload before encrypting under it
        self.active_since = 0.0  # when the active term was made (epoch seconds)
        self.encryptions = 0  # under the active term, by this process

    def __repr__(self) -> str:
        return f"Barrier(sealed={self.sealed}, terms={sorted(self._keys)})"

    @property
    def sealed(self) -> bool:
        return not self._keys

    # -- life cycle ---------------------------------------------------------------
    def create_keyring(self, root_key: bytes) -> dict[str, bytes]:
        """The sealed keyring record for a new installation (term 1), to be committed."""
        keyring = {1: crypto.new_key()}
        return {KEYRING_PATH: self._wrap_keyring(root_key, keyring, active=1, since=time.time())}

    def unseal(self, root_key: bytes) -> None:
        """Load the keyring with ``root_key``; raises crypto.DecryptionFailed if it is wrong."""
        raw = self.storage.get(KEYRING_PATH)
        if raw is None:
            error = KMSInternalException()
            error.log_detail = f"{KEYRING_PATH} is missing from storage"
            raise error
        doc = json.loads(self._open(root_key, KEYRING_PATH, raw))
        self._keyring_raw = raw
        self._keys = {int(t): base64.b64decode(k) for t, k in doc["keys"].items()}
        self._active_term = int(doc["active"])
        self.active_since = float(doc.get("since", 0.0))
        self._root_key = root_key

    def reload(self) -> None:
        """Read the keyring again: another process or node rotated or retired a term."""
        if self._root_key is not None:
            self.unseal(self._root_key)
            self._stale = False

    def keyring_changed(self) -> None:
        """Another process changed the keyring (or may have): the next write reads it first."""
        self._stale = True

    def seal(self) -> None:
        self._keys = {}
        self._active_term = 0
        self._root_key = None

    # -- barrier key rotation ---------------------------------------------------------
    @property
    def terms(self) -> tuple[int, int]:
        """(active term, oldest term still in the keyring)."""
        keys = self._require_keys()
        return self._active_term, min(keys)

    def rotate(self) -> int:
        """Add a new term, active once durable; every older term keeps decrypting.

        Another worker or node may have rotated meanwhile: start from the stored keyring,
        and write only if it is still that one (Conflict otherwise: nothing is lost).
        """
        self._require_keys()
        self.reload()
        keys = dict(self._require_keys())
        term = max(keys) + 1
        keys[term] = crypto.new_key()
        self._write_keyring(keys, term, time.time())
        return term

    def rewrap(self, batch: int = 500) -> int:
        """Re-encrypt up to ``batch`` records of older terms under the active term; returns how many.

        Each write is conditional on the record being unchanged, so a concurrent update wins.
        """
        active, _ = self.terms
        done = 0
        for path, raw in self.storage.scan(""):
            if done >= batch:
                break
            if path.startswith(UNSEALED_PREFIXES):
                continue
            try:
                if parse_record(raw).term == active:
                    continue
            except MalformedBlob:
                continue
            try:
                self.storage.commit({path: self.encrypt(path, self.decrypt(path, raw))}, expect={path: raw})
            except Conflict:
                continue  # changed meanwhile: the new value is already under the active term
            except StoredRecordCorrupt as exc:  # reported, left as it is; the other records go on
                log.error("%s; not re-wrapped", exc.log_detail)
                continue
            done += 1
        return done

    def retire_unused_terms(self) -> list[int]:
        """Drop every older term that no stored record uses any more; returns the retired terms."""
        self._require_keys()
        self.reload()
        keys = dict(self._require_keys())
        in_use = {self._active_term}
        for path, raw in self.storage.scan(""):
            if not path.startswith(UNSEALED_PREFIXES):
                try:
                    in_use.add(parse_record(raw).term)
                except MalformedBlob:
                    pass
        retired = sorted(t for t in keys if t not in in_use)
        if retired:
            self._write_keyring({t: k for t, k in keys.items() if t in in_use}, self._active_term, self.active_since)
        return retired

    def _write_keyring(self, keys: dict[int, bytes], active: int, since: float) -> None:
        """Store a new keyring; this process uses it only once it is durable (with its audit event)."""
        if self._root_key is None:
            raise SealedException()

        raw = self._wrap_keyring(self._root_key, keys, active, since)

        def use() -> None:
            if active != self._active_term:
                self.encryptions = 0
            self._keys, self._active_term, self.active_since, self._keyring_raw = keys, active, since, raw

        commit_or_stage(self.storage, {KEYRING_PATH: raw}, expect={KEYRING_PATH: self._keyring_raw}, then=use)

    @staticmethod
    def _wrap_keyring(root_key: bytes, keys: Mapping[int, bytes], active: int, since: float) -> bytes:
        doc = {"active": active, "since": since,
               "keys": {str(t): base64.b64encode(k).decode() for t, k in keys.items()}}
        return _seal_record(root_key, ROOT_TERM, KEYRING_PATH, json.dumps(doc).encode())

    # -- records ------------------------------------------------------------------
    def encrypt(self, path: str, plaintext: bytes) -> bytes:
        if self._stale:  # write under the newest term; a read of an unknown term reloads by itself
            self.reload()
        key = self._require_keys().get(self._active_term)
        assert key is not None
        self.encryptions += 1
        return _seal_record(key, self._active_term, path, plaintext)

    def decrypt(self, path: str, data: bytes) -> bytes:
        keys = self._require_keys()
        try:
            record = parse_record(data)
            if record.term not in keys:  # a term newer than this process's keyring: another one rotated
                self.reload()
                keys = self._require_keys()
            return crypto.open_sealed(keys[record.term], record.nonce, record.sealed, record.header + path.encode())
        except (MalformedBlob, KeyError, crypto.DecryptionFailed):
            raise StoredRecordCorrupt(path) from None

    def get(self, path: str) -> bytes | None:
        self._require_keys()
        raw = self.storage.get(path)
        return None if raw is None else self.decrypt(path, raw)

    def scan(self, prefix: str, *, after: str = "", limit: int | None = None) -> list[tuple[str, bytes]]:
        self._require_keys()
        return [(p, self.decrypt(p, v)) for p, v in self.storage.scan(prefix, after=after, limit=limit)]

    def commit(
        self,
        puts: Mapping[str, bytes] = {},
        deletes: Iterable[str] = (),
        *,
        must_be_absent: Iterable[str] = (),
    ) -> None:
        """Commit now, or stage in the current unit of work (see keyhive.storage.work)."""
        sealed = {path: self.encrypt(path, value) for path, value in puts.items()}
        work = current_work()
        if work is None:
            self.storage.commit(sealed, deletes, must_be_absent=must_be_absent)
        else:
            work.stage(self.storage, sealed, deletes, must_be_absent)

    def _require_keys(self) -> dict[int, bytes]:
        if not self._keys:
            raise SealedException()
        return self._keys

    @staticmethod
    def _open(key: bytes, path: str, data: bytes) -> bytes:
        try:
            record = parse_record(data)
        except MalformedBlob:
            raise crypto.DecryptionFailed() from None
        return crypto.open_sealed(key, record.nonce, record.sealed, record.header + path.encode())


def _seal_record(key: bytes, term: int, path: str, plaintext: bytes) -> bytes:
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    header = Record(term, nonce, b"").header
    return header + crypto.seal_from_parts(key, nonce, plaintext, header + path.encode())


def seal_with_key(key: bytes, path: str, plaintext: bytes) -> bytes:
    """A record sealed by a key outside the keyring (a seal wrapping the root key)."""
    return _seal_record(key, ROOT_TERM, path, plaintext)


def open_with_key(key: bytes, path: str, data: bytes) -> bytes:
    return Barrier._open(key, path, data)
