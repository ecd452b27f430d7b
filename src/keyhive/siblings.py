"""A worker's side of the supervisor channel (see keyhive.supervisor for the protocol).

The node tells its siblings when it unseals, seals or takes a share; what the
siblings send is applied on the event loop, between requests, like any other
change to the node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading

from keyhive.node import Node
from keyhive.supervisor import (
    ACK,
    BROADCAST_TIMEOUT_SECONDS,
    DONE,
    MAX_MESSAGE_BYTES,
    RESET,
    SEAL,
    SEALED,
    SEQ,
    SHARE,
    UNSEAL,
    UNSEALED,
)

log = logging.getLogger("keyhive.siblings")


class Siblings:
    """Implements the node's ``Siblings`` interface over the channel to the supervisor."""

    def __init__(self, node: Node, channel: socket.socket) -> None:
        self._node = node
        self._channel = channel
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"Siblings(pid={os.getpid()})"

    def start(self) -> None:
        """On the event loop: listen to the supervisor, and let the node talk to it."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._listen, name="keyhive-siblings", daemon=True).start()
        self._node.siblings = self

    # -- the node's side (on the event loop) ---------------------------------------------
    def unsealed(self, root_key: bytes) -> None:
        self._tell_all(UNSEALED + root_key)

    def sealed(self) -> None:
        self._tell_all(SEALED)

    def share_added(self, share: str) -> None:
        self._channel.send(SHARE + share.encode())

    def shares_reset(self) -> None:
        self._channel.send(RESET)

    def _tell_all(self, message: bytes) -> None:
        """Blocks this worker's loop until every worker has applied it (normally a millisecond or two)."""
        self._done.clear()
        self._channel.send(message)
        if not self._done.wait(BROADCAST_TIMEOUT_SECONDS + 1):
            log.warning("the supervisor did not confirm that every worker applied the seal change")

    # -- the supervisor's side (a thread of its own) -----------------------------------------
    def _listen(self) -> None:
        assert self._loop is not None
        while True:
            try:
                message = self._channel.recv(MAX_MESSAGE_BYTES)
            except OSError:
                message = b""
            if not message:  # the supervisor is gone: a worker never runs on its own
                log.error("the supervisor is gone; this worker stops")
                os._exit(1)
            kind, payload = message[:1], message[1:]
            if kind == DONE:
                self._done.set()
            elif kind == SHARE:
                self._loop.call_soon_threadsafe(self._node.add_sibling_share, payload.decode())
            elif kind == RESET:
                self._loop.call_soon_threadsafe(self._node.reset_shares)
            elif kind in (UNSEAL, SEAL):
                self._loop.call_soon_threadsafe(self._apply, kind, payload)

    def _apply(self, kind: bytes, payload: bytes) -> None:
        seq, root_key = payload[:SEQ.size], payload[SEQ.size:]
        try:
            if kind == UNSEAL:
                self._node.unseal_with_root(root_key)
            else:
                self._node.seal(announce=False)
        except Exception:
            log.exception("could not apply a sibling's seal change")
        finally:
            self._channel.send(ACK + seq)
