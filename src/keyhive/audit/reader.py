"""Reading the trail back: search, export, and verification, online or offline.

Works on any storage (a running node's, or a data directory opened while the
server is down: events are not sealed) and on export files (JSON lines).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from keyhive import crypto
from keyhive.audit.chain import Head, Problem, Record, verify
from keyhive.audit.trail import EVENTS_PREFIX, HEADS_PREFIX, PUBLIC_KEY_PATH, TRACKING_START_PATH, USAGE_PREFIX
from keyhive.storage import Storage

EXPORT_FORMAT = "keyhive-audit-export-v1"
Position = tuple[str, str, int]  # (eventTime, writer, seq): see position()


@dataclass(frozen=True)
class Trail:
    records: list[Record]
    heads: list[Head]
    public_key: bytes | None


def load(storage: Storage) -> Trail:
    records = [_stored_record(path, raw) for path, raw in storage.scan(EVENTS_PREFIX)]
    heads = [_stored_head(path, raw) for path, raw in storage.scan(HEADS_PREFIX)]
    key = storage.get(PUBLIC_KEY_PATH)
    return Trail(records, heads, base64.b64decode(key) if key else None)


def _stored_record(path: str, raw: bytes) -> Record:
    """The record at ``path``, placed by its path (writer and seq), not by what its value claims.

    A value moved to another place, or one that cannot be read, then fails the
    chain check at that place instead of passing unnoticed or stopping the reader.
    """
    writer, _, number = path[len(EVENTS_PREFIX):].rpartition("/")
    seq = int(number) if number.isdigit() else 0
    try:
        doc = json.loads(raw)
        return Record(writer, seq, doc["prev"], doc["hash"], doc["event"])
    except (ValueError, KeyError, TypeError):
        return Record(writer, seq, "", "", {})


def _stored_head(path: str, raw: bytes) -> Head:
    try:
        doc = json.loads(raw)
        signed_seq = doc.get("signed_seq")
        return Head(path[len(HEADS_PREFIX):], int(doc["seq"]), str(doc["hash"]), doc["signature"],
                    None if signed_seq is None else int(signed_seq), doc.get("signed_hash"))
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"the head at {path} is unreadable") from None


def of_account(trail: Trail, account: str) -> Trail:
    """Only the events of one account (its principals' calls, and calls on its resources)."""
    def mine(event: dict[str, Any]) -> bool:
        return account in (event.get("recipientAccountId"), (event.get("userIdentity") or {}).get("accountId")) or any(
            r.get("accountId") == account for r in event.get("resources") or [])

    return Trail([r for r in trail.records if mine(r.event)], [], None)


def last_usage(storage: Storage, key_arn: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the key's last successful cryptographic use, when tracking began), from the usage index."""
    raw = storage.get(USAGE_PREFIX + key_arn)
    start = storage.get(TRACKING_START_PATH)
    return (json.loads(raw) if raw else None), (start.decode() if start else None)


@dataclass(frozen=True)
class Filters:
    key: str | None = None  # key id or ARN, matched against the event's resources
    principal: str | None = None  # ARN or user name
    event_name: str | None = None
    errors_only: bool = False
    start: str | None = None  # ISO 8601, inclusive
    end: str | None = None  # ISO 8601, exclusive

    def match(self, event: dict[str, Any]) -> bool:
        identity = event.get("userIdentity") or {}
        time = event.get("eventTime", "")
        return (
            (self.key is None or any(self.key in r.get("ARN", "") for r in event.get("resources") or []))
            and (self.principal is None or self.principal in (identity.get("arn"), identity.get("userName")))
            and (self.event_name is None or event.get("eventName") == self.event_name)
            and (not self.errors_only or "errorCode" in event)
            and (self.start is None or time >= self.start)
            and (self.end is None or time < self.end)
        )


def lookup(trail: Trail, filters: Filters, *, before: Position | None = None) -> list[Record]:
    """Matching records, newest first; with ``before``, only those after that position in this order."""
    found = [r for r in trail.records if filters.match(r.event) and (before is None or position(r) < before)]
    found.sort(key=position, reverse=True)
    return found


def position(record: Record) -> Position:
    """A record's place in time order: its time, then its writer and its place in that writer's chain."""
    return (str(record.event.get("eventTime", "")), record.writer, record.seq)


def check(trail: Trail, public_key: bytes | None = None) -> list[Problem]:
    """Verify chains and head signatures with ``public_key`` (default: the trail's own)."""
    key = public_key if public_key is not None else trail.public_key
    checker = None if key is None else (lambda message, signature: crypto.signature_valid(key, message, signature))
    return verify(trail.records, trail.heads, checker)


def export_lines(trail: Trail) -> Iterator[str]:
    yield json.dumps({"type": "header", "format": EXPORT_FORMAT,
                      "publicKey": base64.b64encode(trail.public_key).decode() if trail.public_key else None})
    for record in sorted(trail.records, key=lambda r: (r.writer, r.seq)):
        yield json.dumps({"type": "record", **record.to_json()})
    for head in trail.heads:
        yield json.dumps({"type": "head", **head.to_json()})


def parse_export(lines: Iterable[str]) -> Trail:
    records, heads, public_key = [], [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            kind = doc.pop("type")
            if kind == "header":
                if doc["format"] != EXPORT_FORMAT:
                    raise ValueError(f"unknown format {doc['format']!r}")
                public_key = base64.b64decode(doc["publicKey"]) if doc.get("publicKey") else None
            elif kind == "record":
                record = Record.from_json(doc)
                if not (isinstance(record.writer, str) and type(record.seq) is int and isinstance(record.event, dict)):
                    raise ValueError("a record needs a string writer, an integer seq and an event object")
                records.append(record)
            elif kind == "head":
                heads.append(Head.from_json(doc))
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"export line {number} is malformed: {exc}") from None
    return Trail(records, heads, public_key)
