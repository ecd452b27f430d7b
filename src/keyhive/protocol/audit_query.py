"""The admin API's audit operations: LookupEvents and Export (JSON in, JSON out)."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, Callable

from keyhive.audit import reader
from keyhive.errors import ValidationException

MAX_RESULTS = 1000
MAX_TOKEN_CHARS = 1024


def _filters(req: dict[str, Any]) -> reader.Filters:
    fields = {"KeyId": "key", "Principal": "principal", "EventName": "event_name",
              "StartTime": "start", "EndTime": "end"}
    values: dict[str, Any] = {}
    for wire, name in fields.items():
        if req.get(wire) is not None:
            if not isinstance(req[wire], str):
                raise ValidationException(f"'{wire}' must be a string")
            values[name] = _event_time(wire, req[wire]) if wire.endswith("Time") else req[wire]
    return reader.Filters(errors_only=req.get("ErrorsOnly") is True, **values)


def _event_time(wire: str, value: str) -> str:
    """An ISO 8601 time (any offset; no offset means UTC) in the events' own form, so that they compare as text."""
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationException(f"'{wire}' must be an ISO 8601 time, such as 2025-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:  # e.g. year 1 with a positive offset
        raise ValidationException(f"'{wire}' is out of range") from None


def lookup_events(trail: reader.Trail, req: dict[str, Any]) -> dict[str, Any]:
    """One page of matching events, newest first.

    The NextToken names the last event returned, not an offset: events recorded
    between two pages (the lookups themselves, for one) shift no page.
    """
    limit, token = req.get("MaxResults", 50), req.get("NextToken")
    if type(limit) is not int or not 1 <= limit <= MAX_RESULTS:
        raise ValidationException(f"'MaxResults' must be an integer from 1 to {MAX_RESULTS}")
    found = reader.lookup(trail, _filters(req), before=None if token is None else _position(token))
    page = found[:limit]
    more = len(found) > limit
    return {"Events": [r.event for r in page], "NextToken": _token(reader.position(page[-1])) if more else None}


def _token(position: reader.Position) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _position(token: Any) -> reader.Position:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise ValidationException("'NextToken' is not valid")
    try:
        time, writer, seq = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(time, str) and isinstance(writer, str) and type(seq) is int:
            return time, writer, seq
    except (AttributeError, ValueError, TypeError, RecursionError):  # binascii.Error is a ValueError
        pass
    raise ValidationException("'NextToken' is not valid")


def export(trail: reader.Trail, req: dict[str, Any]) -> dict[str, Any]:
    return {"Lines": list(reader.export_lines(trail))}


AUDIT_OPERATIONS: dict[str, Callable[[reader.Trail, dict[str, Any]], dict[str, Any]]] = {
    "LookupEvents": lookup_events,
    "Export": export,
}
