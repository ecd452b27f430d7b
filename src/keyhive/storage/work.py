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
from typing import Iterable, Iterator, Mapping

from keyhive.storage.base import Conflict, Storage


@dataclass
class UnitOfWork:
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    must_be_absent: list[str] = field(default_factory=list)

    def stage(self, storage: Storage, puts: Mapping[str, bytes], deletes: Iterable[str],
              must_be_absent: Iterable[str]) -> None:
        """Record writes; preconditions are checked now (and again at commit)."""
        for path in must_be_absent:
            if path in self.puts or storage.get(path) is not None:
                raise Conflict(path)
            self.must_be_absent.append(path)
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


@contextmanager
def unit_of_work() -> Iterator[UnitOfWork]:
    """Make a fresh unit of work current for the ``with`` block."""
    work = UnitOfWork()
    token = _current.set(work)
    try:
        yield work
    finally:
        _current.reset(token)
