"""The barrier: records round-trip, and the raw store gives nothing away.

Attack tests after OpenBao's aes_gcm_test.go: _Confidential (no plaintext at rest),
_Integrity (a flipped byte fails), _Move (a record at another path fails).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyhive import barrier as barrier_module
from keyhive import blob, crypto
from keyhive.barrier import KEYRING_PATH, Barrier, open_with_key, seal_with_key
from keyhive.errors import KMSInternalException, SealedException, StoredRecordCorrupt
from keyhive.storage.sqlite import SQLiteStorage

SECRET = b"attack at dawn: 0123456789abcdef"


def raw_bytes(storage: SQLiteStorage) -> bytes:
    """Every byte SQLite has written for ``storage`` (database and write-ahead log)."""
    files = [storage.path, Path(f"{storage.path}-wal"), Path(f"{storage.path}-journal")]
    return b"".join(p.read_bytes() for p in files if p.exists())


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLiteStorage]:
    s = SQLiteStorage(tmp_path / "keyhive.db")
    yield s
    s.close()


@pytest.fixture
def root_key() -> bytes:
    return crypto.new_key()


@pytest.fixture
def barrier(storage: SQLiteStorage, root_key: bytes) -> Barrier:
    b = Barrier(storage)
    storage.commit(b.create_keyring(root_key))
    b.unseal(root_key)
    return b


def test_records_round_trip(barrier: Barrier) -> None:
    barrier.commit({"a/1": SECRET, "a/2": b"", "a/3": bytes(range(256)) * 8})
    assert barrier.get("a/1") == SECRET
    assert barrier.get("a/2") == b""
    assert barrier.get("a/3") == bytes(range(256)) * 8
    assert barrier.get("a/4") is None
    assert barrier.scan("a/") == [("a/1", SECRET), ("a/2", b""), ("a/3", bytes(range(256)) * 8)]
    assert barrier.scan("a/", after="a/1", limit=1) == [("a/2", b"")]


def test_a_second_barrier_over_the_same_storage_reads_the_records(
    barrier: Barrier, storage: SQLiteStorage, root_key: bytes
) -> None:
    barrier.commit({"a/1": SECRET})
    other = Barrier(storage)
    other.unseal(root_key)
    assert other.get("a/1") == SECRET


def test_record_layout_matches_the_docs(barrier: Barrier, storage: SQLiteStorage) -> None:
    barrier.commit({"a/1": SECRET})
    data = storage.get("a/1")
    assert data is not None and len(data) == 17 + len(SECRET) + 16
    record = blob.parse_record(data)
    assert data[0] == 1 and record.term == int.from_bytes(data[1:5], "big") == 1
    assert record.nonce == data[5:17]


def test_seal_with_key_is_a_term_0_record_as_documented(root_key: bytes) -> None:
    data = seal_with_key(root_key, "core/root", SECRET)
    assert data[:5] == b"\x01\x00\x00\x00\x00"
    # docs/ciphertext-format.md: AAD = bytes 0..17 || path
    assert AESGCM(root_key).decrypt(data[5:17], data[17:], data[:17] + b"core/root") == SECRET
    assert open_with_key(root_key, "core/root", data) == SECRET
    for key, path, bad in [
        (crypto.new_key(), "core/root", data),
        (root_key, "core/root2", data),
        (root_key, "core/root", data[:20]),
        (root_key, "core/root", b"\x02" + data[1:]),
    ]:
        with pytest.raises(crypto.DecryptionFailed):
            open_with_key(key, path, bad)


def test_nonces_are_fresh(barrier: Barrier) -> None:
    one, two = barrier.encrypt("p", SECRET), barrier.encrypt("p", SECRET)
    assert one[5:17] != two[5:17] and one != two


# -- attacks ----------------------------------------------------------------------------

def test_confidential(barrier: Barrier, storage: SQLiteStorage, root_key: bytes) -> None:
    barrier.commit({"kms/secret": SECRET, "kms/json": json.dumps({"note": "a very distinctive note"}).encode()})
    raw = raw_bytes(storage)
    assert raw, "the database file should exist"
    assert b"kms/secret" in raw  # paths are not secret; proves we are reading the right file
    for needle in (SECRET, SECRET[:12], b"distinctive note", root_key, root_key[:12]):
        assert needle not in raw
    for key in barrier._keys.values():  # the barrier keys are stored only sealed
        assert key not in raw


def test_integrity(barrier: Barrier, storage: SQLiteStorage) -> None:
    barrier.commit({"a/1": SECRET})
    good = storage.get("a/1")
    assert good is not None
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(StoredRecordCorrupt):
            barrier.decrypt("a/1", bytes(bad))
    for n in range(len(good)):
        with pytest.raises(StoredRecordCorrupt):
            barrier.decrypt("a/1", good[:n])
    storage.commit({"a/1": good[:-1] + bytes([good[-1] ^ 0x80])})  # tampered at rest
    with pytest.raises(StoredRecordCorrupt):
        barrier.get("a/1")


def test_move(barrier: Barrier, storage: SQLiteStorage) -> None:
    barrier.commit({"kms/acct/r/material/key-a/0000000001": SECRET})
    data = storage.get("kms/acct/r/material/key-a/0000000001")
    assert data is not None
    for elsewhere in (
        "kms/acct/r/material/key-b/0000000001",  # another key
        "kms/acct/r/material/key-a/0000000002",  # another version
        "kms/other/r/material/key-a/0000000001",  # another account
        "kms/acct/r/material/key-a/0000000001/",  # a suffix
        KEYRING_PATH,
    ):
        storage.commit({elsewhere: data})
        with pytest.raises(StoredRecordCorrupt):
            barrier.get(elsewhere)
    with pytest.raises(StoredRecordCorrupt):
        barrier.scan("kms/acct/r/material/key-b/")


def test_unknown_term_fails(barrier: Barrier) -> None:
    data = barrier.encrypt("a/1", SECRET)
    for term in (0, 2, 2**32 - 1):
        with pytest.raises(StoredRecordCorrupt):
            barrier.decrypt("a/1", data[:1] + term.to_bytes(4, "big") + data[5:])


def test_the_keyring_is_not_a_barrier_record(barrier: Barrier, storage: SQLiteStorage) -> None:
    keyring = storage.get(KEYRING_PATH)
    assert keyring is not None and keyring[1:5] == b"\x00\x00\x00\x00"
    with pytest.raises(StoredRecordCorrupt):
        barrier.get(KEYRING_PATH)  # term 0 belongs to the root key, not to the keyring


# -- sealing ----------------------------------------------------------------------------

def test_sealed_barrier_refuses(barrier: Barrier, storage: SQLiteStorage) -> None:
    barrier.commit({"a/1": SECRET})
    data = storage.get("a/1")
    assert data is not None
    barrier.seal()
    assert barrier.sealed and barrier._keys == {}
    with pytest.raises(SealedException):
        barrier.get("a/1")
    with pytest.raises(SealedException):
        barrier.decrypt("a/1", data)
    with pytest.raises(SealedException):
        barrier.encrypt("a/2", SECRET)
    with pytest.raises(SealedException):
        barrier.commit({"a/2": SECRET})
    with pytest.raises(SealedException):
        barrier.scan("a/")
    assert storage.get("a/2") is None
    assert "terms=[]" in repr(barrier) and SECRET.hex() not in repr(barrier)


def test_a_new_barrier_starts_sealed(storage: SQLiteStorage) -> None:
    b = Barrier(storage)
    assert b.sealed
    with pytest.raises(SealedException):
        b.encrypt("a", SECRET)


def test_unseal_again_after_seal(barrier: Barrier, root_key: bytes) -> None:
    barrier.commit({"a/1": SECRET})
    barrier.seal()
    barrier.unseal(root_key)
    assert not barrier.sealed and barrier.get("a/1") == SECRET


def test_wrong_root_key_fails(barrier: Barrier, storage: SQLiteStorage) -> None:
    fresh = Barrier(storage)
    with pytest.raises(crypto.DecryptionFailed):
        fresh.unseal(crypto.new_key())
    assert fresh.sealed


def test_tampered_keyring_fails(barrier: Barrier, storage: SQLiteStorage, root_key: bytes) -> None:
    keyring = storage.get(KEYRING_PATH)
    assert keyring is not None
    for i in (0, 3, 10, len(keyring) // 2, len(keyring) - 1):
        bad = bytearray(keyring)
        bad[i] ^= 0x04
        storage.commit({KEYRING_PATH: bytes(bad)})
        fresh = Barrier(storage)
        with pytest.raises(crypto.DecryptionFailed):
            fresh.unseal(root_key)
        assert fresh.sealed


def test_keyring_moved_elsewhere_fails(storage: SQLiteStorage, root_key: bytes) -> None:
    records = Barrier(storage).create_keyring(root_key)
    storage.commit({"core/keyring-old": records[KEYRING_PATH]})
    with pytest.raises(crypto.DecryptionFailed):
        open_with_key(root_key, KEYRING_PATH, seal_with_key(root_key, "core/keyring-old", b"{}"))
    with pytest.raises(crypto.DecryptionFailed):
        open_with_key(root_key, "core/keyring-old", records[KEYRING_PATH])


def test_missing_keyring(storage: SQLiteStorage) -> None:
    with pytest.raises(KMSInternalException):
        Barrier(storage).unseal(crypto.new_key())


def test_keyring_content(storage: SQLiteStorage, root_key: bytes) -> None:
    records = Barrier(storage).create_keyring(root_key)
    assert list(records) == [KEYRING_PATH]
    doc = json.loads(open_with_key(root_key, KEYRING_PATH, records[KEYRING_PATH]))
    assert doc["active"] == 1 and list(doc["keys"]) == ["1"]
    assert barrier_module.ROOT_TERM == 0
