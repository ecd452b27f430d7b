"""The audit trail's tamper evidence: hash chains per writer, signed heads. Pure.

Each writer (one server process) numbers its events 1, 2, 3 ... and links each
to the one before::

    hash(n) = SHA-256( hash(n-1) || uint64(n) || canonical(event n) )
    hash(0) = SHA-256( "keyhive-audit-v1|" || writer )

With every commit the writer stores its head (last seq and hash).  At intervals
(``SIGNING_INTERVAL`` in keyhive.audit.trail) the head is signed with the audit
signing key (Ed25519; private part under the barrier, public part exportable),
and later heads carry that signed checkpoint forward until the next signature.
A new writer's first event names the heads of every earlier writer, so cutting
the tail of a finished chain is detected too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

GENESIS_PREFIX = b"keyhive-audit-v1|"
HEAD_PREFIX = b"keyhive-audit-head-v1|"


def canonical(event: dict[str, Any]) -> bytes:
    """One byte string per event: sorted keys, no spaces, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def genesis(writer: str) -> str:
    return hashlib.sha256(GENESIS_PREFIX + writer.encode()).hexdigest()


def link(prev_hash: str, seq: int, event: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + seq.to_bytes(8, "big") + canonical(event)).hexdigest()


def head_message(writer: str, seq: int, hash_hex: str) -> bytes:
    return HEAD_PREFIX + f"{writer}|{seq}|{hash_hex}".encode()


@dataclass(frozen=True)
class Record:
    writer: str
    seq: int
    prev: str
    hash: str
    event: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"writer": self.writer, "seq": self.seq, "prev": self.prev, "hash": self.hash, "event": self.event}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Record:
        return cls(doc["writer"], doc["seq"], doc["prev"], doc["hash"], doc["event"])


@dataclass(frozen=True)
class Head:
    writer: str
    seq: int
    hash: str
    signature: str | None  # base64 Ed25519 over head_message() of the signed checkpoint; None if never signed
    signed_seq: int | None = None  # the checkpoint the signature covers, when older than the head
    signed_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"writer": self.writer, "seq": self.seq, "hash": self.hash, "signature": self.signature,
                "signed_seq": self.signed_seq, "signed_hash": self.signed_hash}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Head:
        return cls(doc["writer"], doc["seq"], doc["hash"], doc["signature"],
                   doc.get("signed_seq"), doc.get("signed_hash"))

    @property
    def checkpoint(self) -> tuple[int, str]:
        """(seq, hash) that the signature covers."""
        if self.signed_seq is None or self.signed_hash is None:
            return self.seq, self.hash
        return self.signed_seq, self.signed_hash


class Chain:
    """A writer's running chain state: what the next record links to."""

    def __init__(self, writer: str) -> None:
        self.writer = writer
        self.seq = 0
        self.hash = genesis(writer)

    def extend(self, event: dict[str, Any]) -> Record:
        """The next record; the chain advances only when ``accept`` is called."""
        seq = self.seq + 1
        return Record(self.writer, seq, self.hash, link(self.hash, seq, event), event)

    def accept(self, record: Record) -> None:
        self.seq, self.hash = record.seq, record.hash


@dataclass(frozen=True)
class Problem:
    writer: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"writer {self.writer} record {self.seq}: {self.reason}"


def verify(
    records: Iterable[Record],
    heads: Iterable[Head],
    signature_valid: Callable[[bytes, bytes], bool] | None,
) -> list[Problem]:
    """Every problem found, first bad record of each writer first; empty when the trail is intact.

    ``signature_valid(message, signature)`` checks a head signature with the
    trusted public key; None skips signature checks (and says so).  A head's
    signature covers its checkpoint (the head itself, or the last signed head it
    carries forward): records after the checkpoint are chained but not yet signed.
    A head written before its node was ever unsealed has no signature; it is
    accepted when a later writer's intact chain names it (that chain's signed
    head covers it).
    """
    problems: list[Problem] = []
    by_writer: dict[str, list[Record]] = {}
    for record in records:
        by_writer.setdefault(record.writer, []).append(record)
    heads_by_writer = {h.writer: h for h in heads}
    known: dict[tuple[str, int], str] = {}
    complete: list[str] = []
    for writer, chain in by_writer.items():
        chain.sort(key=lambda r: r.seq)
        previous = genesis(writer)
        for expected, record in enumerate(chain, start=1):
            if record.seq != expected:
                problems.append(Problem(writer, record.seq, "duplicate record: inserted") if record.seq < expected
                                else Problem(writer, expected, f"missing (found {record.seq} next): deleted or reordered"))
                break
            if record.prev != previous or record.hash != link(previous, record.seq, record.event):
                problems.append(Problem(writer, record.seq, "hash mismatch: edited, inserted or reordered"))
                break
            known[(writer, record.seq)] = record.hash
            previous = record.hash
        else:
            complete.append(writer)
    references = _references(by_writer, known)
    for writer in complete:
        head = heads_by_writer.get(writer)
        named = head is not None and any(ref[:3] == (writer, head.seq, head.hash) for ref in references)
        problems += _check_head(writer, by_writer[writer], head, signature_valid, named_later=named)
    for writer in heads_by_writer.keys() - by_writer.keys():
        problems.append(Problem(writer, 1, f"every record of this writer is missing (its head says {heads_by_writer[writer].seq})"))
    verified = Counter(writer for writer, _ in known)  # each writer's intact prefix: records 1..n
    for ref_writer, ref_seq, ref_hash, by in references:
        if known.get((ref_writer, ref_seq)) != ref_hash:
            first = ref_seq if (ref_writer, ref_seq) in known else verified[ref_writer] + 1
            problems.append(Problem(ref_writer, first, f"writer {by.writer} record {by.seq} names record {ref_seq} "
                                                       "of this writer, which is missing or changed"))
    return problems


def _check_head(writer: str, chain: list[Record], head: Head | None,
                signature_valid: Callable[[bytes, bytes], bool] | None, *, named_later: bool) -> list[Problem]:
    last = chain[-1]
    if head is None:
        return [Problem(writer, last.seq, "no head record for this writer")]
    if head.seq > last.seq:
        return [Problem(writer, last.seq + 1, f"head says {head.seq} records but the chain ends at {last.seq}: tail cut")]
    if head.seq < last.seq:
        return [Problem(writer, head.seq + 1, f"head says {head.seq} records but the chain goes on to {last.seq}: "
                                              "records appended after the head")]
    if head.hash != last.hash:
        return [Problem(writer, head.seq, "head does not match the chain: head edited or chain rewritten")]
    if signature_valid is None or (head.signature is None and named_later):
        return []  # no key to check with; or written while sealed and covered by a later writer's chain
    if head.signature is None:
        return [Problem(writer, head.seq, "head is not signed")]
    signed_seq, signed_hash = head.checkpoint
    if type(signed_seq) is not int or signed_seq < 1:
        return [Problem(writer, head.seq, "the head's signed checkpoint is malformed")]
    if signed_seq > head.seq:
        return [Problem(writer, head.seq + 1, f"the head is signed at record {signed_seq}, past the chain's end: tail cut")]
    if chain[signed_seq - 1].hash != signed_hash:
        return [Problem(writer, signed_seq, "the signed checkpoint does not match the chain: records edited or the head forged")]
    try:
        signature = base64.b64decode(head.signature, validate=True)
    except (ValueError, TypeError):
        signature = b""
    if not signature_valid(head_message(writer, signed_seq, signed_hash), signature):
        return [Problem(writer, signed_seq, "head signature does not verify")]
    return []  # records after the checkpoint are chained but not yet signed (see SIGNING_INTERVAL)


def _references(by_writer: dict[str, list[Record]],
                known: dict[tuple[str, int], str]) -> list[tuple[str, int, str, Record]]:
    """(writer, seq, hash, naming record): the earlier writers' final heads that intact records name."""
    found = []
    for chain in by_writer.values():
        for record in chain:
            if known.get((record.writer, record.seq)) != record.hash:
                continue  # only records whose own chain verifies can vouch for another
            data = record.event.get("additionalEventData") if isinstance(record.event, dict) else None
            refs = data.get("previousWriters") if isinstance(data, dict) else None
            for ref in refs if isinstance(refs, list) else []:
                try:
                    found.append((str(ref["writer"]), int(ref["seq"]), str(ref["hash"]), record))
                except (KeyError, TypeError, ValueError):
                    found.append(("?", 0, "", record))  # a malformed reference names nothing that exists
    return found
