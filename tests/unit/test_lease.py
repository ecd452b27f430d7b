"""The storage lease: one holder at a time across threads, storages, processes and nodes.

Every test runs on a real SQLiteStorage (two instances opened on one file are what two
processes do); one runs on the session's throwaway PostgreSQL.  Time is an injected
clock wherever expiry matters.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import pytest

from keyhive.barrier import UNSEALED_PREFIXES
from keyhive.keystore import KeyRecord
from keyhive.lease import LEASES_PREFIX, Lease, parse_record
from keyhive.node import Node
from keyhive.scheduler import KEYS_PER_STEP, MIN_LEASE_TTL_SECONDS, due_work, run_due_work, scheduler_lease
from keyhive.storage import Storage, StorageUnavailable
from keyhive.storage.sqlite import SQLiteStorage
from tests.postgres import cluster

TTL = 30.0
PATH = LEASES_PREFIX + "scheduler"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keyhive.db"


@pytest.fixture
def storage(db: Path) -> Iterator[SQLiteStorage]:
    s = SQLiteStorage(db)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def holder_in(storage: Storage) -> str | None:
    raw = storage.get(PATH)
    return None if raw is None else json.loads(raw)["holder"]


# -- one holder ------------------------------------------------------------------------------

def test_a_free_lease_is_taken_and_the_other_holder_is_refused(storage: SQLiteStorage, clock: Clock) -> None:
    a = Lease(storage, "scheduler", "a", TTL, clock)
    b = Lease(storage, "scheduler", "b", TTL, clock)
    assert a.try_hold()
    assert not b.try_hold()
    assert holder_in(storage) == "a"
    assert a.remaining() == TTL and b.remaining() == 0.0


def test_two_storages_on_one_file_see_one_holder(db: Path, clock: Clock) -> None:
    first, second = SQLiteStorage(db), SQLiteStorage(db)
    try:
        a = Lease(first, "scheduler", "a", TTL, clock)
        b = Lease(second, "scheduler", "b", TTL, clock)
        assert a.try_hold() and not b.try_hold()
        clock.now += TTL / 2
        assert a.try_hold() and not b.try_hold()  # renewed: still a's after the first ttl
        clock.now += TTL * 0.9
        assert not b.try_hold()
        assert holder_in(second) == "a"
    finally:
        first.close()
        second.close()


def test_renewal_moves_the_expiry_forward(storage: SQLiteStorage, clock: Clock) -> None:
    a = Lease(storage, "scheduler", "a", TTL, clock)
    assert a.try_hold()
    clock.now += 10
    assert a.try_hold()
    assert json.loads(storage.get(PATH) or b"")["expires"] == clock.now + TTL
    assert a.remaining() == TTL
    # A new Lease object for the same holder (a restarted scheduler task) renews it too.
    assert Lease(storage, "scheduler", "a", TTL, clock).try_hold()


def test_an_expired_lease_is_taken_over(storage: SQLiteStorage, clock: Clock) -> None:
    a = Lease(storage, "scheduler", "a", TTL, clock)
    b = Lease(storage, "scheduler", "b", TTL, clock)
    assert a.try_hold()
    clock.now += TTL - 0.001  # a died: it renews no more
    assert not b.try_hold()
    assert 0 < a.remaining() < 0.01
    clock.now += 0.002
    assert a.remaining() == 0.0
    assert b.try_hold()
    assert holder_in(storage) == "b"
    assert not a.try_hold()  # a came back: b holds it now
    assert a.remaining() == 0.0


def test_release_lets_another_take_it_at_once(storage: SQLiteStorage, clock: Clock) -> None:
    a = Lease(storage, "scheduler", "a", TTL, clock)
    b = Lease(storage, "scheduler", "b", TTL, clock)
    assert a.try_hold()
    b.release()  # not b's to give up
    assert holder_in(storage) == "a"
    a.release()
    assert storage.get(PATH) is None and a.remaining() == 0.0
    assert b.try_hold()
    a.release()  # a no longer holds it: b keeps it
    assert holder_in(storage) == "b"


def test_leases_of_different_names_are_independent(storage: SQLiteStorage, clock: Clock) -> None:
    assert Lease(storage, "scheduler", "a", TTL, clock).try_hold()
    assert Lease(storage, "other-job", "b", TTL, clock).try_hold()


def test_the_record_is_small_json_outside_the_barrier(storage: SQLiteStorage, clock: Clock) -> None:
    assert Lease(storage, "scheduler", "a", TTL, clock).try_hold()
    assert PATH.startswith(UNSEALED_PREFIXES)
    assert json.loads(storage.get(PATH) or b"") == {"version": 1, "holder": "a", "expires": clock.now + TTL}


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"holder": "x"}', b'{"holder": "x", "expires": Infinity}',
                                 b'{"holder": "", "expires": 1e20}', b'{"holder": "x", "expires": true}',
                                 b'{"holder": "x", "expires": 1e20, "pad": "' + b"y" * 2000 + b'"}'])
def test_an_unreadable_record_is_taken_over(storage: SQLiteStorage, clock: Clock, raw: bytes) -> None:
    assert parse_record(raw) is None
    storage.commit({PATH: raw})
    assert Lease(storage, "scheduler", "a", TTL, clock).try_hold()
    assert holder_in(storage) == "a"


def test_a_later_version_with_more_fields_is_respected(storage: SQLiteStorage, clock: Clock) -> None:
    storage.commit({PATH: json.dumps({"version": 2, "holder": "x", "expires": clock.now + 5, "node": "n1"}).encode()})
    assert not Lease(storage, "scheduler", "a", TTL, clock).try_hold()


@pytest.mark.parametrize(("name", "holder", "ttl"), [("", "a", 1.0), ("a/b", "a", 1.0), ("x", "", 1.0), ("x", "a", 0.0)])
def test_bad_arguments_are_refused(storage: SQLiteStorage, name: str, holder: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        Lease(storage, name, holder, ttl)


# -- storage outages -------------------------------------------------------------------------

class Unreachable:
    """A storage whose database has gone away (a real backend raises the same on a lost connection)."""

    def get(self, path: str) -> bytes | None:
        raise StorageUnavailable("connection refused")

    def commit(self, puts: Mapping[str, bytes] = {}, deletes: Iterable[str] = (), *,
               must_be_absent: Iterable[str] = (), expect: Mapping[str, bytes] = {}) -> None:
        raise StorageUnavailable("connection refused")


class FailsOnCommit(SQLiteStorage):
    """Reads work; the commit is lost (a connection that died while committing)."""

    def commit(self, *args: object, **kwargs: object) -> None:
        raise StorageUnavailable("lost the connection while committing")


def test_an_unreachable_storage_means_not_held_and_never_raises(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    lease = Lease(Unreachable(), "scheduler", "a", TTL, clock)  # type: ignore[arg-type]
    assert not lease.try_hold()
    lease.release()
    assert lease.remaining() == 0.0
    assert "storage unavailable" in caplog.text


def test_a_lost_renewal_means_not_held(db: Path, clock: Clock) -> None:
    good = SQLiteStorage(db)
    bad = FailsOnCommit(db)
    try:
        assert Lease(good, "scheduler", "a", TTL, clock).try_hold()
        a = Lease(bad, "scheduler", "a", TTL, clock)
        assert not a.try_hold() and a.remaining() == 0.0
        a.release()  # left to expire
        assert holder_in(good) == "a"
    finally:
        good.close()
        bad.close()


# -- races: exactly one winner ---------------------------------------------------------------

def race(contenders: list[Callable[[], bool]]) -> list[bool]:
    """Run every contender at the same moment, each in a thread of its own; their results."""
    start = threading.Barrier(len(contenders))
    results: list[bool | None] = [None] * len(contenders)

    def run(i: int) -> None:
        start.wait()
        results[i] = contenders[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(contenders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None for r in results)
    return [bool(r) for r in results]


def test_threads_on_one_storage_race_and_one_wins(storage: SQLiteStorage, clock: Clock) -> None:
    for _ in range(5):
        leases = [Lease(storage, "scheduler", f"t{i}", TTL, clock) for i in range(8)]
        results = race([lease.try_hold for lease in leases])
        assert results.count(True) == 1
        assert holder_in(storage) == f"t{results.index(True)}"
        clock.now += TTL + 1  # expired: the next round is a takeover race


def test_threads_on_separate_storages_race_and_one_wins(db: Path, clock: Clock) -> None:
    storages = [SQLiteStorage(db) for _ in range(6)]
    try:
        for _ in range(3):
            leases = [Lease(s, "scheduler", f"s{i}", TTL, clock) for i, s in enumerate(storages)]
            results = race([lease.try_hold for lease in leases])
            assert results.count(True) == 1
            clock.now += TTL + 1
    finally:
        for s in storages:
            s.close()


def _contend(db: str, holder: str, start: multiprocessing.synchronize.Barrier,
             results: multiprocessing.Queue[tuple[str, bool]]) -> None:
    """One process: open the database as a server process does, wait for the others, try."""
    storage = SQLiteStorage(Path(db))
    try:
        lease = Lease(storage, "scheduler", holder, TTL)
        start.wait(timeout=30)
        results.put((holder, lease.try_hold()))
    finally:
        storage.close()


def test_processes_race_and_one_wins(db: Path) -> None:
    SQLiteStorage(db).close()  # the schema exists before they start
    context = multiprocessing.get_context("spawn")
    count = 4
    start = context.Barrier(count)
    results: multiprocessing.Queue[tuple[str, bool]] = context.Queue()
    processes = [context.Process(target=_contend, args=(str(db), f"p{i}", start, results)) for i in range(count)]
    for p in processes:
        p.start()
    outcome = dict(results.get(timeout=60) for _ in processes)
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    winners = [holder for holder, held in outcome.items() if held]
    assert len(winners) == 1 and len(outcome) == count
    storage = SQLiteStorage(db)
    try:
        assert holder_in(storage) == winners[0]
    finally:
        storage.close()


# -- PostgreSQL: nodes sharing one database --------------------------------------------------

def test_nodes_on_one_postgres_database_see_one_holder(request: pytest.FixtureRequest, clock: Clock) -> None:
    url = cluster(request.config).new_database()  # skips without PostgreSQL (fails under CI)
    from keyhive.storage.postgres import PostgresStorage

    nodes = [PostgresStorage(url, max_size=4) for _ in range(2)]
    try:
        for _ in range(3):
            leases = [Lease(nodes[i % 2], "scheduler", f"n{i}", TTL, clock) for i in range(6)]
            results = race([lease.try_hold for lease in leases])
            assert results.count(True) == 1
            winner = results.index(True)
            assert holder_in(nodes[0]) == holder_in(nodes[1]) == f"n{winner}"
            assert leases[winner].try_hold()  # renewed
            clock.now += TTL + 1  # the winner dies: the next round takes over
        leases[winner].release()
        assert nodes[1].get(PATH) is None
    finally:
        for s in nodes:
            s.close()


# -- the scheduler: cluster-wide work in the lease holder only ---------------------------------

@pytest.fixture
def two_nodes(db: Path) -> Iterator[tuple[Node, Node]]:
    """Two nodes (two processes) on one database, both unsealed with the same share."""
    storages = [SQLiteStorage(db), SQLiteStorage(db)]
    first, second = (Node(s, account_id="111122223333") for s in storages)
    share = first.initialize(1, 1).shares[0]
    assert first.submit_share(share) and second.submit_share(share)
    yield first, second
    for s in storages:
        s.close()


def test_only_the_holder_deletes_a_due_key(two_nodes: tuple[Node, Node]) -> None:
    first, second = two_nodes
    assert first.process_id != second.process_id
    run_due_work(second, 0.0)  # the first pass anywhere takes the lease
    assert holder_in(first.storage) == second.process_id
    ks = first.keystore
    due = ks.create_key(KeyRecord(ks.new_key_id(), "111122223333", "us-east-1", created=1.0,
                                  state="PendingDeletion", deletion_date=10.0, pending_window_days=7))
    run_due_work(first, 100.0)  # not the holder: the key stays
    assert first.keystore.get_key("111122223333", "us-east-1", due.key_id) is not None
    run_due_work(second, 100.0)
    assert second.keystore.get_key("111122223333", "us-east-1", due.key_id) is None


def test_a_sealed_node_gives_the_lease_up(two_nodes: tuple[Node, Node]) -> None:
    first, second = two_nodes
    run_due_work(first, 0.0)
    assert holder_in(first.storage) == first.process_id
    first.seal()
    run_due_work(first, 0.0)
    assert first.storage.get(PATH) is None
    run_due_work(second, 0.0)
    assert holder_in(first.storage) == second.process_id


def test_the_scheduler_ttl_spans_several_passes_and_never_less_than_the_floor(two_nodes: tuple[Node, Node]) -> None:
    first, _ = two_nodes
    assert scheduler_lease(first, 0.05).ttl == MIN_LEASE_TTL_SECONDS
    assert scheduler_lease(first, 60.0).ttl == 180.0


def test_a_pass_over_many_keys_yields_to_the_event_loop_between_batches(two_nodes: tuple[Node, Node]) -> None:
    first, _ = two_nodes
    ks = first.keystore
    for _ in range(2 * KEYS_PER_STEP + 1):
        ks.create_key(KeyRecord(ks.new_key_id(), "111122223333", "us-east-1", created=1.0))
    assert sum(1 for _ in due_work(first, 0.0)) == 2  # after key 100 and key 200
