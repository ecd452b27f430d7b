"""Who is calling: Signature V4 checked against the node's active access keys."""

from __future__ import annotations

import datetime
from typing import Any

from keyhive.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    UnrecognizedClientException,
)
from keyhive.node import Node
from keyhive.protocol import sigv4
from keyhive.service import Caller


def authenticate(
    node: Node,
    scope: dict[str, Any],
    body: bytes,
    regions: frozenset[str] | None,
    *,
    must_sign: tuple[str, ...] = (),
) -> Caller:
    """The verified caller of this request, or the AWS error for its signature.

    ``must_sign`` names headers the signature has to cover (KMS: x-amz-target,
    which chooses the operation).
    """

    def secret_for(access_key_id: str) -> str | None:
        key = node.access_key(access_key_id)
        return None if key is None else key.secret_access_key

    signed = sigv4.verify(
        scope["method"],
        scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
        scope.get("query_string", b"").decode("latin-1"),
        scope["headers"],
        body,
        secret_for,
        datetime.datetime.now(datetime.timezone.utc),
    )
    if signed.session_token is not None:
        raise UnrecognizedClientException()  # Keyhive issues no temporary credentials
    missing = [h for h in must_sign if h not in signed.signed_headers]
    if missing:
        raise IncompleteSignatureException(f"'{missing[0]}' must be a 'SignedHeader' in the AWS Authorization.")
    if regions is not None and signed.region not in regions:
        raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{signed.region}'.")
    key = node.access_key(signed.access_key_id)
    if key is None:
        raise UnrecognizedClientException()
    client = scope.get("client") or ("", 0)
    return Caller(
        account=key.account,
        region=signed.region,
        principal_arn=f"arn:aws:iam::{key.account}:user/{key.user_name}",
        access_key_id=key.access_key_id,
        user_name=key.user_name,
        source_ip=client[0],
        secure_transport=scope.get("scheme") == "https",
        user_id=node.iam.user(key.account, key.user_name).user_id,
    )
