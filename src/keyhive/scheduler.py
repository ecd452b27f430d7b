"""Background work that falls due with time: key deletion and automatic rotation.

Each change is made in a unit of work and committed with its audit event
(CloudTrail's DeleteKey / RotateKey service events), like a request's.

Several processes, on several nodes, may share one storage.  What concerns the
stored keys (deletion, rotation, expiry of imported material, the barrier key's
interval rotation, re-wrap and retirement of old terms) runs once per cluster: only
in the process that holds the storage lease ``scheduler``.  What concerns the
process itself runs in every process, every pass: watching its own HSM session,
signing the head of its own audit chain, and rotating the barrier key when its own
encryption count nears the GCM bound (no other process can see that count).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterator

from keyhive import limits
from keyhive.audit import unit_of_work
from keyhive.audit.events import service_event
from keyhive.barrier import MAX_ENCRYPTIONS_PER_TERM
from keyhive.keystore import KeyRecord
from keyhive.lease import Lease
from keyhive.node import Node
from keyhive.seal import SealError

log = logging.getLogger("keyhive.scheduler")

KEYS_PER_STEP = 100  # keys looked at between two turns of the event loop (about 1 ms of work)
LEASE_NAME = "scheduler"
# The holder renews every pass; 3 intervals let it miss two (a slow pass, a storage
# hiccup) before another process takes over.  The floor keeps the ttl far above clock
# skew between nodes, PostgreSQL's retry window (RETRY_SECONDS, 5 s), SQLite's busy
# timeout (5 s) and one long job (a re-wrap batch, a retirement scan).  A process
# that dies holding it delays the cluster's due work by at most the ttl; one that
# shuts down releases it at once.
LEASE_INTERVALS = 3
MIN_LEASE_TTL_SECONDS = 30.0


def scheduler_lease(node: Node, interval: float = 0.0) -> Lease:
    """This process's claim on the cluster's scheduled work, for passes every ``interval`` seconds."""
    ttl = max(LEASE_INTERVALS * interval, MIN_LEASE_TTL_SECONDS)
    return Lease(node.storage, LEASE_NAME, node.process_id, ttl)


def deletion_due(key: KeyRecord, now: float) -> bool:
    return key.state == "PendingDeletion" and key.deletion_date is not None and key.deletion_date <= now


def rotation_due(key: KeyRecord, now: float) -> bool:
    return key.rotation_enabled and key.state == "Enabled" and bool(key.next_rotation) and key.next_rotation <= now


def expiry_due(key: KeyRecord, now: float) -> bool:
    return bool(key.versions) and key.valid_to is not None and key.valid_to <= now and key.state != "PendingDeletion"


def run_due_work(node: Node, now: float, lease: Lease | None = None) -> None:
    """One pass, all at once (see ``due_work``)."""
    for _ in due_work(node, now, lease):
        pass


def due_work(node: Node, now: float, lease: Lease | None = None) -> Iterator[None]:
    """One pass: this process's upkeep, and the cluster's due work if this process holds ``lease``.

    A generator: it yields between batches of keys, where the server's runner lets the
    event loop serve requests (a pass over 100,000 keys takes about a second).  ``now`` is
    the key life-cycle clock; the lease keeps wall-clock time.  A sealed node has nothing
    it can do, and gives the lease up so that another process does it.
    """
    if lease is None:
        lease = scheduler_lease(node)
    _watch_hsm(node)
    if node.sealed:
        lease.release()
        return
    try:
        if lease.try_hold():
            yield from _cluster_work(node, now, lease)
    finally:
        try:
            if node.barrier.encryptions >= MAX_ENCRYPTIONS_PER_TERM:
                log.info("barrier key term %d rotated after %d encryptions", node.rotate_barrier(),
                         MAX_ENCRYPTIONS_PER_TERM)
            node.audit.sign_head()  # an idle writer's last events get their signature too
        except Exception:
            log.exception("this process's upkeep failed")


def _cluster_work(node: Node, now: float, lease: Lease) -> Iterator[None]:
    """Every due key, then the barrier's upkeep; stops if the lease is lost meanwhile."""
    for count, key in enumerate(node.keystore.all_keys(), start=1):
        if count % KEYS_PER_STEP == 0:
            yield
        if node.sealed or not _still_held(lease):
            return
        if expiry_due(key, now):
            _audited(node, key, "DeleteExpiredKeyMaterial", {"keyState": "PendingImport"},
                     lambda k=key: node.keystore.drop_material(k))
            log.info("deleted the expired imported material of %s", key.arn)
        elif deletion_due(key, now):
            _audited(node, key, "DeleteKey", {"keyState": "PendingDeletion"}, lambda k=key: node.keystore.destroy(k))
            log.info("deleted %s: its waiting period ended", key.arn)
        elif rotation_due(key, now):
            _audited(node, key, "RotateKey", {"rotationType": "AUTOMATIC"}, lambda k=key: _rotate(node, k, now))
            log.info("rotated %s on schedule", key.arn)
    if not _still_held(lease):
        return
    try:
        _barrier_upkeep(node)
    except Exception:
        log.exception("barrier upkeep failed")


def _still_held(lease: Lease) -> bool:
    """Renew once half the ttl is gone, so that a long pass never outlives its lease."""
    if lease.remaining() > lease.ttl / 2 or lease.try_hold():
        return True
    log.warning("lost the scheduler lease during a pass: another process goes on with the due work")
    return False


def _watch_hsm(node: Node) -> None:
    """An HSM that goes away seals the node (crypto calls then fail fast); when it is back, unseal."""
    if node.hsm is None or node.status()["seal_type"] != node.hsm.kind:
        return
    try:
        node.hsm.check()  # type: ignore[attr-defined]
    except SealError as exc:
        if not node.sealed:
            log.error("HSM check failed, sealing: %s", exc)
            node.seal()
        return
    if node.sealed:
        try:
            node.auto_unseal()
            log.info("HSM reachable again: unsealed")
        except SealError as exc:
            log.error("HSM unseal failed: %s", exc)


def _barrier_upkeep(node: Node) -> None:
    """Rotate the barrier key when its interval is up; re-wrap old records a batch a pass.

    (The rotation by encryption count is each process's own: see ``run_due_work``.)"""
    if node.barrier_rotation_interval and time.time() - node.barrier.active_since >= node.barrier_rotation_interval:
        log.info("barrier key term %d rotated: its interval was up", node.rotate_barrier())
    active, oldest = node.barrier.terms
    if oldest != active:
        done, retired = node.rewrap_and_retire()
        if retired:
            log.info("barrier key terms %s retired: no record uses them", retired)


def _rotate(node: Node, key: KeyRecord, now: float) -> None:
    key.next_rotation = now + (key.rotation_period_days or limits.DEFAULT_ROTATION_PERIOD_DAYS) * limits.SECONDS_PER_DAY
    node.keystore.rotate(key, "AUTOMATIC", now)


def _audited(node: Node, key: KeyRecord, name: str, details: dict[str, str], change: Callable[[], object]) -> None:
    with unit_of_work() as work:
        change()
    node.audit.record_now(service_event(name, key.account, key.region, key.arn, details), work)


async def run_forever(node: Node, clock: Callable[[], float], interval: float) -> None:
    """A pass every ``interval`` seconds until cancelled (server shutdown), which releases the lease."""
    lease = scheduler_lease(node, interval)
    try:
        while True:
            try:
                for _ in due_work(node, clock(), lease):
                    await asyncio.sleep(0)  # requests go on between batches of keys
            except Exception:  # keep the scheduler alive; the fault goes to the log
                log.exception("scheduled work failed")
            await asyncio.sleep(interval)
    finally:
        lease.release()
