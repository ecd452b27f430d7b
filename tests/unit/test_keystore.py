"""The keystore: keys, material versions, rotation, destruction, caches.

Each test runs on a real SQLiteStorage behind an unsealed barrier, and checks the
raw storage where a promise is about what is (or is not) stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from keyhive import blob, crypto
from keyhive import keystore as keystore_module
from keyhive.barrier import Barrier
from keyhive.errors import SealedException, StoredRecordCorrupt
from keyhive.keystore import LRU, AliasRecord, KeyRecord, Keystore
from keyhive.storage import Conflict
from keyhive.storage.sqlite import SQLiteStorage

ACCOUNT, REGION = "111122223333", "us-east-1"


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


@pytest.fixture
def ks(barrier: Barrier) -> Keystore:
    return Keystore(barrier)


def fresh(barrier: Barrier, root_key: bytes) -> Keystore:
    """A keystore with empty caches over the same storage (another node, or a restart)."""
    other = Barrier(barrier.storage)
    other.unseal(root_key)
    return Keystore(other)


def new_key(ks: Keystore, account: str = ACCOUNT, region: str = REGION, **fields: object) -> KeyRecord:
    record = KeyRecord(ks.new_key_id(), account, region, created=1_700_000_000.0, **fields)  # type: ignore[arg-type]
    return ks.create_key(record)


def raw_paths(storage: SQLiteStorage) -> list[str]:
    return [p for p, _ in storage.scan("")]


def raw_bytes(storage: SQLiteStorage) -> bytes:
    files = [storage.path, Path(f"{storage.path}-wal")]
    return b"".join(p.read_bytes() for p in files if p.exists())


# -- keys and material ------------------------------------------------------------------

def test_create_key_persists_metadata_and_one_material_version(ks: Keystore, barrier: Barrier, root_key: bytes) -> None:
    key = new_key(ks, description="payroll")
    assert [v.version for v in key.versions] == [1] and key.versions[0].rotation_type is None
    assert len(key.versions[0].material_id) == 64
    assert key.arn == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key.key_id}"
    material = ks.material(key, 1)
    assert material is not None and len(material) == 32
    other = fresh(barrier, root_key)
    loaded = other.get_key(ACCOUNT, REGION, key.key_id)
    assert loaded == key
    assert other.material(loaded, 1) == material
    assert other.material(loaded, 2) is None


def test_keys_differ_and_ids_are_uuids(ks: Keystore) -> None:
    a, b = new_key(ks), new_key(ks)
    assert a.key_id != b.key_id and len(a.key_id) == 36
    assert ks.material(a, 1) != ks.material(b, 1)
    assert a.versions[0].material_id != b.versions[0].material_id


def test_creating_an_existing_key_id_conflicts(ks: Keystore) -> None:
    key = new_key(ks)
    material = ks.material(key, 1)
    with pytest.raises(Conflict):
        ks.create_key(KeyRecord(key.key_id, ACCOUNT, REGION, created=1.0))
    ks.forget()
    assert ks.material(key, 1) == material  # the original material was not replaced


def test_keys_are_visible_only_in_their_account_and_region(ks: Keystore) -> None:
    key = new_key(ks)
    assert ks.get_key(ACCOUNT, REGION, key.key_id) is not None
    assert ks.get_key("444455556666", REGION, key.key_id) is None
    assert ks.get_key(ACCOUNT, "eu-west-1", key.key_id) is None
    assert ks.get_key(ACCOUNT, REGION, Keystore.new_key_id()) is None


def test_list_key_ids_pages_in_order(ks: Keystore) -> None:
    ids = sorted(new_key(ks).key_id for _ in range(5))
    new_key(ks, account="444455556666")
    assert ks.list_key_ids(ACCOUNT, REGION, "", 10) == ids
    assert ks.list_key_ids(ACCOUNT, REGION, "", 2) == ids[:2]
    assert ks.list_key_ids(ACCOUNT, REGION, ids[1], 2) == ids[2:4]
    assert ks.list_key_ids(ACCOUNT, REGION, ids[-1], 2) == []


def test_save_persists_changes(ks: Keystore, barrier: Barrier, root_key: bytes) -> None:
    key = new_key(ks)
    key.state = "Disabled"
    key.tags = [{"TagKey": "team", "TagValue": "blue"}]
    ks.save(key)
    loaded = fresh(barrier, root_key).get_key(ACCOUNT, REGION, key.key_id)
    assert loaded is not None and loaded.state == "Disabled" and loaded.tags == key.tags


# -- rotation -----------------------------------------------------------------------------

def test_rotate_adds_a_version_and_keeps_the_old_ones(ks: Keystore, barrier: Barrier, root_key: bytes) -> None:
    key = new_key(ks)
    v1 = ks.material(key, 1)
    assert v1 is not None
    old_blob = blob.seal_kms_blob(v1, key.key_id, 1, b"written before rotation", {"k": "v"})
    added = ks.rotate(key, "ON_DEMAND", now=1_800_000_000.0)
    ks.rotate(key, "AUTOMATIC", now=1_900_000_000.0)
    assert added.version == 2 and added.rotation_type == "ON_DEMAND" and added.created == 1_800_000_000.0
    assert [v.version for v in key.versions] == [1, 2, 3] and key.current.version == 3

    other = fresh(barrier, root_key)
    loaded = other.get_key(ACCOUNT, REGION, key.key_id)
    assert loaded is not None and [v.version for v in loaded.versions] == [1, 2, 3]
    materials = [other.material(loaded, v) for v in (1, 2, 3)]
    assert materials[0] == v1 and len(set(materials)) == 3 and None not in materials
    parsed = blob.parse_kms_blob(old_blob)
    assert blob.open_kms_blob(materials[0], parsed, {"k": "v"}) == b"written before rotation"
    with pytest.raises(crypto.DecryptionFailed):
        blob.open_kms_blob(materials[2], parsed, {"k": "v"})


# -- destruction --------------------------------------------------------------------------

def test_destroy_removes_metadata_material_and_aliases(
    ks: Keystore, storage: SQLiteStorage, barrier: Barrier, root_key: bytes
) -> None:
    doomed, kept = new_key(ks), new_key(ks)
    ks.rotate(doomed, "ON_DEMAND", now=2.0)
    for name, target in (("alias/doomed-1", doomed), ("alias/doomed-2", doomed), ("alias/kept", kept)):
        assert ks.put_alias(ACCOUNT, REGION, AliasRecord(name, target.key_id, 1.0, 1.0), create=True)
    assert ks.material(doomed, 2) is not None  # now cached
    before = raw_paths(storage)
    assert sum(doomed.key_id in p for p in before) == 4  # metadata, 2 material versions, location index

    ks.destroy(doomed)

    after = raw_paths(storage)
    assert not [p for p in after if doomed.key_id in p]
    assert not [p for p in after if "doomed" in p]
    assert sorted(set(before) - set(after)) == sorted(
        [p for p in before if doomed.key_id in p or "doomed" in p]
    )
    assert ks.get_key(ACCOUNT, REGION, doomed.key_id) is None  # not even from the cache
    assert ks.material(doomed, 1) is None and ks.material(doomed, 2) is None
    assert [a.name for a in ks.aliases(ACCOUNT, REGION)] == ["alias/kept"]
    other = fresh(barrier, root_key)
    assert other.get_key(ACCOUNT, REGION, kept.key_id) is not None
    assert other.material(kept, 1) == ks.material(kept, 1)


# -- aliases ------------------------------------------------------------------------------

def test_aliases(ks: Keystore) -> None:
    key = new_key(ks)
    alias = AliasRecord("alias/app", key.key_id, 1.0, 1.0)
    assert ks.put_alias(ACCOUNT, REGION, alias, create=True)
    assert not ks.put_alias(ACCOUNT, REGION, AliasRecord("alias/app", "x", 2.0, 2.0), create=True)
    assert ks.get_alias(ACCOUNT, REGION, "alias/app") == alias
    assert ks.put_alias(ACCOUNT, REGION, AliasRecord("alias/app", "y", 1.0, 3.0), create=False)
    assert ks.get_alias(ACCOUNT, REGION, "alias/app") == AliasRecord("alias/app", "y", 1.0, 3.0)
    assert ks.get_alias("444455556666", REGION, "alias/app") is None
    ks.delete_alias(ACCOUNT, REGION, "alias/app")
    assert ks.get_alias(ACCOUNT, REGION, "alias/app") is None and ks.aliases(ACCOUNT, REGION) == []


# -- secrecy and sealing ------------------------------------------------------------------

def test_no_material_or_metadata_in_the_raw_database(ks: Keystore, storage: SQLiteStorage) -> None:
    key = new_key(ks, description="a distinctive description")
    ks.rotate(key, "ON_DEMAND", now=2.0)
    ks.put_alias(ACCOUNT, REGION, AliasRecord("alias/x", key.key_id, 1.0, 1.0), create=True)
    raw = raw_bytes(storage)
    assert key.key_id.encode() in raw  # paths are in the clear: we read the right bytes
    for version in (1, 2):
        material = ks.material(key, version)
        assert material is not None and material not in raw and material.hex().encode() not in raw
    assert b"distinctive description" not in raw
    assert key.versions[0].material_id.encode() not in raw


def test_forget_drops_cached_secrets_and_a_sealed_barrier_refuses(ks: Keystore, barrier: Barrier) -> None:
    key = new_key(ks)
    ks.material(key, 1)
    barrier.seal()
    ks.forget()
    with pytest.raises(SealedException):
        ks.get_key(ACCOUNT, REGION, key.key_id)
    with pytest.raises(SealedException):
        ks.material(key, 1)
    with pytest.raises(SealedException):
        new_key(ks)


def test_records_are_bound_to_their_key(
    ks: Keystore, storage: SQLiteStorage, barrier: Barrier, root_key: bytes
) -> None:
    """Copying one key's material row over another's must not work (move attack)."""
    a, b = new_key(ks), new_key(ks)
    path = f"kms/{ACCOUNT}/{REGION}/material/{{}}/0000000001"
    storage.commit({path.format(b.key_id): storage.get(path.format(a.key_id)) or b""})
    with pytest.raises(StoredRecordCorrupt):
        fresh(barrier, root_key).material(b, 1)


# -- caches -------------------------------------------------------------------------------

def test_lru_evicts_the_least_recently_used() -> None:
    lru: LRU[str, int] = LRU(3)
    for i, k in enumerate("abc"):
        lru.put(k, i)
    assert lru.get("a") == 0  # a is now the most recent
    lru.put("d", 3)
    assert lru.get("b") is None and [lru.get(k) for k in "acd"] == [0, 2, 3]
    lru.put("c", 20)  # replacing refreshes without growing
    lru.put("e", 4)
    assert lru.get("a") is None and [lru.get(k) for k in "cde"] == [20, 3, 4]
    lru.drop("c")
    lru.drop("never")
    assert lru.get("c") is None
    lru.clear()
    assert [lru.get(k) for k in "de"] == [None, None]


def test_keystore_caches_are_bounded(ks: Keystore, barrier: Barrier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore_module, "METADATA_CACHE_SIZE", 3)
    monkeypatch.setattr(keystore_module, "MATERIAL_CACHE_SIZE", 4)
    small = Keystore(barrier)
    keys = [new_key(small) for _ in range(10)]
    for key in keys:
        small.rotate(key, "ON_DEMAND", now=2.0)
        assert small.material(key, 1) is not None and small.material(key, 2) is not None
    assert len(small._meta._items) == 3 and len(small._material._items) == 4
    for key in keys:  # evicted entries still load from storage
        loaded = small.get_key(ACCOUNT, REGION, key.key_id)
        assert loaded is not None and [v.version for v in loaded.versions] == [1, 2]
        assert small.material(key, 1) == ks.material(key, 1)
    assert len(small._meta._items) == 3 and len(small._material._items) == 4
    assert keystore_module.METADATA_CACHE_SIZE > 0 and keystore_module.MATERIAL_CACHE_SIZE > 0


# -- the scheduler's view -----------------------------------------------------------------

def test_all_keys_lists_every_key_of_every_account(ks: Keystore) -> None:
    keys = [new_key(ks), new_key(ks, account="444455556666"), new_key(ks, region="eu-west-1")]
    ids = {k.key_id for k in keys}
    assert {k.key_id for k in ks.all_keys()} == ids


def test_all_keys_ignores_an_alias_named_like_a_key_path(ks: Keystore) -> None:
    key = new_key(ks)
    ks.put_alias(ACCOUNT, REGION, AliasRecord("alias/key/app", key.key_id, 1.0, 1.0), create=True)
    assert [k.key_id for k in ks.all_keys()] == [key.key_id]
