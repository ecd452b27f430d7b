"""Buffers and worker threads for the bulk path of a message.

Large ``hashlib`` updates, AES-GCM ``encrypt_into``/``decrypt_into`` and file reads and
writes all release the GIL. A signed message's SHA-384 (the slowest step, one core's
worth) therefore runs on one thread while another encrypts and a third writes.

- ``Block``: a reusable buffer from a ``Pool``; each holder ``release``s it, and the last
  release returns it to the pool. A pool has a fixed number of blocks, so a stage that
  falls behind stalls the one feeding it: memory stays constant.
- ``Chunks``: the input in blocks, in order. From ``ahead()`` on, chunks have fixed sizes;
  when the input is a regular file longer than one chunk, a thread reads them ahead (a
  file's reads never wait on a producer, so stopping it is prompt); otherwise ``next``
  reads in the caller's thread.
- ``Worker``: runs one step for each item, in order: in the caller's thread until
  ``INLINE_BYTES`` have gone through, then on a thread of its own, so small messages
  start no thread. After a failure, later items are only released; ``close`` raises the
  failure; ``abort`` drops what is queued. Both wait for the thread, so nothing is
  written after they return.
"""

from __future__ import annotations

import io
import os
import queue
import stat
import threading
from collections.abc import Callable
from typing import Protocol


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Block:
    __slots__ = ("_holders", "_lock", "_pool", "buf", "view")

    def __init__(self, size: int, pool: Pool) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self._pool = pool
        self._holders = 1
        self._lock = threading.Lock()

    def share(self) -> None:
        """One more holder (another stage will release it too)."""
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._holders = 1
            self._pool.put(self)


Item = tuple[bytes | memoryview, Block | None]  # what to process, and the block to release afterwards


class Pool:
    """At most ``count`` blocks of at least ``size`` bytes, made as needed; ``get`` waits for a free one."""

    def __init__(self, count: int, size: int) -> None:
        self._count, self._size, self._made = count, size, 0
        self._free: queue.SimpleQueue[Block] = queue.SimpleQueue()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def resize(self, size: int) -> None:
        """Blocks made from now on have ``size`` bytes; smaller ones are dropped as they come back."""
        self._size = size

    def get(self) -> Block:
        while True:
            with self._lock:
                can_make = self._made < self._count
                if can_make and self._free.empty():
                    self._made += 1
                    return Block(self._size, self)
            block = self._free.get()
            if len(block.buf) >= self._size:
                return block
            with self._lock:  # too small for what is read now: let it go, make another
                self._made -= 1

    def put(self, block: Block) -> None:
        self._free.put(block)


_STOP = object()
INLINE_BYTES = 1024 * 1024  # a Worker starts its thread after this much


class Worker:
    """Runs ``step(data)`` for each item put, in order; releases each item's block afterwards."""

    def __init__(self, step: Callable[[bytes | memoryview], object], name: str) -> None:
        self._step = step
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._inline_left = INLINE_BYTES
        self._error: BaseException | None = None
        self._dropping = False

    def put(self, item: Item) -> None:
        if self._error is not None:
            raise self._error
        if self._inline_left > 0:
            self._inline_left -= len(item[0])
            self._run(item)
            if self._error is not None:
                raise self._error
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item is processed; raise the first failure."""
        self._join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop what is queued (only releasing blocks) and wait for the thread."""
        self._dropping = True
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._run(item)  # type: ignore[arg-type]

    def _run(self, item: Item) -> None:
        data, block = item
        try:
            if self._error is None and not self._dropping:
                self._step(data)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by put/close
            self._error = exc
        finally:
            if block is not None:
                block.release()


class Chunks:
    """``src`` read into blocks of a ``Pool`` of ``count`` blocks."""

    def __init__(self, src: Readable, count: int, size: int) -> None:
        self._fill = filler(src)
        self._pool = Pool(count, size)
        self._regular_file = _is_regular_file(src)
        self._first = self._size = size
        self._ended = False
        self._queue: queue.SimpleQueue[tuple[Block, int, int] | BaseException] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ahead = False
        self._read_by_next = 0
        self._stop = False

    def read_now(self, size: int) -> tuple[Block, int]:
        """One block of up to ``size`` bytes, read here (before ``ahead``). Fewer: the input ended."""
        if size > self._pool.size:
            self._pool.resize(size)
        block = self._pool.get()
        try:
            n = self._fill(block.view[:size])
        except BaseException:
            block.release()
            raise
        self._ended = n < size
        return block, n

    def ahead(self, first: int, size: int) -> None:
        """From now on ``next`` gives a chunk of ``first`` bytes, then chunks of ``size``."""
        self._first, self._size = first, size
        self._pool.resize(max(first, size))
        self._ahead = True

    def next(self) -> tuple[Block | None, int]:
        """The next chunk and its length; (None, 0) once the input has ended."""
        if self._ended:
            return None, 0
        if self._thread is None:
            # The first chunk is read here, so that an input of one chunk starts no thread.
            if not (self._ahead and self._regular_file and self._read_by_next):
                want, self._first = self._first, self._size
                self._read_by_next += 1
                return self.read_now(want)
            self._thread = threading.Thread(target=self._read_ahead, name="keyhive-envelope-read", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        block, n, want = item
        self._ended = n < want
        return block, n

    def close(self) -> None:
        """Stop reading ahead; every block read ahead goes back to the pool."""
        if self._thread is None:
            return
        self._stop = True
        while True:
            self._drain()
            self._thread.join(0.01)
            if not self._thread.is_alive():
                break
        self._drain()
        self._thread = None

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, BaseException):
                item[0].release()

    def _read_ahead(self) -> None:
        want = self._first
        while not self._stop:
            block = self._pool.get()
            if self._stop:
                block.release()
                return
            try:
                n = self._fill(block.view[:want])
            except BaseException as exc:  # noqa: BLE001 - handed to the reader by next()
                block.release()
                self._queue.put(exc)
                return
            self._queue.put((block, n, want))
            if n < want:
                return
            want = self._size


def _is_regular_file(src: object) -> bool:
    try:
        return stat.S_ISREG(os.fstat(src.fileno()).st_mode)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def filler(src: Readable) -> Callable[[memoryview], int]:
    """``fill(view)``: read from ``src`` until ``view`` is full or the input ends; the bytes read."""
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        def fill(view: memoryview) -> int:
            got, want = 0, len(view)
            while got < want:
                n = readinto(view[got:] if got else view)
                if n is None:
                    raise BlockingIOError("the input is non-blocking and has no data ready")
                if n == 0:
                    break
                got += n
            return got
        return fill

    read = src.read

    def fill_by_read(view: memoryview) -> int:
        got, want = 0, len(view)
        while got < want:
            data = read(want - got)
            if data is None:
                raise BlockingIOError("the input is non-blocking and has no data ready")
            if not data:
                break
            if len(data) > want - got:
                raise ValueError("the input returned more bytes than asked for")
            view[got: got + len(data)] = data
            got += len(data)
        return got
    return fill_by_read


def writer(dst: Writable) -> Callable[[bytes | memoryview], None]:
    """``write(data)``: all of ``data`` to ``dst``.

    io objects (files, pipes, BytesIO) copy what they are given, so they get views of
    our buffers; any other writer gets ``bytes``, which it may keep.
    """
    write = dst.write
    takes_views = isinstance(dst, io.IOBase)

    def write_all(data: bytes | memoryview) -> None:
        if not takes_views and not isinstance(data, bytes):
            data = bytes(data)
        while True:
            n = write(data)  # type: ignore[arg-type]
            if not isinstance(n, int) or n >= len(data):
                return
            if n <= 0:
                raise BlockingIOError("the output is non-blocking and took nothing")
            data = data[n:]  # a raw writer that took part of it
    return write_all
