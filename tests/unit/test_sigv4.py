"""SigV4 verification: requests signed by botocore pass, and every way to break one fails."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhive.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from keyhive.protocol import sigv4
from keyhive.protocol.sigv4 import SignedBy, verify

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FQoGZXIvYXdzEXAMPLETOKEN//+="
URL = "https://kms.us-east-1.amazonaws.com/"
SIGNED_AT = datetime.datetime(2025, 1, 1, 0, 0, 0)  # what botocore's clock reads while signing
NOW = SIGNED_AT.replace(tzinfo=datetime.timezone.utc)
JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Encrypt"}
BODY = json.dumps({"KeyId": "alias/app", "Plaintext": "aGVsbG8="}).encode()


class Wire(NamedTuple):
    """A request as an ASGI server sees it."""

    method: str
    raw_path: str
    query_string: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@pytest.fixture(autouse=True)
def fixed_signing_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: SIGNED_AT)


def to_wire(request: AWSRequest) -> Wire:
    """What goes over the wire for a signed botocore request, in ASGI's shape."""
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in request.headers.items()]
    if b"host" not in dict(headers):
        headers.append((b"host", url.netloc.encode()))  # as http.client adds it
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    return Wire(prepared.method, url.path or "/", url.query, headers, body)


def sign(
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    params: dict[str, str] | None = None,
    secret: str = SECRET,
    token: str | None = None,
    service: str = "kms",
    context: dict[str, object] | None = None,
) -> Wire:
    request = AWSRequest(method=method, url=url, data=body, params=params)
    if headers is None:
        headers = JSON_HEADERS
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        request.headers[name] = value  # assigning a name again appends: a repeated header
    request.context.update(context or {})
    SigV4Auth(Credentials(AKID, secret, token), service, "us-east-1").add_auth(request)
    return to_wire(request)


def presign(url: str = URL + "?Action=ListKeys", *, expires: int = 300, token: str | None = None) -> Wire:
    request = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(Credentials(AKID, SECRET, token), "kms", "us-east-1", expires=expires).add_auth(request)
    return to_wire(request)


def check(wire: Wire, now: datetime.datetime = NOW, *, service: str = "kms") -> SignedBy:
    return verify(*wire, {AKID: SECRET}.get, now, service=service)


def replace_header(wire: Wire, name: bytes, value: bytes | None) -> Wire:
    headers = [(n, v) for n, v in wire.headers if n != name]
    if value is not None:
        headers.append((name, value))
    return wire._replace(headers=headers)


def header(wire: Wire, name: bytes) -> bytes:
    return dict(wire.headers)[name]


def edit_authorization(wire: Wire, pattern: str, replacement: str) -> Wire:
    edited = re.sub(pattern, replacement, header(wire, b"authorization").decode())
    return replace_header(wire, b"authorization", edited.encode())


# -- what must pass -------------------------------------------------------------------
def test_json_body() -> None:
    wire = sign()
    assert b"x-amz-target" in header(wire, b"authorization")
    assert check(wire) == SignedBy(AKID, "us-east-1", "kms", None)
    assert check(wire).signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")


def test_aws_documentation_known_answer() -> None:
    # The IAM ListUsers example from AWS's "Create a signed AWS API request" guide.
    wire = Wire(
        "GET",
        "/",
        "Action=ListUsers&Version=2010-05-08",
        [
            (b"host", b"iam.amazonaws.com"),
            (b"content-type", b"application/x-www-form-urlencoded; charset=utf-8"),
            (b"x-amz-date", b"20150830T123600Z"),
            (
                b"authorization",
                b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
                b"SignedHeaders=content-type;host;x-amz-date, "
                b"Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        ],
        b"",
    )
    now = datetime.datetime(2015, 8, 30, 12, 36, tzinfo=datetime.timezone.utc)
    assert check(wire, now, service="iam") == SignedBy(AKID, "us-east-1", "iam", None)


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (URL + "?b=2&a=1&a=0&c=x%20y%2Fz&empty&k~=v.-_", None),  # encoded by the caller
        (URL, {"z": "a b+c", "k": "v/w~", "é": "ü"}),  # urlencode()d on the wire: spaces as '+'
        (URL + "a%20b/./c//d/../e/", None),  # path: as sent, normalised and encoded again
    ],
)
def test_query_strings_and_paths(url: str, params: dict[str, str] | None) -> None:
    assert check(sign(url=url, params=params)).access_key_id == AKID


def test_repeated_and_whitespace_header_values() -> None:
    extra = [("X-Multi", " 1 "), ("X-Spaced", "  a   b \t c  "), ("X-Multi", "2  3")]
    wire = sign(headers=[*JSON_HEADERS.items(), *extra])
    assert sum(name == b"x-multi" for name, _ in wire.headers) == 2
    assert check(wire).access_key_id == AKID


def test_unsigned_headers_are_ignored() -> None:
    wire = sign(headers={**JSON_HEADERS, "User-Agent": "Boto3/1.0"})
    assert b"user-agent" not in header(wire, b"authorization")
    assert check(replace_header(wire, b"user-agent", b"curl/8")).access_key_id == AKID
    added = wire._replace(headers=[*wire.headers, (b"x-forwarded-for", b"10.0.0.1")])
    assert check(added).access_key_id == AKID


def test_session_token_is_returned_and_not_printed() -> None:
    signed_by = check(sign(token=TOKEN))
    assert signed_by == SignedBy(AKID, "us-east-1", "kms", TOKEN)
    assert TOKEN not in repr(signed_by)


def test_declared_payload_hash() -> None:
    wire = sign(headers={**JSON_HEADERS, "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert check(wire).access_key_id == AKID


def test_empty_body_and_get() -> None:
    assert check(sign("GET", body=b"", headers={})).region == "us-east-1"


@pytest.mark.parametrize("token", [None, TOKEN])
def test_presigned(token: str | None) -> None:
    wire = presign(token=token)
    assert "X-Amz-Signature=" in wire.query_string and b"authorization" not in dict(wire.headers)
    assert check(wire) == SignedBy(AKID, "us-east-1", "kms", token)


@pytest.mark.parametrize("minutes", [-5, -4, 4, 5])
def test_clock_skew_within_five_minutes(minutes: int) -> None:
    assert check(sign(), NOW + datetime.timedelta(minutes=minutes)).access_key_id == AKID


def test_naive_now_is_utc() -> None:
    assert check(sign(), SIGNED_AT).access_key_id == AKID


def test_signing_key_is_cached() -> None:
    wire = sign()
    check(wire)
    hits = sigv4._signing_key.cache_info().hits
    check(wire)
    assert sigv4._signing_key.cache_info().hits == hits + 1
    assert sigv4._signing_key.cache_info().maxsize == sigv4.SIGNING_KEY_CACHE_SIZE


latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(latin1, max_size=20)
query_text = st.text(st.characters(codec="utf-8"), max_size=10)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(header_text, min_size=1, max_size=3),
    params=st.dictionaries(query_text, query_text, max_size=4),
    body=st.binary(max_size=64),
)
def test_round_trip(values: list[str], params: dict[str, str], body: bytes) -> None:
    headers = [("X-Amz-Target", "TrentService.Encrypt"), *(("X-Custom", v) for v in values)]
    assert check(sign(body=body, headers=headers, params=params)).access_key_id == AKID


# -- what must fail -------------------------------------------------------------------
def test_missing_authentication() -> None:
    wire = replace_header(replace_header(sign(), b"authorization", None), b"x-amz-date", None)
    with pytest.raises(MissingAuthenticationTokenException):
        check(wire)
    with pytest.raises(MissingAuthenticationTokenException):
        check(wire._replace(query_string="Action=ListKeys"))


MALFORMED = [
    (r"Credential=[^,]*, ", "", "Authorization header requires 'Credential' parameter."),
    (r", SignedHeaders=[^,]*", "", "Authorization header requires 'SignedHeaders' parameter."),
    (r", Signature=\w+", "", "Authorization header requires 'Signature' parameter."),
    (r"^AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'."),
    (r"^.*$", "Bearer abc", "Unsupported AWS 'algorithm': 'Bearer'."),
    (r"Signature=", "Signature ", "'Signature "),
    (r"/us-east-1/", "/", "Credential must have exactly 5 slash-delimited elements"),
    (r"/us-east-1/", "//", "Credential must have exactly 5 slash-delimited elements"),
    (r"/us-east-1/", "/US EAST/", "Credential should be scoped to a valid region, not 'US EAST'."),
    (r"/kms/", "/s3/", "Credential should be scoped to correct service: 'kms'."),
    (r"/aws4_request", "/aws5_request", "Credential should be scoped with a valid terminator"),
    (r"/20250101/", "/20241231/", "Date in Credential scope does not match YYYYMMDD"),
    (r"SignedHeaders=[^,]*", "SignedHeaders=x-amz-date", "'Host' or ':authority' must be a 'SignedHeader'"),
]


@pytest.mark.parametrize(("pattern", "replacement", "message"), MALFORMED)
def test_malformed_authorization(pattern: str, replacement: str, message: str) -> None:
    wire = edit_authorization(sign(), pattern, replacement)
    with pytest.raises(IncompleteSignatureException) as caught:
        check(wire)
    assert message in caught.value.message
    assert SECRET not in caught.value.message


@pytest.mark.parametrize(
    ("date", "message"),
    [
        (None, "requires existence of either a 'X-Amz-Date' or a 'Date' header"),
        (b"2025-01-01T00:00:00Z", "Date must be in ISO-8601 'basic format'"),
        (b"20251301T000000Z", "Date must be in ISO-8601 'basic format'"),
    ],
)
def test_missing_or_invalid_date(date: bytes | None, message: str) -> None:
    with pytest.raises(IncompleteSignatureException, match=re.escape(message)):
        check(replace_header(sign(), b"x-amz-date", date))


def test_repeated_authorization_header() -> None:
    wire = sign()
    with pytest.raises(IncompleteSignatureException):
        check(wire._replace(headers=[*wire.headers, (b"authorization", header(wire, b"authorization"))]))


def test_unknown_access_key() -> None:
    with pytest.raises(UnrecognizedClientException) as caught:
        verify(*sign(), lambda access_key_id: None, NOW)
    assert caught.value.message == UnrecognizedClientException.default_message


def test_wrong_secret() -> None:
    with pytest.raises(InvalidSignatureException) as caught:
        check(sign(secret=SECRET[::-1]))
    assert caught.value.message == InvalidSignatureException.default_message


@pytest.mark.parametrize("declare", [False, True])
def test_tampered_body(declare: bool) -> None:
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()} if declare else {}
    wire = sign(headers={**JSON_HEADERS, **declared})
    with pytest.raises(InvalidSignatureException):
        check(wire._replace(body=BODY.replace(b"alias/app", b"alias/evil")))


def test_declared_hash_must_match_body() -> None:
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(InvalidSignatureException):
        check(sign(headers={**JSON_HEADERS, "X-Amz-Content-SHA256": wrong}))


def test_unsigned_payload_is_refused() -> None:
    wire = sign(context={"payload_signing_enabled": False})
    assert header(wire, b"x-amz-content-sha256") == b"UNSIGNED-PAYLOAD"
    with pytest.raises(InvalidSignatureException):
        check(wire)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-amz-target", b"TrentService.Decrypt"),
        (b"host", b"kms.eu-west-1.amazonaws.com"),
        (b"x-amz-target", None),
    ],
)
def test_tampered_signed_header(name: bytes, value: bytes | None) -> None:
    with pytest.raises(InvalidSignatureException):
        check(replace_header(sign(), name, value))


def test_tampered_method_path_and_query() -> None:
    wire = sign(url=URL + "?a=1")
    for tampered in (
        wire._replace(method="PUT"),
        wire._replace(raw_path="/x"),
        wire._replace(query_string="a=2"),
    ):
        with pytest.raises(InvalidSignatureException):
            check(tampered)


def test_tampered_signature() -> None:
    wire = sign()
    signature = header(wire, b"authorization").decode().rpartition("=")[2]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(InvalidSignatureException):
        check(edit_authorization(wire, signature, flipped))
    with pytest.raises(InvalidSignatureException):
        check(edit_authorization(wire, signature, signature.upper()))
    with pytest.raises(InvalidSignatureException):
        check(edit_authorization(sign(), r"Signature=\w+", "Signature=\u00e9\u00e9"))


def test_signature_expired() -> None:
    with pytest.raises(InvalidSignatureException) as caught:
        check(sign(), NOW + datetime.timedelta(minutes=6))
    assert caught.value.message == (
        "Signature expired: 20250101T000000Z is now earlier than 20250101T000100Z "
        "(20250101T000600Z - 5 min.)"
    )


def test_signature_not_yet_current() -> None:
    with pytest.raises(InvalidSignatureException) as caught:
        check(sign(), NOW - datetime.timedelta(minutes=6))
    assert caught.value.message == (
        "Signature not yet current: 20250101T000000Z is still later than 20241231T235900Z "
        "(20241231T235400Z + 5 min.)"
    )


def test_presigned_expired() -> None:
    wire = presign(expires=300)
    assert check(wire, NOW + datetime.timedelta(seconds=300)).access_key_id == AKID
    with pytest.raises(InvalidSignatureException) as caught:
        check(wire, NOW + datetime.timedelta(seconds=301))
    assert caught.value.message == (
        "Signature expired: 20250101T000000Z is now earlier than 20250101T000001Z "
        "(20250101T000501Z - 300 sec.)"
    )
    with pytest.raises(InvalidSignatureException, match="not yet current"):
        check(wire, NOW - datetime.timedelta(minutes=6))


@pytest.mark.parametrize(
    ("pattern", "replacement", "message"),
    [
        (r"&X-Amz-Signature=\w+", "", "must include 'X-Amz-Signature'"),
        (r"X-Amz-Credential=[^&]*&", "", "must include 'X-Amz-Credential'"),
        (r"X-Amz-Expires=300", "X-Amz-Expires=604801", "X-Amz-Expires must be"),
        (r"X-Amz-Expires=300", "X-Amz-Expires=-1", "X-Amz-Expires must be"),
        (r"X-Amz-Expires=300", "X-Amz-Expires=0", "X-Amz-Expires must be"),
        (r"X-Amz-Algorithm=[^&]*", "X-Amz-Algorithm=AWS4-HMAC-SHA1", "Unsupported AWS 'algorithm'"),
        (r"X-Amz-Date=[^&]*", "X-Amz-Date=yesterday", "Date must be in ISO-8601"),
        (r"X-Amz-Date=2025", "X-Amz-Date=" + quote("\u0662\u0660\u0662\u0665"), "Date must be in ISO-8601"),
        (r"$", "&X-Amz-Expires=1", "must not be repeated"),
    ],
)
def test_malformed_presigned(pattern: str, replacement: str, message: str) -> None:
    wire = presign()
    wire = wire._replace(query_string=re.sub(pattern, replacement, wire.query_string, count=1))
    with pytest.raises(IncompleteSignatureException, match=re.escape(message)):
        check(wire)


def test_tampered_presigned() -> None:
    wire = presign()
    for query in (
        wire.query_string.replace("Action=ListKeys", "Action=ScheduleKeyDeletion"),
        wire.query_string.replace("X-Amz-Expires=300", "X-Amz-Expires=3600"),
        wire.query_string + "&extra=1",
    ):
        with pytest.raises(InvalidSignatureException):
            check(wire._replace(query_string=query))
