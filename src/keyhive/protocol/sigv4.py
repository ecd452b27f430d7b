"""Server-side AWS Signature Version 4 verification: pure, no I/O, time passed in.

``verify`` accepts the two forms AWS clients send:

* the ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
  SignedHeaders=..., Signature=...`` header, dated by the ``X-Amz-Date`` header;
* a presigned query (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``).

The canonical request is built exactly as botocore's ``SigV4Auth`` builds it: the path
as sent, dot segments and repeated slashes removed, then percent-encoded again; the
query decoded, re-encoded and sorted by encoded key then value; signed header values
trimmed with inner whitespace collapsed, repeats joined by commas.

The body is always authenticated: the payload hash is the SHA-256 of ``body``, and an
``X-Amz-Content-SHA256`` header must either equal it or be ``UNSIGNED-PAYLOAD`` (which
then fails the signature check, since Keyhive signs over the real hash).

Failures, checked in this order (classes from :mod:`keyhive.errors`):

    MissingAuthenticationTokenException  no Authorization header, no presigned query
    IncompleteSignatureException         malformed header, query, scope or date
    InvalidSignatureException            outside the clock-skew window or expired
    UnrecognizedClientException          ``secret_for`` knows no such access key
    InvalidSignatureException            body hash or signature mismatch

No message ever carries a secret or a derived key.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_plus

from keyhive import limits
from keyhive.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

__all__ = ["SignedBy", "verify"]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# AWS rejects a request dated more than 5 minutes from its own clock, either way.
MAX_CLOCK_SKEW = datetime.timedelta(seconds=limits.MAX_CLOCK_SKEW_SECONDS)
# Presigned URLs live at most 7 days (AWS SigV4 docs, "Authenticating Requests: Using
# Query Parameters": X-Amz-Expires "minimum value 1 ... maximum value 604800").
MAX_PRESIGN_EXPIRES = 604_800
# Derived signing keys kept: one per (secret, day, region, service) in use.
SIGNING_KEY_CACHE_SIZE = 1024
# Longest piece of client input echoed back in an error message.
MAX_ECHO = 128

_UTC = datetime.timezone.utc
_SKEW_TEXT = f"{int(MAX_CLOCK_SKEW.total_seconds()) // 60} min."
_REGION = re.compile(r"[a-z0-9-]{1,64}")
_Q_ALGORITHM = "X-Amz-Algorithm"
_Q_CREDENTIAL = "X-Amz-Credential"
_Q_DATE = "X-Amz-Date"
_Q_EXPIRES = "X-Amz-Expires"
_Q_SIGNED_HEADERS = "X-Amz-SignedHeaders"
_Q_SIGNATURE = "X-Amz-Signature"
_Q_TOKEN = "X-Amz-Security-Token"
_PRESIGN_REQUIRED = (_Q_ALGORITHM, _Q_CREDENTIAL, _Q_DATE, _Q_EXPIRES, _Q_SIGNED_HEADERS, _Q_SIGNATURE)
_PRESIGN_PARAMS = frozenset((*_PRESIGN_REQUIRED, _Q_TOKEN))

_Headers = dict[bytes, list[bytes]]
_Query = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SignedBy:
    """Who signed a request that verified, and for which scope."""

    access_key_id: str
    region: str  # from the credential scope
    service: str
    session_token: str | None = field(repr=False)  # X-Amz-Security-Token, if any
    signed_headers: tuple[str, ...] = field(default=(), compare=False)  # what the signature covers


class _Claim(NamedTuple):
    """What the request says about its own signature, parsed but not yet checked."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    amz_date: str
    signed_at: datetime.datetime
    signed_headers: list[str]
    signature: str
    session_token: str | None
    expires: int | None  # seconds; presigned only


def verify(
    method: str,
    raw_path: str,
    query_string: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    secret_for: Callable[[str], str | None],
    now: datetime.datetime,
    *,
    service: str = "kms",
) -> SignedBy:
    """Check a request's SigV4 signature at time ``now``; naive ``now`` is taken as UTC.

    ``headers`` is the ASGI list (lowercase names, raw values), ``raw_path`` and
    ``query_string`` are as sent. Raises the errors listed in the module docstring.
    """
    grouped = _group(headers)
    if b"authorization" in grouped:
        claim = _claim_from_header(grouped, service)
        canonical_query = _canonical_query(_parse_query(query_string)) if query_string else ""
    else:
        query = _parse_query(query_string)
        if not any(key in _PRESIGN_PARAMS for key, _ in query):
            raise MissingAuthenticationTokenException()
        claim = _claim_from_query(query, grouped, service)
        canonical_query = _canonical_query([(k, v) for k, v in query if k != _Q_SIGNATURE])
    _check_clock(claim, now if now.tzinfo is not None else now.replace(tzinfo=_UTC))
    secret = secret_for(claim.access_key_id)
    if secret is None:
        raise UnrecognizedClientException()
    canonical_request = "\n".join(
        (
            method.upper(),
            _canonical_uri(raw_path),
            canonical_query,
            _canonical_headers(grouped, claim.signed_headers),
            ";".join(claim.signed_headers),
            _payload_hash(grouped, body),
        )
    )
    scope = f"{claim.scope_date}/{claim.region}/{claim.service}/{TERMINATOR}"
    string_to_sign = "\n".join(
        (ALGORITHM, claim.amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = _signing_key(secret, claim.scope_date, claim.region, claim.service)
    expected = hmac.digest(key, string_to_sign.encode(), "sha256").hex()
    if not hmac.compare_digest(expected.encode(), claim.signature.encode()):
        raise InvalidSignatureException()
    return SignedBy(claim.access_key_id, claim.region, claim.service, claim.session_token,
                    tuple(claim.signed_headers))


# -- parsing the claim ------------------------------------------------------------
def _group(headers: Sequence[tuple[bytes, bytes]]) -> _Headers:
    grouped: _Headers = {}
    for name, value in headers:
        values = grouped.get(name)
        if values is None:
            grouped[name] = [value]
        else:
            values.append(value)
    return grouped


def _single_header(grouped: _Headers, name: bytes) -> str | None:
    values = grouped.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise IncompleteSignatureException(f"Only one '{name.decode()}' header is allowed.")
    return values[0].decode("latin-1")


def _claim_from_header(grouped: _Headers, service: str) -> _Claim:
    authorization = _single_header(grouped, b"authorization") or ""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{_echo(algorithm)}'.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if part:
            key, eq, value = part.partition("=")
            if not eq:
                raise IncompleteSignatureException(
                    f"'{_echo(part)}' not a valid key=value pair (missing equal-sign) "
                    "in Authorization header."
                )
            params[key] = value
    amz_date = _single_header(grouped, b"x-amz-date")
    missing = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if name not in params
    ]
    if amz_date is None:
        missing.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if missing or amz_date is None:
        raise IncompleteSignatureException(" ".join(missing))
    return _claim(
        params["Credential"],
        amz_date,
        params["SignedHeaders"],
        params["Signature"],
        session_token=_single_header(grouped, b"x-amz-security-token"),
        expires=None,
        service=service,
    )


def _claim_from_query(query: _Query, grouped: _Headers, service: str) -> _Claim:
    params: dict[str, str] = {}
    for key, value in query:
        if key in _PRESIGN_PARAMS:
            if key in params:
                raise IncompleteSignatureException(
                    f"AWS query-string parameter '{key}' must not be repeated."
                )
            params[key] = value
    missing = [
        f"AWS query-string parameters must include '{name}'. Re-examine the query-string parameters."
        for name in _PRESIGN_REQUIRED
        if name not in params
    ]
    if missing:
        raise IncompleteSignatureException(" ".join(missing))
    if params[_Q_ALGORITHM] != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{_echo(params[_Q_ALGORITHM])}'.")
    expires = params[_Q_EXPIRES]
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 6) or not (
        1 <= int(expires) <= MAX_PRESIGN_EXPIRES
    ):
        raise IncompleteSignatureException(
            f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGN_EXPIRES}."
        )
    token = params.get(_Q_TOKEN)
    return _claim(
        params[_Q_CREDENTIAL],
        params[_Q_DATE],
        params[_Q_SIGNED_HEADERS],
        params[_Q_SIGNATURE],
        session_token=token if token is not None else _single_header(grouped, b"x-amz-security-token"),
        expires=int(expires),
        service=service,
    )


def _claim(
    credential: str,
    amz_date: str,
    signed_headers: str,
    signature: str,
    *,
    session_token: str | None,
    expires: int | None,
    service: str,
) -> _Claim:
    """Check the scope, date and signed-header list that ``verify`` relies on."""
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{_echo(credential)}'"
        )
    access_key_id, scope_date, region, scope_service, terminator = parts
    if not _REGION.fullmatch(region):
        raise IncompleteSignatureException(
            f"Credential should be scoped to a valid region, not '{_echo(region)}'."
        )
    if scope_service != service:
        raise IncompleteSignatureException(f"Credential should be scoped to correct service: '{service}'.")
    if terminator != TERMINATOR:
        raise IncompleteSignatureException(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{_echo(terminator)}'."
        )
    signed_at = _parse_amz_date(amz_date)
    if scope_date != amz_date[:8]:
        raise IncompleteSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{_echo(scope_date)}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    names = sorted(signed_headers.split(";"))
    if "host" not in names:
        raise IncompleteSignatureException(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    return _Claim(
        access_key_id=access_key_id,
        scope_date=scope_date,
        region=region,
        service=scope_service,
        amz_date=amz_date,
        signed_at=signed_at,
        signed_headers=names,
        signature=signature,
        session_token=session_token,
        expires=expires,
    )


def _parse_amz_date(value: str) -> datetime.datetime:
    """``YYYYMMDDTHHMMSSZ`` (ISO 8601 basic format, UTC), as an aware datetime."""
    digits = value[:8] + value[9:15]
    if len(value) == 16 and value[8] == "T" and value[15] == "Z" and digits.isascii() and digits.isdigit():
        try:
            return datetime.datetime(
                int(value[0:4]),
                int(value[4:6]),
                int(value[6:8]),
                int(value[9:11]),
                int(value[11:13]),
                int(value[13:15]),
                tzinfo=_UTC,
            )
        except ValueError:
            pass
    raise IncompleteSignatureException(
        f"Date must be in ISO-8601 'basic format'. Got '{_echo(value)}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _echo(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


# -- time -----------------------------------------------------------------------------
def _check_clock(claim: _Claim, now: datetime.datetime) -> None:
    age = now - claim.signed_at
    if -age > MAX_CLOCK_SKEW:
        raise InvalidSignatureException(
            f"Signature not yet current: {claim.amz_date} is still later than "
            f"{_stamp(now + MAX_CLOCK_SKEW)} ({_stamp(now)} + {_SKEW_TEXT})"
        )
    if claim.expires is None:
        if age > MAX_CLOCK_SKEW:
            raise InvalidSignatureException(
                f"Signature expired: {claim.amz_date} is now earlier than "
                f"{_stamp(now - MAX_CLOCK_SKEW)} ({_stamp(now)} - {_SKEW_TEXT})"
            )
    else:
        lifetime = datetime.timedelta(seconds=claim.expires)
        if age > lifetime:
            raise InvalidSignatureException(
                f"Signature expired: {claim.amz_date} is now earlier than "
                f"{_stamp(now - lifetime)} ({_stamp(now)} - {claim.expires} sec.)"
            )


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y%m%dT%H%M%SZ")


# -- the canonical request ---------------------------------------------------------------
def _canonical_uri(raw_path: str) -> str:
    if raw_path == "/":
        return raw_path
    return quote(_remove_dot_segments(raw_path) if raw_path else "/", safe="/~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, and repeated slashes collapsed, as botocore does."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and kept else ""
    return first + "/".join(kept) + last


def _parse_query(query_string: str) -> _Query:
    query: _Query = []
    for item in query_string.split("&"):
        if item:
            key, _, value = item.partition("=")
            query.append((unquote_plus(key), unquote_plus(value)))
    return query


def _canonical_query(query: _Query) -> str:
    encoded = sorted((quote(key, safe="-_.~"), quote(value, safe="-_.~")) for key, value in query)
    return "&".join(f"{key}={value}" for key, value in encoded)


def _canonical_headers(grouped: _Headers, names: list[str]) -> str:
    """One ``name:value`` line per signed header, each ending in a newline."""
    lines = []
    for name in names:
        values = grouped.get(name.encode())
        if values is None:
            raise InvalidSignatureException()
        value = ",".join(" ".join(v.decode("latin-1").split()) for v in values)
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def _payload_hash(grouped: _Headers, body: bytes) -> str:
    body_hash = hashlib.sha256(body).hexdigest()
    declared = grouped.get(b"x-amz-content-sha256")
    if declared is not None and (
        len(declared) != 1 or declared[0] not in (body_hash.encode(), UNSIGNED_PAYLOAD.encode())
    ):
        raise InvalidSignatureException()
    return body_hash


def forget_signing_keys() -> None:
    """Drop every cached derived key (and the secrets keying the cache): on seal."""
    _signing_key.cache_clear()


@lru_cache(maxsize=SIGNING_KEY_CACHE_SIZE)
def _signing_key(secret: str, scope_date: str, region: str, service: str) -> bytes:
    """The SigV4 derived key; cached because it changes only once a day per client."""
    key = ("AWS4" + secret).encode()
    for part in (scope_date, region, service, TERMINATOR):
        key = hmac.digest(key, part.encode(), "sha256")
    return key
