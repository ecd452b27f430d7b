"""Dates in policies, as seconds since the Unix epoch (a ``Decimal``), without a clock.

IAM User Guide, "Condition operators", Date: values are "one of the W3C implementations
of the ISO 8601 date formats" (https://www.w3.org/TR/NOTE-datetime: ``YYYY``, ``YYYY-MM``,
``YYYY-MM-DD``, then ``Thh:mm``, ``Thh:mm:ss`` or ``Thh:mm:ss.s`` with a zone ``Z`` or
``+hh:mm``) "or in epoch (UNIX) time".  A time without a zone is read as UTC.  A string of
exactly four digits is a year; any other string of digits is epoch seconds.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_W3C = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<frac>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_EPOCH = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_date(text: str) -> Decimal | None:
    """Seconds since 1970-01-01T00:00:00Z for a W3C date or epoch string; None if neither."""
    text = text.strip()
    if len(text) != 4 and _EPOCH.fullmatch(text):
        return Decimal(text)
    match = _W3C.fullmatch(text)
    if match is None:
        return None
    year, month, day = int(match["y"]), int(match["m"] or 1), int(match["d"] or 1)
    hour, minute, second = int(match["H"] or 0), int(match["M"] or 0), int(match["S"] or 0)
    if not (1 <= month <= 12 and 1 <= day <= _month_days(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = _zone_offset(match["tz"])
    if offset is None:
        return None
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return Decimal(seconds) + (Decimal(match["frac"]) if match["frac"] else Decimal(0))


def epoch_value(value: object) -> Decimal | None:
    """A request's date value (ISO string, epoch string or number) as epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return finite(str(value))
    if isinstance(value, str):
        return parse_date(value)
    return None


def finite(text: str) -> Decimal | None:
    """``Decimal(text)`` when it is a finite number, else None."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        return None


def _zone_offset(zone: str | None) -> int | None:
    if zone is None or zone == "Z":
        return 0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        return None
    sign = -1 if zone[0] == "-" else 1
    return sign * (hours * 3600 + minutes * 60)


def _month_days(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the given proleptic Gregorian date (eras of 400 years)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
