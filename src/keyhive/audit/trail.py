"""The audit trail writer: every event durable before its reply, in group commits.

Paths (events and heads are not secret and stay readable offline)::

    audit/events/{writer}/{seq:020d}   a chained record (keyhive.audit.chain.Record)
    audit/heads/{writer}               the writer's signed head
    audit/public-key                   the Ed25519 public key, base64
    audit/signing-key                  its private key, sealed by the barrier

Requests hand their event and their unit of work (staged writes) to
:meth:`AuditTrail.record`; concurrent requests are committed together in one
storage transaction on a worker thread, so one fsync serves many.  If the
commit fails, every request in it fails and none of their writes happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from keyhive import crypto
from keyhive.audit.chain import Chain, Head, Record, head_message
from keyhive.barrier import Barrier
from keyhive.errors import DependencyTimeoutException, KMSInternalException
from keyhive.storage import Conflict, Storage
from keyhive.storage.work import UnitOfWork

log = logging.getLogger("keyhive.audit")

EVENTS_PREFIX = "audit/events/"
HEADS_PREFIX = "audit/heads/"
PUBLIC_KEY_PATH = "audit/public-key"
SIGNING_KEY_PATH = "audit/signing-key"
USAGE_PREFIX = "audit/usage/"  # the last successful cryptographic use of each key (GetKeyLastUsage)
TRACKING_START_PATH = "audit/tracking-start"
# How often a busy writer signs its head: events after the last signature are chained
# but, like CloudTrail's between digest files, covered by a signature only at the next one.
SIGNING_INTERVAL = 0.5
# GetKeyLastUsage's KeyLastUsageTrackingOperation values (botocore's KMS model).
TRACKED_OPERATIONS = frozenset({
    "Decrypt", "DeriveSharedSecret", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext", "GenerateMac", "ReEncrypt", "Sign",
    "Verify", "VerifyMac", "Encapsulate", "Decapsulate",
})


def signing_key_records(barrier: Barrier) -> dict[str, bytes]:
    """A new audit signing key for an installation being initialized (barrier open)."""
    private, public = crypto.new_signing_key()
    return {
        PUBLIC_KEY_PATH: base64.b64encode(public),
        SIGNING_KEY_PATH: barrier.encrypt(SIGNING_KEY_PATH, private),
        TRACKING_START_PATH: _now_iso().encode(),
    }


def usage_entry(event: dict[str, Any]) -> tuple[str, bytes] | None:
    """The usage-index row a successful cryptographic event updates, if any."""
    if event.get("errorCode") or event.get("eventName") not in TRACKED_OPERATIONS:
        return None
    resources = event.get("resources") or []
    if not resources:
        return None
    usage = {"Operation": event["eventName"], "Timestamp": event["eventTime"],
             "CloudTrailEventId": event["eventID"], "KmsRequestId": event.get("requestID")}
    return USAGE_PREFIX + resources[-1]["ARN"], json.dumps(usage).encode()


def event_path(writer: str, seq: int) -> str:
    return f"{EVENTS_PREFIX}{writer}/{seq:020d}"


@dataclass
class _Item:
    event: dict[str, Any]
    work: UnitOfWork | None
    done: asyncio.Future[None] | None = None
    error: BaseException | None = field(default=None)


class AuditTrail:
    def __init__(self, storage: Storage, barrier: Barrier, *, durable: bool = True,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        self.storage = storage
        self.barrier = barrier
        self.durable = durable  # False: replies to read-only calls do not wait for their event
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._chain = Chain(self.writer)
        self._signing_key: bytes | None = None
        self._signed: Head | None = None  # the last signed checkpoint
        self._signed_at = 0.0
        self._on_failure = on_failure
        self._lock = threading.Lock()  # one commit at a time: the chain is sequential
        self._pending: list[_Item] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failed = False  # a commit failed: memory must be reloaded once nothing is in flight

    def __repr__(self) -> str:
        return f"AuditTrail(writer={self.writer!r}, seq={self._chain.seq}, signing={self._signing_key is not None})"

    # -- seal state -------------------------------------------------------------------
    def unsealed(self) -> None:
        raw = self.barrier.get(SIGNING_KEY_PATH)
        self._signing_key = raw

    def sealed(self) -> None:
        self._signing_key = None

    @contextlib.contextmanager
    def quiet(self) -> Iterator[bool]:
        """Hold commits back; yields whether none is pending (barrier keys may then be retired)."""
        with self._lock:
            yield not self._pending

    def sign_head(self) -> None:
        """Sign the head now if events were chained since the last signature (called when idle)."""
        with self._lock:
            if self._signing_key is None or self._chain.seq == 0 or self._pending:
                return
            if self._signed is not None and self._signed.seq == self._chain.seq:
                return
            raw = crypto.sign(self._signing_key, head_message(self.writer, self._chain.seq, self._chain.hash))
            head = Head(self.writer, self._chain.seq, self._chain.hash, base64.b64encode(raw).decode())
            self.storage.commit({HEADS_PREFIX + self.writer: json.dumps(head.to_json()).encode()})
            self._signed, self._signed_at = head, time.monotonic()

    # -- recording ------------------------------------------------------------------------
    async def record(self, event: dict[str, Any], work: UnitOfWork | None = None) -> None:
        """Return once ``event`` (and ``work``'s writes) are durable; raise if they cannot be."""
        item = _Item(event, work if work is not None and not work.empty else None)
        item.done = asyncio.get_running_loop().create_future()
        self._pending.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if self.durable or item.work is not None:
            await item.done

    def record_now(self, event: dict[str, Any], work: UnitOfWork | None = None) -> None:
        """The synchronous form, for callers outside the event loop (the scheduler's passes)."""
        item = _Item(event, work if work is not None and not work.empty else None)
        self._commit([item])
        self._settle([item])
        # A running flusher may hold a batch taken from _pending but not yet committed (its
        # thread waits for the lock): it reloads itself once that batch is durable.
        if not self._pending and (self._flusher is None or self._flusher.done()):
            self._reload_if_failed()
        if item.error is not None:
            raise item.error

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await asyncio.to_thread(self._commit, batch)
            self._settle(batch)
            for item in batch:
                assert item.done is not None
                if item.error is None:
                    item.done.set_result(None)
                else:
                    item.done.set_exception(item.error)
                    item.done.exception()  # a relaxed caller may never await it
        # Nothing is staged-but-uncommitted now (staging and queueing happen without an
        # await between them), so memory can be rebuilt from storage without losing a change.
        self._reload_if_failed()

    def _settle(self, batch: list[_Item]) -> None:
        """On the event loop: run what committed work asked to do once durable."""
        for item in batch:
            if item.error is None and item.work is not None:
                for action in item.work.after_commit:
                    action()

    def _reload_if_failed(self) -> None:
        if self._failed:
            self._failed = False
            self._on_failure()

    def _commit(self, batch: list[_Item]) -> None:
        with self._lock:
            try:
                self._write(batch)
            except Conflict:
                for item in batch:  # a rare race between two staged writes: retry one by one
                    self._commit_alone(item)
            except Exception as exc:
                self._refuse(batch, exc)

    def _commit_alone(self, item: _Item) -> None:
        try:
            try:
                self._write([item])
            except Conflict:  # the request fails; its event must say so, and nothing it staged happens
                item.error = KMSInternalException()
                item.error.log_detail = "a concurrent change conflicted with this request"
                item.event = {**item.event, "responseElements": None, "errorCode": item.error.wire_type,
                              "errorMessage": item.error.message or ""}
                item.work = None
                self._failed = True  # memory may hold what the request staged
                self._write([item])
        except Exception as exc:
            self._refuse([item], exc)

    def _refuse(self, batch: list[_Item], exc: Exception) -> None:
        log.error("audit trail commit failed (%s): %d requests refused", type(exc).__name__, len(batch))
        # A storage that is away for now is DependencyTimeoutException (clients retry); anything else internal.
        error = exc if isinstance(exc, DependencyTimeoutException) else KMSInternalException()
        for item in batch:
            item.error = error
        self._failed = True

    def _write(self, batch: list[_Item]) -> None:
        """One transaction: the batch's staged writes, its chained events, the signed head."""
        events = [item.event for item in batch]
        if self._chain.seq == 0:
            events.insert(0, self._writer_started())
        puts: dict[str, bytes] = {}
        deletes: list[str] = []
        absent: list[str] = []
        expect: dict[str, bytes] = {}
        for item in batch:
            if item.work is not None:
                claimed = set(item.work.must_be_absent) | set(item.work.expect)
                if claimed & (puts.keys() | set(absent) | set(deletes)):
                    raise Conflict("two requests in one batch create or change the same record")
                puts.update(item.work.puts)
                deletes += item.work.deletes
                absent += item.work.must_be_absent
                expect.update(item.work.expect)
        chain = Chain(self.writer)
        chain.seq, chain.hash = self._chain.seq, self._chain.hash
        last: Record | None = None
        for event in events:
            last = chain.extend(event)
            chain.accept(last)
            puts[event_path(self.writer, last.seq)] = json.dumps(last.to_json()).encode()
            usage = usage_entry(event)
            if usage is not None:
                puts[usage[0]] = usage[1]
        assert last is not None
        head = self._head(last)
        puts[HEADS_PREFIX + self.writer] = json.dumps(head.to_json()).encode()
        self.storage.commit(puts, deletes, must_be_absent=absent, expect=expect)
        self._chain.accept(last)
        if head.signature is not None and head.signed_seq is None:  # a new checkpoint, now durable
            self._signed, self._signed_at = head, time.monotonic()

    def _head(self, last: Record) -> Head:
        """The new head: freshly signed when the interval has passed, else carrying the last signature.

        Nothing changes here: a commit that fails must not leave a checkpoint that storage never got.
        """
        due = time.monotonic() - self._signed_at >= SIGNING_INTERVAL
        if self._signing_key is not None and (due or self._signed is None):
            raw = crypto.sign(self._signing_key, head_message(self.writer, last.seq, last.hash))
            return Head(self.writer, last.seq, last.hash, base64.b64encode(raw).decode())
        if self._signed is None:
            return Head(self.writer, last.seq, last.hash, None)
        return Head(self.writer, last.seq, last.hash, self._signed.signature, self._signed.seq, self._signed.hash)

    def _writer_started(self) -> dict[str, Any]:
        """The first event of a writer: names every earlier writer's head (tail-cut evidence)."""
        heads = [Head.from_json(json.loads(raw)) for _, raw in self.storage.scan(HEADS_PREFIX)]
        return {
            "eventVersion": "1.08",
            "eventSource": "keyhive.amazonaws.com",
            "eventName": "AuditWriterStarted",
            "eventType": "AwsServiceEvent",
            "eventTime": _now_iso(),
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "additionalEventData": {
                "writer": self.writer,
                "previousWriters": [{"writer": h.writer, "seq": h.seq, "hash": h.hash} for h in heads],
            },
        }


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
