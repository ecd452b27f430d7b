"""Audit events in CloudTrail's record shape, built from one request's exchange.

Request parameters and response elements are walked with botocore's KMS model:
structure members become lowerCamelCase as CloudTrail writes them, map keys
(encryption contexts) stay as they are, and blobs and sensitive members
(plaintexts, ciphertexts, data keys) are dropped.  Admin API events keep an
allow-list of fields, so no share or secret access key can enter an event.
"""

from __future__ import annotations

import datetime
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.model import Shape

from keyhive.errors import KeyhiveError
from keyhive.protocol.shapes import operation_model
from keyhive.service import Caller

EVENT_VERSION = "1.08"
KMS_SOURCE = "kms.amazonaws.com"
IAM_SOURCE = "iam.amazonaws.com"
KEYHIVE_SOURCE = "keyhive.amazonaws.com"
_READ_ONLY = re.compile(r"^(Describe|List|Get|Encrypt|Decrypt|ReEncrypt|GenerateDataKey|GenerateRandom|GenerateMac|"
                        r"VerifyMac|Sign|Verify|DeriveSharedSecret|Status)")
_CREDENTIAL = re.compile(rb"Credential=([A-Z0-9]{16,128})/")
_CREDENTIAL_REGION = re.compile(rb"Credential=[A-Z0-9]{16,128}/\d{8}/([a-z0-9-]{1,64})/")
_COUNTS = ("shares", "threshold")  # numbers only: a share sent by mistake must not be recorded
# Admin API fields that may appear in an event; shares and secrets never do.
_ADMIN_FIELDS = ("UserName", "AccountId", "AccessKeyId", "Status", "PolicyName", "PolicyDocument", "Admin",
                 "Tags", "TagKeys", "shares", "threshold")


@dataclass
class Exchange:
    """What one request did, gathered as it runs, for its audit event."""

    request_id: str
    source: str = KMS_SOURCE
    event_name: str = ""
    caller: Caller | None = None
    request: dict[str, Any] | None = field(default=None, repr=False)  # may hold a plaintext
    response: dict[str, Any] | None = field(default=None, repr=False)  # may hold a plaintext or data key
    error: KeyhiveError | None = None
    keys_used: list[tuple[str, str]] = field(default_factory=list)
    region: str = ""


def _iso(epoch: float | None = None) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) if epoch is None else datetime.datetime.fromtimestamp(
        epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _filtered(shape: Shape | None, value: Any) -> Any:
    """``value`` as CloudTrail shows it, or None for what must never be logged."""
    if shape is None or shape.metadata.get("sensitive") or shape.type_name == "blob":
        return None
    if shape.type_name == "structure" and isinstance(value, dict):
        out = {}
        for name, member in value.items():
            kept = _filtered(shape.members.get(name), member)  # type: ignore[attr-defined]
            if kept is not None:
                out[_camel(name)] = kept
        return out
    if shape.type_name == "list" and isinstance(value, list):
        return [v for v in (_filtered(shape.member, item) for item in value) if v is not None]  # type: ignore[attr-defined]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: v for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    return None if isinstance(value, (bytes, bytearray)) else value


def _user_identity(exchange: Exchange, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    caller = exchange.caller
    if caller is not None:
        return {"type": "IAMUser", "principalId": caller.user_id, "arn": caller.principal_arn,
                "accountId": caller.account, "accessKeyId": caller.access_key_id, "userName": caller.user_name}
    claimed = next((m.group(1).decode() for k, v in headers if k == b"authorization"
                    for m in [_CREDENTIAL.search(v)] if m), None)
    return {"type": "Unknown", **({"accessKeyId": claimed} if claimed else {})}


def _claimed_region(headers: list[tuple[bytes, bytes]]) -> str:
    """The region an unauthenticated request was signed for (its credential scope), or ""."""
    return next((m.group(1).decode() for k, v in headers if k == b"authorization"
                 for m in [_CREDENTIAL_REGION.search(v)] if m), "")


def build_event(exchange: Exchange, scope: dict[str, Any]) -> dict[str, Any]:
    headers = scope.get("headers", [])
    client = scope.get("client") or ("", 0)
    user_agent = next((v.decode("latin-1") for k, v in headers if k == b"user-agent"), "")
    name = exchange.event_name or "UnknownOperation"
    parameters: Any
    response: Any = None
    if exchange.source == KMS_SOURCE:
        model = _model(name)
        parameters = _filtered(model.input_shape, exchange.request) if model and exchange.request else None
        if model and exchange.response is not None and not _READ_ONLY.match(name):
            response = _filtered(model.output_shape, exchange.response)
    else:
        parameters = {_camel(k): v for k, v in (exchange.request or {}).items()
                      if k in _ADMIN_FIELDS and (k not in _COUNTS or type(v) is int)} or None
        if name == "CreateAccessKey" and exchange.response:
            key = exchange.response.get("AccessKey", {})
            response = {"accessKey": {"accessKeyId": key.get("AccessKeyId"), "userName": key.get("UserName"),
                                      "status": key.get("Status")}}
    account = exchange.caller.account if exchange.caller else ""
    event: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": _user_identity(exchange, headers),
        "eventTime": _iso(),
        "eventSource": exchange.source,
        "eventName": name,
        "awsRegion": exchange.region or (exchange.caller.region if exchange.caller else _claimed_region(headers)),
        "sourceIPAddress": client[0],
        "userAgent": user_agent,
        "requestParameters": parameters,
        "responseElements": response,
        "requestID": exchange.request_id,
        "eventID": str(uuid.uuid4()),
        "readOnly": bool(_READ_ONLY.match(name)),
        "resources": [{"accountId": a, "type": "AWS::KMS::Key", "ARN": arn}
                      for a, arn in dict.fromkeys(exchange.keys_used)],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
    }
    if exchange.error is not None:
        event["errorCode"] = exchange.error.wire_type
        event["errorMessage"] = exchange.error.message or ""
    return event


def _model(name: str) -> Any:
    try:
        return operation_model(name)
    except KeyhiveError:
        return None
