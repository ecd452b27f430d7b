"""The AWS JSON 1.1 wire, below boto3's client-side validation, against a live server.

Raw requests are signed with botocore's own ``SigV4Auth`` and sent with urllib, so the
server's answers to what no SDK would send can be checked: wrong JSON types, malformed
JSON, bad base64, out-of-range values, unknown operations, missing or bad signatures,
huge bodies.  Every answer must be an AWS-shaped error (``__type``, 4xx, a request id),
never a 500 or a stack trace.
"""

from __future__ import annotations

import base64
import datetime
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator
from unittest import mock

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import Shape

from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION

JSON_11 = "application/x-amz-json-1.1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def doc(self) -> dict[str, Any]:
        doc = json.loads(self.raw)
        assert isinstance(doc, dict)
        return doc

    @property
    def type(self) -> str:
        return str(self.doc.get("__type"))

    def error(self) -> tuple[int, str]:
        return self.status, self.type


def send(
    endpoint: str,
    target: str | None,
    body: bytes | str | dict[str, Any],
    *,
    sign: bool = True,
    access_key: str = DEV_ACCESS_KEY_ID,
    secret: str = DEV_SECRET_ACCESS_KEY,
    region: str = REGION,
    now: datetime.datetime | None = None,
    content_type: str = JSON_11,
) -> Answer:
    """POST one request to ``endpoint`` exactly as given, SigV4-signed unless ``sign`` is False."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    headers = {"Content-Type": content_type}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=headers)
    if sign:
        signer = SigV4Auth(Credentials(access_key, secret), "kms", region)
        if now is None:
            signer.add_auth(request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
                signer.add_auth(request)
    wire = urllib.request.Request(endpoint + "/", data=body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(wire, timeout=30) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def assert_aws_error(answer: Answer, status: int, error_type: str) -> dict[str, Any]:
    """``answer`` is exactly the AWS error ``error_type`` with ``status``, properly framed."""
    assert answer.error() == (status, error_type), answer.raw[:500]
    assert answer.headers.get("content-type") == JSON_11
    assert answer.headers.get("x-amzn-requestid"), answer.headers
    assert b"Traceback" not in answer.raw and b'File "' not in answer.raw
    return answer.doc


def op(name: str) -> str:
    return "TrentService." + name


@pytest.fixture(scope="module")
def endpoint(dev_server: Any) -> str:
    return str(dev_server.endpoint)


@pytest.fixture(scope="module")
def key_id(kms: Any) -> str:
    return str(kms.create_key(Description="wire")["KeyMetadata"]["KeyId"])


@pytest.fixture(scope="module", autouse=True)
def no_internal_errors(dev_server: Any) -> Iterator[None]:
    """Whatever this module sends, the server never logs an internal error."""
    yield
    log = dev_server.log()
    assert "internal error" not in log and "Traceback" not in log, log[-4000:]


# -- a valid request, for reference ------------------------------------------------------------
def test_valid_raw_request(endpoint: str, key_id: str) -> None:
    answer = send(endpoint, op("Encrypt"), {"KeyId": key_id, "Plaintext": base64.b64encode(b"hi").decode()})
    assert answer.status == 200
    assert answer.headers["content-type"] == JSON_11
    assert answer.headers["x-amzn-requestid"]
    assert answer.doc["KeyId"].endswith(key_id)
    blob = answer.doc["CiphertextBlob"]
    answer = send(endpoint, op("Decrypt"), {"CiphertextBlob": blob})
    assert answer.status == 200 and base64.b64decode(answer.doc["Plaintext"]) == b"hi"


def test_request_ids_are_unique(endpoint: str) -> None:
    ids = {send(endpoint, op("GenerateRandom"), {"NumberOfBytes": 0}).headers["x-amzn-requestid"] for _ in range(5)}
    assert len(ids) == 5


# -- framing: JSON, types, base64 ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"KeyId": }',
        b"not json at all",
        b'{"KeyId": "a",}',
        b"\xff\xfe\x00{}",
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser's stack
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ],
    ids=["open-brace", "missing-value", "text", "trailing-comma", "bad-utf8", "deep-array", "deep-object"],
)
def test_malformed_json(endpoint: str, body: bytes) -> None:
    assert_aws_error(send(endpoint, op("ListKeys"), body), 400, "SerializationException")


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_body_must_be_an_object(endpoint: str, body: bytes) -> None:
    assert_aws_error(send(endpoint, op("ListKeys"), body), 400, "SerializationException")


def test_empty_body_is_an_empty_request(endpoint: str) -> None:
    assert send(endpoint, op("ListKeys"), b"").status == 200
    assert_aws_error(send(endpoint, op("DescribeKey"), b""), 400, "ValidationException")


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("DescribeKey", {"KeyId": 123}),
        ("DescribeKey", {"KeyId": ["a"]}),
        ("DescribeKey", {"KeyId": {"a": "b"}}),
        ("DescribeKey", {"KeyId": True}),
        ("ListKeys", {"Limit": "10"}),
        ("ListKeys", {"Limit": 1.5}),
        ("ListKeys", {"Limit": True}),
        ("ListKeys", {"Limit": [1]}),
        ("GenerateRandom", {"NumberOfBytes": "32"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": 5}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "EncryptionContext": ["a", "b"]}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "EncryptionContext": {"a": 1}}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "DryRun": "yes"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "GrantTokens": "token"}),
        ("CreateKey", {"Tags": {"TagKey": "a", "TagValue": "b"}}),
        ("CreateKey", {"Tags": ["a"]}),
        ("CreateKey", {"Tags": [{"TagKey": 1, "TagValue": "b"}]}),
        ("CreateKey", {"MultiRegion": 0}),
        ("UntagResource", {"KeyId": "k", "TagKeys": [1]}),
        ("Decrypt", {"CiphertextBlob": "YQ==", "Recipient": "enclave"}),
    ],
)
def test_wrong_json_types(endpoint: str, operation: str, body: dict[str, Any]) -> None:
    assert_aws_error(send(endpoint, op(operation), body), 400, "SerializationException")


@pytest.mark.parametrize("blob", ["!!!!", "YQ=", "Y", "YQ==YQ==", "YQ ==", "YQ==\n", "\u00e9\u00e9\u00e9\u00e9", "YQ-_"])
def test_bad_base64(endpoint: str, blob: str) -> None:
    assert_aws_error(send(endpoint, op("Decrypt"), {"CiphertextBlob": blob}), 400, "SerializationException")
    assert_aws_error(send(endpoint, op("Encrypt"), {"KeyId": "k", "Plaintext": blob}), 400, "SerializationException")


def test_lone_surrogates_in_strings(endpoint: str, key_id: str) -> None:
    # JSON can spell a lone UTF-16 surrogate ("\ud800"), which no UTF-8 string can hold.
    bodies = [
        ("Encrypt", '{"KeyId": "%s", "Plaintext": "YQ==", "EncryptionContext": {"\\ud800": "x"}}' % key_id),
        ("Encrypt", '{"KeyId": "%s", "Plaintext": "YQ==", "EncryptionContext": {"x": "\\udfff"}}' % key_id),
        ("Decrypt", '{"CiphertextBlob": "\\ud800"}'),
        ("DescribeKey", '{"KeyId": "\\ud800"}'),
        ("CreateKey", '{"Description": "\\ud83d"}'),
        ("CreateKey", '{"Tags": [{"TagKey": "\\ud800", "TagValue": "v"}]}'),
        ("UpdateKeyDescription", '{"KeyId": "%s", "Description": "a\\udc00b"}' % key_id),
    ]
    for operation, body in bodies:
        answer = send(endpoint, op(operation), body)
        assert answer.status == 400 and answer.type in ("SerializationException", "ValidationException"), (operation, answer.raw)
    # a surrogate pair is a real character and fine
    answer = send(endpoint, op("Encrypt"), '{"KeyId": "%s", "Plaintext": "YQ==", "EncryptionContext": {"\\ud83d\\ude00": "x"}}' % key_id)
    assert answer.status == 200


def test_non_finite_numbers(endpoint: str) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        assert_aws_error(send(endpoint, op("ListKeys"), b'{"Limit": ' + literal + b"}"), 400, "SerializationException")


# -- validation: values outside the model's constraints ------------------------------------------
@pytest.mark.parametrize(
    ("operation", "body", "field"),
    [
        ("GenerateRandom", {"NumberOfBytes": 0}, "numberOfBytes"),
        ("GenerateRandom", {"NumberOfBytes": -1}, "numberOfBytes"),
        ("GenerateRandom", {"NumberOfBytes": 1025}, "numberOfBytes"),
        ("GenerateRandom", {"NumberOfBytes": 2**64}, "numberOfBytes"),
        ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 0}, "numberOfBytes"),
        ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 1025}, "numberOfBytes"),
        ("GenerateDataKey", {"KeyId": "k", "KeySpec": "AES_512"}, "keySpec"),
        ("EnableKeyRotation", {"KeyId": "k", "RotationPeriodInDays": 89}, "rotationPeriodInDays"),
        ("EnableKeyRotation", {"KeyId": "k", "RotationPeriodInDays": 2561}, "rotationPeriodInDays"),
        ("ScheduleKeyDeletion", {"KeyId": "k", "PendingWindowInDays": 0}, "pendingWindowInDays"),
        ("ListKeys", {"Limit": 0}, "limit"),
        ("ListKeys", {"Limit": 1001}, "limit"),
        ("ListKeys", {"Marker": ""}, "marker"),
        ("ListAliases", {"Limit": 0}, "limit"),
        ("DescribeKey", {"KeyId": ""}, "keyId"),
        ("DescribeKey", {"KeyId": "k" * 2049}, "keyId"),
        ("Encrypt", {"KeyId": "k", "Plaintext": ""}, "plaintext"),
        ("Encrypt", {"KeyId": "k", "Plaintext": base64.b64encode(b"x" * 4097).decode()}, "plaintext"),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "EncryptionAlgorithm": "ROT13"}, "encryptionAlgorithm"),
        ("Encrypt", {"KeyId": "k", "Plaintext": "YQ==", "GrantTokens": ["t"] * 11}, "grantTokens"),
        ("Decrypt", {"CiphertextBlob": ""}, "ciphertextBlob"),
        ("Decrypt", {"CiphertextBlob": base64.b64encode(b"x" * 6145).decode()}, "ciphertextBlob"),
        ("CreateKey", {"KeySpec": "AES_999"}, "keySpec"),
        ("CreateKey", {"Description": "d" * 8193}, "description"),
        ("CreateKey", {"Tags": [{"TagKey": "", "TagValue": "v"}]}, "tags.1.member.tagKey"),
        ("CreateAlias", {"AliasName": "alias/with space", "TargetKeyId": "k"}, "aliasName"),
        ("GetKeyPolicy", {"KeyId": "k", "PolicyName": "bad name"}, "policyName"),
    ],
)
def test_out_of_range_values(endpoint: str, operation: str, body: dict[str, Any], field: str) -> None:
    doc = assert_aws_error(send(endpoint, op(operation), body), 400, "ValidationException")
    assert doc["message"].startswith("1 validation error detected: ")
    assert f"'{field}'" in doc["message"]


def test_sensitive_values_are_not_echoed(endpoint: str) -> None:
    secret = base64.b64encode(b"TOP-SECRET-" * 400).decode()  # 4400 bytes: too long
    doc = assert_aws_error(send(endpoint, op("Encrypt"), {"KeyId": "k", "Plaintext": secret}), 400, "ValidationException")
    assert "TOP-SECRET" not in doc["message"] and secret[:40] not in doc["message"]


def test_missing_required_members(endpoint: str) -> None:
    doc = assert_aws_error(send(endpoint, op("Encrypt"), {}), 400, "ValidationException")
    assert doc["message"].startswith("2 validation errors detected: ")
    assert "'keyId'" in doc["message"] and "'plaintext'" in doc["message"]
    assert_aws_error(send(endpoint, op("CreateAlias"), {"AliasName": "alias/x"}), 400, "ValidationException")
    assert_aws_error(send(endpoint, op("CreateKey"), {"Tags": [{"TagKey": "a"}]}), 400, "ValidationException")


def test_unknown_members_are_ignored(endpoint: str) -> None:
    answer = send(endpoint, op("GenerateRandom"), {"NumberOfBytes": 8, "Frobnicate": {"deep": [1, 2]}})
    assert answer.status == 200 and len(base64.b64decode(answer.doc["Plaintext"])) == 8


# -- dispatch --------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["TrentService.Frobnicate", "TrentService.", "TrentService.listKeys",
                                    "KMS.ListKeys", "ListKeys", "TrentService.ListKeys.Extra"])
def test_unknown_operation(endpoint: str, target: str) -> None:
    assert_aws_error(send(endpoint, target, {}), 400, "UnknownOperationException")


def test_missing_target(endpoint: str) -> None:
    assert_aws_error(send(endpoint, None, {}), 400, "UnknownOperationException")


def test_model_operation_not_implemented(endpoint: str) -> None:
    # In the KMS model, not (yet) served by Keyhive: a clear 400, not a crash.
    doc = assert_aws_error(send(endpoint, op("CreateCustomKeyStore"), {"CustomKeyStoreName": "x"}), 400,
                           "UnsupportedOperationException")
    assert "CreateCustomKeyStore" in doc["message"]


def test_other_paths_and_methods(endpoint: str) -> None:
    request = urllib.request.Request(endpoint + "/", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), exc.headers
    assert 400 <= status < 500 and json.loads(raw)["__type"] and headers["x-amzn-requestid"]


# -- authentication ----------------------------------------------------------------------------------
def test_unsigned_request(endpoint: str) -> None:
    assert_aws_error(send(endpoint, op("ListKeys"), {}, sign=False), 403, "MissingAuthenticationTokenException")


def test_wrong_secret(endpoint: str) -> None:
    doc = assert_aws_error(send(endpoint, op("ListKeys"), {}, secret=DEV_SECRET_ACCESS_KEY + "x"), 400,
                           "InvalidSignatureException")
    assert DEV_SECRET_ACCESS_KEY not in json.dumps(doc)


def test_unknown_access_key(endpoint: str) -> None:
    assert_aws_error(send(endpoint, op("ListKeys"), {}, access_key="AKIANOSUCHKEY0000000"), 400,
                     "UnrecognizedClientException")


@pytest.mark.parametrize("minutes", [-10, 10])
def test_clock_skew(endpoint: str, minutes: int) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    assert_aws_error(send(endpoint, op("ListKeys"), {}, now=when), 400, "InvalidSignatureException")


def test_small_skew_is_accepted(endpoint: str) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=3)
    assert send(endpoint, op("ListKeys"), {}, now=when).status == 200


def test_signature_covers_the_body(endpoint: str) -> None:
    # Sign one body, send another.
    body = b'{"NumberOfBytes": 8}'
    request = AWSRequest(method="POST", url=endpoint + "/", data=body,
                         headers={"Content-Type": JSON_11, "X-Amz-Target": op("GenerateRandom")})
    SigV4Auth(Credentials(DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(endpoint + "/", data=b'{"NumberOfBytes": 9}',
                                  headers=dict(request.headers.items()), method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(wire, timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["__type"] == "InvalidSignatureException"


def test_signature_covers_the_target(endpoint: str) -> None:
    request = AWSRequest(method="POST", url=endpoint + "/", data=b"{}",
                         headers={"Content-Type": JSON_11, "X-Amz-Target": op("ListKeys")})
    SigV4Auth(Credentials(DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY), "kms", REGION).add_auth(request)
    headers = dict(request.headers.items())
    headers["X-Amz-Target"] = op("ListAliases")
    wire = urllib.request.Request(endpoint + "/", data=b"{}", headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(wire, timeout=10)
    assert json.loads(info.value.read())["__type"] == "InvalidSignatureException"


# -- size -------------------------------------------------------------------------------------------------
def test_huge_body(endpoint: str) -> None:
    body = b'{"KeyId": "' + b"a" * (1024 * 1024) + b'"}'
    doc = assert_aws_error(send(endpoint, op("DescribeKey"), body), 400, "ValidationException")
    assert len(json.dumps(doc)) < 1000  # not echoed back


def test_body_far_over_the_limit_is_answered_not_reset(endpoint: str) -> None:
    body = b'{"KeyId": "' + b"a" * (4 * 1024 * 1024) + b'"}'
    assert_aws_error(send(endpoint, op("DescribeKey"), body), 400, "ValidationException")


def test_huge_unsigned_body(endpoint: str) -> None:
    body = b'{"KeyId": "' + b"a" * (1024 * 1024) + b'"}'
    answer = send(endpoint, op("DescribeKey"), body, sign=False)
    assert 400 <= answer.status < 500 and answer.type in ("ValidationException", "MissingAuthenticationTokenException")


# -- a sweep over the whole model: no input makes a 500 ----------------------------------------------------
_KEY_MEMBERS = {"KeyId", "TargetKeyId", "DestinationKeyId", "SourceKeyId"}


def _sample(shape: Shape, name: str, key_id: str, depth: int = 0) -> Any:
    """A plausible value for ``shape`` (valid where the model makes that easy)."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "string":
        if meta.get("enum"):
            return meta["enum"][0]
        if name in _KEY_MEMBERS:
            return key_id
        if name == "AliasName":
            return "alias/sweep"
        if name == "Policy":
            return json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})
        return "a" * max(1, meta.get("min", 1))
    if kind in ("integer", "long"):
        return meta.get("min", 1)
    if kind == "boolean":
        return False
    if kind == "blob":
        return base64.b64encode(b"x" * max(1, meta.get("min", 1))).decode()
    if kind == "timestamp":
        return 0
    if kind == "list":
        return [] if depth > 3 else [_sample(shape.member, name, key_id, depth + 1)]  # type: ignore[attr-defined]
    if kind == "map":
        return {"k": "v"}
    if kind == "structure":
        if depth > 3:
            return {}
        return {m: _sample(s, m, key_id, depth + 1) for m, s in shape.members.items()}  # type: ignore[attr-defined]
    return None


_ODD_KEY_REFS = [
    "arn:", "arn:aws:kms:::key/", "arn:aws:kms:us-east-1:111122223333:key/", "arn:aws:kms:us-east-1:111122223333:alias/",
    "alias/", "alias/aws/", "key/00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000",
    "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000/extra", "mrk-0123456789abcdef",
    "arn:aws:iam::111122223333:root", "\u00e9t\u00e9", "../../etc/passwd", "alias/../../key",
]


def _wrong(shape: Shape, name: str = "") -> list[Any]:
    kind = shape.type_name
    if kind == "string":
        return [7, "\u00ff" * 3000, "%s%n\x00", *(_ODD_KEY_REFS if name in _KEY_MEMBERS else [])]
    if kind in ("integer", "long"):
        return ["1", -(2**63), 2**63, 1.0]
    if kind == "boolean":
        return ["false", 1]
    if kind == "blob":
        return ["@@@@", 1, "AA=="]
    if kind == "list":
        return [{}, [None], [[]]]
    if kind in ("map", "structure"):
        return [[], "x", {"": None}]
    return [[]]


def _sweep_bodies(key_id: str) -> Iterator[tuple[str, Any]]:
    model = botocore.session.get_session().get_service_model("kms")
    for name in model.operation_names:
        shape = model.operation_model(name).input_shape
        if shape is None:
            yield name, {}
            continue
        good = {m: _sample(s, m, key_id) for m, s in shape.members.items()}
        # destructive operations on the sweep's own key are fine; DryRun keeps crypto cheap
        yield name, {}
        yield name, good
        for member, member_shape in shape.members.items():
            for bad in _wrong(member_shape, member):
                yield name, {**good, member: bad}


def test_no_input_makes_a_500(endpoint: str, kms: Any) -> None:
    key_id = kms.create_key(Description="sweep")["KeyMetadata"]["KeyId"]
    seen_types: set[str] = set()
    count = 0
    for name, body in _sweep_bodies(key_id):
        answer = send(endpoint, op(name), body)
        count += 1
        assert answer.status < 500, (name, body, answer.raw[:300])
        assert answer.headers.get("x-amzn-requestid")
        if answer.status != 200:
            assert answer.headers.get("content-type") == JSON_11
            error_type = answer.type
            assert error_type and error_type != "KMSInternalException", (name, body, answer.raw)
            assert b"Traceback" not in answer.raw
            seen_types.add(error_type)
    assert count > 500
    assert {"SerializationException", "ValidationException"} <= seen_types
