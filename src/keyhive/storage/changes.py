"""Change feeds: how a process hears that another process or node changed a cached record.

Each storage object has a random ``writer`` id that it stamps on what it commits; its
watcher skips its own stamps, so a process hears only about the others.  A watcher
runs in a daemon thread and hands the changed paths to a callback; when it cannot
know what it missed (a lost connection, a log pruned past its cursor), it hands over
None, and the callback forgets everything cached.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Callable

from keyhive.storage.base import ChangeHandler

log = logging.getLogger("keyhive.storage")


def new_writer_id() -> str:
    return secrets.token_hex(8)


def encode_change(writer: str, paths: list[str] | None) -> str:
    return json.dumps({"w": writer, "p": paths}, separators=(",", ":"))


def decode_change(payload: str) -> tuple[str, list[str] | None]:
    doc = json.loads(payload)
    return doc["w"], doc["p"]


class WatchThread:
    """Runs ``loop(stopping)`` in a daemon thread; a crash in the callback is logged, not fatal."""

    def __init__(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(loop,), name=name, daemon=True)
        self._thread.start()

    def _run(self, loop: Callable[[threading.Event], None]) -> None:
        while not self._stopping.is_set():
            try:
                loop(self._stopping)
            except Exception:  # the watcher must outlive a bad callback or a dropped connection
                log.exception("change watcher failed; restarting it")
                self._stopping.wait(0.5)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)


def deliver(on_change: ChangeHandler, own_writer: str, writer: str, paths: list[str] | None) -> None:
    if writer != own_writer:
        on_change(paths)
