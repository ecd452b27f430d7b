"""Finding the KMS key a request names, in every form AWS accepts, and authorizing its use.

Key id, key ARN, alias name and alias ARN; ``allow_alias=False`` for the
operations AWS documents as taking only a key id or key ARN.  A key of another
region does not exist from the caller's point of view; a key of another account
is reachable only by ARN, and only for the operations AWS allows across accounts.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Mapping

from keyhive.errors import (
    InvalidArnException,
    InvalidMarkerException,
    NotFoundException,
    ValidationException,
)
from keyhive.keystates import check_key_state
from keyhive.keystore import KeyRecord, alias_arn, key_arn
from keyhive.service.context import Context

_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([^:]*):([^:]*):(key/.+|alias/.+)$")

# "Cross-account use: Yes" in the KMS API reference.
CROSS_ACCOUNT_OPERATIONS = frozenset({
    "CreateGrant", "Decrypt", "DescribeKey", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext", "GetKeyRotationStatus",
    "ListGrants", "ReEncrypt", "RetireGrant", "RevokeGrant",
})


def find_key(
    ctx: Context,
    key_ref: str,
    operation: str,
    *,
    allow_alias: bool = True,
    permission: str | None = None,
    conditions: Mapping[str, Any] | None = None,
    encryption_context: Mapping[str, str] | None = None,
) -> KeyRecord:
    """The key ``key_ref`` names, once the caller is authorized and its state allows ``operation``.

    ``permission`` is the policy action when it differs from the operation
    (ReEncrypt needs ``ReEncryptFrom`` and ``ReEncryptTo``).
    """
    key = lookup_key(ctx, key_ref, allow_alias=allow_alias, operation=operation)
    conditions = dict(conditions or {})
    if key_ref.startswith("alias/") or ":alias/" in key_ref:
        conditions["kms:RequestAlias"] = "alias/" + key_ref.split("alias/", 1)[1]
    return authorize_key(ctx, key, operation, permission=permission, conditions=conditions,
                         encryption_context=encryption_context)


def authorize_key(
    ctx: Context,
    key: KeyRecord,
    operation: str,
    *,
    permission: str | None = None,
    conditions: Mapping[str, Any] | None = None,
    encryption_context: Mapping[str, str] | None = None,
) -> KeyRecord:
    """``key``, once the caller may use it for ``operation`` and its state allows it.

    Authorization comes first, as on AWS: a caller without access learns nothing
    about the key's state.
    """
    ctx.keys_used.append((key.account, key.arn))
    ctx.authz.check(ctx, permission or operation, key, conditions=conditions, encryption_context=encryption_context)
    check_key_state(operation, effective_state(key, ctx.now), key.arn)
    return key


def effective_state(key: KeyRecord, now: float) -> str:
    """The key's state now: imported material past its ValidTo is gone even before the scheduler says so."""
    if key.valid_to is not None and key.valid_to <= now and key.state in ("Enabled", "Disabled"):
        return "PendingImport"
    return key.state


def lookup_key(ctx: Context, key_ref: str, *, allow_alias: bool = True, operation: str = "") -> KeyRecord:
    region, account, resource = ctx.region, ctx.account, key_ref
    if key_ref.startswith("arn:"):
        match = _ARN.match(key_ref)
        if match is None:
            raise InvalidArnException(f"Invalid arn {key_ref}")
        region, account, resource = match.groups()
    elif not key_ref.startswith("alias/"):
        resource = "key/" + key_ref
    if region != ctx.region or (account != ctx.account and operation not in CROSS_ACCOUNT_OPERATIONS):
        raise NotFoundException(f"Key '{key_ref}' does not exist")
    if resource.startswith("alias/"):
        if not allow_alias:
            raise NotFoundException(f"Invalid keyId '{key_ref}'")
        alias = ctx.keystore.get_alias(account, region, resource)
        if alias is None:
            raise NotFoundException(f"Alias {alias_arn(region, account, resource)} is not found.")
        key_id = alias.target_key_id
    else:
        key_id = resource.removeprefix("key/")
        if not _KEY_ID.match(key_id):
            raise NotFoundException(f"Invalid keyId '{key_ref}'")
    key = ctx.keystore.get_key(account, region, key_id)
    if key is None:
        raise NotFoundException(f"Key '{key_arn(region, account, key_id)}' does not exist")
    return key


def check_range(field: str, value: int, low: int, high: int) -> None:
    """A ValidationException in AWS's shape for a value outside a documented range the model does not state."""
    if not low <= value <= high:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )


# -- pagination ------------------------------------------------------------------
def encode_marker(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode()


def decode_marker(marker: str | None) -> str:
    if not marker:
        return ""
    try:
        return base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidMarkerException() from None


def page(items: list[str], limit: int) -> tuple[list[str], str | None]:
    """Split a list fetched with ``limit + 1`` into (page, next marker)."""
    if len(items) > limit:
        return items[:limit], encode_marker(items[limit - 1])
    return items, None
