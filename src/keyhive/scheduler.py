"""Background work that falls due with time: key deletion and automatic rotation."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from keyhive.keystore import Keystore
from keyhive.node import Node
from keyhive.service.rotation import rotate_due_keys

log = logging.getLogger("keyhive.scheduler")


def delete_expired_keys(keystore: Keystore, now: float) -> list[str]:
    """Destroy every key whose waiting period has ended, with all its material."""
    destroyed = []
    for key in list(keystore.all_keys()):
        if key.state == "PendingDeletion" and key.deletion_date is not None and key.deletion_date <= now:
            keystore.destroy(key)
            destroyed.append(key.arn)
    return destroyed


def run_due_work(node: Node, now: float) -> None:
    """One pass: a sealed node has nothing it can do."""
    if node.sealed:
        return
    for arn in delete_expired_keys(node.keystore, now):
        log.info("deleted %s: its waiting period ended", arn)
    for arn in rotate_due_keys(node.keystore, now):
        log.info("rotated %s on schedule", arn)


async def run_forever(node: Node, clock: Callable[[], float], interval: float) -> None:
    while True:
        try:
            run_due_work(node, clock())
        except Exception:  # keep the scheduler alive; the fault goes to the log
            log.exception("scheduled work failed")
        await asyncio.sleep(interval)
