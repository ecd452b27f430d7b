"""The storage conformance suite, run unchanged against every backend.

``exercise_storage(factory)`` calls ``factory()`` for a fresh, empty storage and
checks each promise of :class:`keyhive.storage.Storage`.
"""

from __future__ import annotations

import queue
import time
from typing import Callable

from keyhive.storage.base import CHANGE_DELAY_SECONDS, Conflict, Storage


def exercise_storage(factory: Callable[[], Storage]) -> None:
    checks = (_get_put_delete, _scan_order_prefix_and_paging, _scan_code_point_order, _atomic_commit,
              _expected_values, _binary_values)
    for check in checks:
        store = factory()
        try:
            check(store)
        finally:
            store.close()


def _get_put_delete(s: Storage) -> None:
    assert s.get("a/b") is None
    s.commit({"a/b": b"1"})
    assert s.get("a/b") == b"1"
    s.commit({"a/b": b"2"})
    assert s.get("a/b") == b"2"
    s.commit(deletes=["a/b"])
    assert s.get("a/b") is None
    s.commit(deletes=["never/existed"])  # deleting nothing is fine


def _scan_order_prefix_and_paging(s: Storage) -> None:
    s.commit({"k/3": b"c", "k/1": b"a", "k/2": b"b", "k0": b"x", "j/9": b"y", "k/2/sub": b"d"})
    assert [p for p, _ in s.scan("k/")] == ["k/1", "k/2", "k/2/sub", "k/3"]
    assert s.scan("k/", limit=2) == [("k/1", b"a"), ("k/2", b"b")]
    assert [p for p, _ in s.scan("k/", after="k/2")] == ["k/2/sub", "k/3"]
    assert s.scan("k/", after="k/3") == []
    assert s.scan("nothing/") == []


def _scan_code_point_order(s: Storage) -> None:
    """Paths order by code point (= UTF-8 bytes), never by a locale's collation."""
    paths = ["o/B", "o/a", "o/a-b", "o/a_b", "o/a:b", "o/ab", "o/A", "o/é", "o/z", "o/\U0001f41d",
             "o/\U0010ffff", "o/\U0010ffffz", "o\U0010ffff", "\U0010ffff"]
    s.commit({p: p.encode() for p in paths})
    assert s.scan("o/") == [(p, p.encode()) for p in sorted(paths) if p.startswith("o/")]
    assert [p for p, _ in s.scan("")] == sorted(paths)
    assert [p for p, _ in s.scan("o/\U0010ffff")] == ["o/\U0010ffff", "o/\U0010ffffz"]
    assert [p for p, _ in s.scan("o/", after="o/z")] == ["o/é", "o/\U0001f41d", "o/\U0010ffff", "o/\U0010ffffz"]


def _atomic_commit(s: Storage) -> None:
    s.commit({"x/1": b"1"})
    try:
        s.commit({"x/2": b"2"}, deletes=["x/1"], must_be_absent=["x/1"])
    except Conflict:
        pass
    else:
        raise AssertionError("commit should have conflicted")
    assert s.get("x/1") == b"1" and s.get("x/2") is None  # nothing applied
    s.commit({"x/2": b"2"}, deletes=["x/1"], must_be_absent=["x/3"])
    assert s.get("x/1") is None and s.get("x/2") == b"2"


def _expected_values(s: Storage) -> None:
    s.commit({"e/1": b"old"})
    for expect in ({"e/1": b"other"}, {"e/2": b"absent"}):
        try:
            s.commit({"e/1": b"new"}, expect=expect)
        except Conflict:
            pass
        else:
            raise AssertionError(f"commit with expect={expect} should have conflicted")
        assert s.get("e/1") == b"old"
    s.commit({"e/1": b"new"}, expect={"e/1": b"old"})
    assert s.get("e/1") == b"new"


def _binary_values(s: Storage) -> None:
    value = bytes(range(256)) * 4
    s.commit({"bin": value})
    assert s.get("bin") == value


def exercise_change_feed(open_pair: Callable[[], tuple[Storage, Storage]]) -> None:
    """Two storage objects on one database (two processes, or two nodes): each hears the other's changes."""
    a, b = open_pair()
    heard: queue.Queue[list[str] | None] = queue.Queue()
    watch = a.watch(heard.put)
    try:
        b.commit({"kms/k/2": b"x", "kms/k/1": b"y", "audit/events/1": b"e"})
        b.commit({"iam/u": b"z"}, deletes=["kms/k/1"])
        a.commit({"kms/own": b"a"})  # a's own commits are not reported back to it
        b.commit({"audit/events/2": b"e"})  # nobody caches the trail: not announced
        try:
            b.commit({"kms/never": b"n"}, must_be_absent=["kms/k/2"])
        except Conflict:
            pass
        b.commit({"core/last": b"1"})
        assert _next_change(heard) == ["kms/k/1", "kms/k/2"]
        assert _next_change(heard) == ["iam/u", "kms/k/1"]
        assert _next_change(heard) == ["core/last"]  # in commit order; the conflicted commit announced nothing
        time.sleep(CHANGE_DELAY_SECONDS)
        assert _drain(heard) == []
    finally:
        watch.stop()
    b.commit({"kms/after": b"1"})
    time.sleep(CHANGE_DELAY_SECONDS)
    assert _drain(heard) == [], "a stopped watch must be silent"
    a.close()
    b.close()


def _next_change(heard: queue.Queue[list[str] | None]) -> list[str]:
    """The next change heard within the documented delay (a "changes unknown" is skipped)."""
    deadline = time.monotonic() + CHANGE_DELAY_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            change = heard.get(timeout=left)
        except queue.Empty:
            break
        if change is not None:
            return change
    raise AssertionError(f"no change heard within {CHANGE_DELAY_SECONDS} s")


def _drain(heard: queue.Queue[list[str] | None]) -> list[list[str]]:
    changes = []
    while not heard.empty():
        change = heard.get()
        if change is not None:
            changes.append(change)
    return changes
