"""The supervisor: a server's worker processes, and the root key passed between them.

Workers are forked from the supervisor, which starts no thread and keeps no storage
open, so a fork copies nothing half-locked.  Each worker has its own listening
socket on the one port (SO_REUSEPORT: the kernel spreads connections) and a
socketpair to the supervisor, both inherited across the fork.  Over the socketpair
(SOCK_SEQPACKET: one message per send, never split)::

    worker -> supervisor   UNSEALED root-key | SEALED | SHARE share | RESET | ACK seq
    supervisor -> worker   UNSEAL seq root-key | SEAL seq | SHARE share | RESET | DONE

A worker that unseals (a quorum of shares reached on it, or its HSM) sends the root
key; the supervisor keeps it in memory, passes it to every other worker, and answers
DONE once each has acknowledged (or ``BROADCAST_TIMEOUT_SECONDS`` passed), so that
the worker's reply means "every worker is unsealed".  Sealing goes the same way.
Shares are passed on as they arrive, and so is a refused share's reset of the
progress: the unseal calls of a quorum may land on different workers.  A worker that dies is forked again, holding the root key the
supervisor has: it starts unsealed, without anyone's help.  The root key never
goes to storage or a file.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("keyhive.supervisor")

UNSEALED, SEALED, ACK = b"U", b"S", b"A"  # from a worker
UNSEAL, SEAL, DONE = b"u", b"s", b"D"  # from the supervisor
SHARE, RESET = b"H", b"R"  # both ways: passed on to every other worker as they are
MAX_MESSAGE_BYTES = 4096
BROADCAST_TIMEOUT_SECONDS = 5.0
RESTART_PAUSE_SECONDS = 1.0  # a worker that dies young is restarted after this pause, not in a tight loop
STOP_TIMEOUT_SECONDS = 10.0
CANNOT_START = 2  # a worker's exit code when its setup failed (SystemExit): restarting would not help
SEQ = struct.Struct(">I")

# A worker's body: (its listening socket, its end of the channel, the root key if unsealed).
WorkerBody = Callable[[socket.socket, socket.socket, "bytes | None"], None]


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker on one port; a single shared one where SO_REUSEPORT is missing."""
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    sockets = []
    for _ in range(count if reuse_port else 1):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets * (count if not reuse_port else 1)


@dataclass
class _Worker:
    slot: int
    pid: int
    channel: socket.socket
    started: float


@dataclass
class _Broadcast:
    origin: int
    seq: int
    waiting: set[int] = field(default_factory=set)
    deadline: float = 0.0


class Supervisor:
    def __init__(self, sockets: list[socket.socket], body: WorkerBody, *, root_key: bytes | None = None) -> None:
        self._sockets = sockets
        self._body = body
        self._root_key = root_key
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._selector = selectors.DefaultSelector()
        self._queue: deque[tuple[int, bytes, bytes]] = deque()  # (origin, kind, root key) waiting their turn
        self._current: _Broadcast | None = None
        self._seq = 0
        self._stopping = False
        self._failed = False

    def __repr__(self) -> str:
        return f"Supervisor(workers={sorted(w.pid for w in self._workers.values())}, unsealed={self._root_key is not None})"

    def run(self) -> bool:
        """Serve until SIGTERM or SIGINT; False if a worker could not start."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for slot in range(len(self._sockets)):
            self._spawn(slot)
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.2):
                self._receive(key.data)
            self._reap()
            self._restart_due()
            if self._current is not None and time.monotonic() > self._current.deadline:
                log.warning("workers %s did not confirm the seal change in time", sorted(self._current.waiting))
                self._finish()
        self._shutdown()
        return not self._failed

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    # -- workers ------------------------------------------------------------------------
    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the worker: keep only its own socket and channel end
            code = 1
            try:
                ours.close()
                for worker in self._workers.values():
                    worker.channel.close()
                self._selector.close()
                for other in {s for s in self._sockets if s is not self._sockets[slot]}:
                    other.close()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                self._body(self._sockets[slot], theirs, self._root_key)
                code = 0
            except SystemExit as exc:
                print(exc, file=sys.stderr, flush=True)
                code = CANNOT_START if exc.code not in (None, 0) else 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        theirs.close()
        self._workers[slot] = _Worker(slot, pid, ours, time.monotonic())
        self._selector.register(ours, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self._workers.values() if w.pid == pid), None)
            if worker is None:
                continue
            self._forget(worker)
            if self._stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == CANNOT_START:
                log.error("worker %d could not start; stopping the server", worker.slot)
                self._stopping = self._failed = True
                continue
            log.error("worker %d (pid %d) died (%s); starting another", worker.slot, pid, _describe_status(status))
            young = time.monotonic() - worker.started < RESTART_PAUSE_SECONDS
            self._restart_at[worker.slot] = time.monotonic() + (RESTART_PAUSE_SECONDS if young else 0.0)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    def _forget(self, worker: _Worker) -> None:
        if self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]
            if worker.channel.fileno() in self._selector.get_map():
                self._selector.unregister(worker.channel)
            worker.channel.close()
        if self._current is not None:
            self._acked(worker.slot, self._current.seq)

    def _shutdown(self) -> None:
        for worker in self._workers.values():
            _signal(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while self._workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for worker in list(self._workers.values()):
            log.warning("worker %d did not stop in time; killing it", worker.pid)
            _signal(worker.pid, signal.SIGKILL)
            os.waitpid(worker.pid, 0)
        self._root_key = None

    # -- messages ---------------------------------------------------------------------------
    def _receive(self, slot: int) -> None:
        worker = self._workers.get(slot)
        if worker is None:
            return
        try:
            message = worker.channel.recv(MAX_MESSAGE_BYTES)
        except OSError:
            message = b""
        if not message:  # the worker is going; reaping it restarts it
            self._selector.unregister(worker.channel)
            return
        kind, payload = message[:1], message[1:]
        if kind == UNSEALED:
            self._root_key = payload
            self._queue.append((slot, UNSEAL, payload))
        elif kind == SEALED:
            self._root_key = None
            self._queue.append((slot, SEAL, b""))
        elif kind in (SHARE, RESET):
            for other in self._others(slot):
                _send(other.channel, message)
        elif kind == ACK:
            self._acked(slot, SEQ.unpack(payload)[0])
        self._next()

    def _others(self, slot: int) -> list[_Worker]:
        return [w for w in self._workers.values() if w.slot != slot]

    def _next(self) -> None:
        """Start the next queued seal change, one at a time: acknowledgements then cannot mix."""
        if self._current is not None or not self._queue:
            return
        origin, kind, root_key = self._queue.popleft()
        self._seq += 1
        broadcast = _Broadcast(origin, self._seq, deadline=time.monotonic() + BROADCAST_TIMEOUT_SECONDS)
        for other in self._others(origin):
            if _send(other.channel, kind + SEQ.pack(self._seq) + root_key):
                broadcast.waiting.add(other.slot)
        self._current = broadcast
        if not broadcast.waiting:
            self._finish()

    def _acked(self, slot: int, seq: int) -> None:
        if self._current is not None and self._current.seq == seq:
            self._current.waiting.discard(slot)
            if not self._current.waiting:
                self._finish()

    def _finish(self) -> None:
        assert self._current is not None
        origin = self._workers.get(self._current.origin)
        if origin is not None:
            _send(origin.channel, DONE)
        self._current = None
        self._next()


def _send(channel: socket.socket, message: bytes) -> bool:
    try:
        channel.send(message)
        return True
    except OSError:  # the worker is gone; reaping deals with it
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
