"""Background work that falls due with time: key deletion and automatic rotation.

Each change is made in a unit of work and committed with its audit event
(CloudTrail's DeleteKey / RotateKey service events), like a request's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from keyhive import limits
from keyhive.audit import unit_of_work
from keyhive.audit.events import service_event
from keyhive.barrier import MAX_ENCRYPTIONS_PER_TERM
from keyhive.keystore import KeyRecord
from keyhive.node import Node
from keyhive.seal import SealError

log = logging.getLogger("keyhive.scheduler")


def deletion_due(key: KeyRecord, now: float) -> bool:
    return key.state == "PendingDeletion" and key.deletion_date is not None and key.deletion_date <= now


def rotation_due(key: KeyRecord, now: float) -> bool:
    return key.rotation_enabled and key.state == "Enabled" and bool(key.next_rotation) and key.next_rotation <= now


def expiry_due(key: KeyRecord, now: float) -> bool:
    return bool(key.versions) and key.valid_to is not None and key.valid_to <= now and key.state != "PendingDeletion"


def run_due_work(node: Node, now: float) -> None:
    """One pass over every key, and the barrier's own upkeep: a sealed node has nothing it can do."""
    _watch_hsm(node)
    if node.sealed:
        return
    for key in list(node.keystore.all_keys()):
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
    try:
        _barrier_upkeep(node)
        node.audit.sign_head()  # an idle writer's last events get their signature too
    except Exception:
        log.exception("barrier upkeep failed")


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
    """Rotate the barrier key before GCM's nonce bound nears, or when its interval is up;
    re-wrap old records a batch a pass."""
    if node.barrier.encryptions >= MAX_ENCRYPTIONS_PER_TERM:
        log.info("barrier key term %d rotated after %d encryptions", node.rotate_barrier(), MAX_ENCRYPTIONS_PER_TERM)
    elif node.barrier_rotation_interval and time.time() - node.barrier.active_since >= node.barrier_rotation_interval:
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
    while True:
        try:
            run_due_work(node, clock())
        except Exception:  # keep the scheduler alive; the fault goes to the log
            log.exception("scheduled work failed")
        await asyncio.sleep(interval)
