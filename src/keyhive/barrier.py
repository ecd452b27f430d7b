"""The barrier: every record at rest is encrypted and bound to its storage path.

Barrier keys are numbered by term.  The keyring (all terms) is itself a record
sealed by the root key; the root key is handed in by a seal at unseal time and
lives only in this object's memory.  A record encrypted under one path fails to
decrypt under any other, so a row copied or moved elsewhere is useless.
"""

from __future__ import annotations

import base64
import json
from typing import Iterable, Mapping

from keyhive import crypto
from keyhive.blob import MalformedBlob, Record, parse_record
from keyhive.errors import KMSInternalException, SealedException, StoredRecordCorrupt
from keyhive.storage import Storage
from keyhive.storage.work import current_work

KEYRING_PATH = "core/keyring"
ROOT_TERM = 0  # records sealed directly by the root key (only the keyring)


class Barrier:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._keys: dict[int, bytes] = {}
        self._active_term = 0

    def __repr__(self) -> str:
        return f"Barrier(sealed={self.sealed}, terms={sorted(self._keys)})"

    @property
    def sealed(self) -> bool:
        return not self._keys

    # -- life cycle ---------------------------------------------------------------
    def create_keyring(self, root_key: bytes) -> dict[str, bytes]:
        """The sealed keyring record for a new installation (term 1), to be committed."""
        keyring = {1: crypto.new_key()}
        return {KEYRING_PATH: self._wrap_keyring(root_key, keyring, active=1)}

    def unseal(self, root_key: bytes) -> None:
        """Load the keyring with ``root_key``; raises crypto.DecryptionFailed if it is wrong."""
        raw = self.storage.get(KEYRING_PATH)
        if raw is None:
            error = KMSInternalException()
            error.log_detail = f"{KEYRING_PATH} is missing from storage"
            raise error
        doc = json.loads(self._open(root_key, KEYRING_PATH, raw))
        self._keys = {int(t): base64.b64decode(k) for t, k in doc["keys"].items()}
        self._active_term = int(doc["active"])

    def seal(self) -> None:
        self._keys = {}
        self._active_term = 0

    @staticmethod
    def _wrap_keyring(root_key: bytes, keys: Mapping[int, bytes], active: int) -> bytes:
        doc = {"active": active, "keys": {str(t): base64.b64encode(k).decode() for t, k in keys.items()}}
        return _seal_record(root_key, ROOT_TERM, KEYRING_PATH, json.dumps(doc).encode())

    # -- records ------------------------------------------------------------------
    def encrypt(self, path: str, plaintext: bytes) -> bytes:
        key = self._require_keys().get(self._active_term)
        assert key is not None
        return _seal_record(key, self._active_term, path, plaintext)

    def decrypt(self, path: str, data: bytes) -> bytes:
        keys = self._require_keys()
        try:
            record = parse_record(data)
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
