"""Units of work: a request's writes, held back and committed with its audit event.

While a unit of work is current (a context variable, so each request has its
own), the barrier stages writes in it instead of committing them.  The audit
trail then commits the staged writes and the request's event in one
transaction: if the event cannot be made durable, neither can the change.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

from keyhive.storage.base import Conflict, Storage


@dataclass
class UnitOfWork:
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    must_be_absent: list[str] = field(default_factory=list)
    expect: dict[str, bytes] = field(default_factory=dict)
    after_commit: list[Callable[[], None]] = field(default_factory=list)  # run once the writes are durable

    def stage(self, storage: Storage, puts: Mapping[str, bytes], deletes: Iterable[str],
              must_be_absent: Iterable[str], expect: Mapping[str, bytes] = {}) -> None:
        """Record writes; preconditions are checked now (and again at commit)."""
        for path in must_be_absent:
            if path in self.puts or storage.get(path) is not None:
                raise Conflict(path)
            self.must_be_absent.append(path)
        for path, value in expect.items():
            if storage.get(path) != value:
                raise Conflict(path)
            self.expect[path] = value
        for path in deletes:
            self.puts.pop(path, None)
            self.deletes.append(path)
        self.puts.update(puts)

    @property
    def empty(self) -> bool:
        return not (self.puts or self.deletes)


_current: ContextVar[UnitOfWork | None] = ContextVar("keyhive_unit_of_work", default=None)


def current_work() -> UnitOfWork | None:
    return _current.get()


def commit_or_stage(storage: Storage, puts: Mapping[str, bytes], *, must_be_absent: Iterable[str] = (),
                    expect: Mapping[str, bytes] = {}, then: Callable[[], None] | None = None) -> None:
    """Commit now, or stage in the current unit of work; ``then`` runs once the writes are durable."""
    work = current_work()
    if work is None:
        storage.commit(puts, must_be_absent=must_be_absent, expect=expect)
        if then is not None:
            then()
    else:
        work.stage(storage, puts, (), must_be_absent, expect)
        if then is not None:
            work.after_commit.append(then)


@contextmanager
def unit_of_work() -> Iterator[UnitOfWork]:
    """Make a fresh unit of work current for the ``with`` block."""
    work = UnitOfWork()
    token = _current.set(work)
    try:
        yield work
    finally:
        _current.reset(token)
