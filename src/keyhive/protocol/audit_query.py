"""The admin API's audit operations: LookupEvents and Export (JSON in, JSON out)."""

from __future__ import annotations

from typing import Any, Callable

from keyhive.audit import reader
from keyhive.errors import ValidationException

MAX_RESULTS = 1000


def _filters(req: dict[str, Any]) -> reader.Filters:
    fields = {"KeyId": "key", "Principal": "principal", "EventName": "event_name",
              "StartTime": "start", "EndTime": "end"}
    values: dict[str, Any] = {}
    for wire, name in fields.items():
        if req.get(wire) is not None:
            if not isinstance(req[wire], str):
                raise ValidationException(f"'{wire}' must be a string")
            values[name] = req[wire]
    return reader.Filters(errors_only=req.get("ErrorsOnly") is True, **values)


def lookup_events(trail: reader.Trail, req: dict[str, Any]) -> dict[str, Any]:
    limit, token = req.get("MaxResults", 50), req.get("NextToken", "0")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        raise ValidationException(f"'MaxResults' must be an integer from 1 to {MAX_RESULTS}")
    if not isinstance(token, str) or not token.isdigit():
        raise ValidationException("'NextToken' is not valid")
    events = reader.lookup(trail, _filters(req))
    start = int(token)
    page = events[start : start + limit]
    more = start + limit < len(events)
    return {"Events": page, "NextToken": str(start + limit) if more else None}


def export(trail: reader.Trail, req: dict[str, Any]) -> dict[str, Any]:
    return {"Lines": list(reader.export_lines(trail))}


AUDIT_OPERATIONS: dict[str, Callable[[reader.Trail, dict[str, Any]], dict[str, Any]]] = {
    "LookupEvents": lookup_events,
    "Export": export,
}
