"""Finding the KMS key a request names, in every form AWS accepts.

Key id, key ARN, alias name and alias ARN; ``allow_alias=False`` for the
operations AWS documents as taking only a key id or key ARN.  A key of another
region or account does not exist from the caller's point of view.
"""

from __future__ import annotations

import base64
import binascii
import re

from keyhive.errors import InvalidArnException, InvalidMarkerException, NotFoundException
from keyhive.keystates import check_key_state
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context

_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([^:]*):([^:]*):(key/.+|alias/.+)$")


def find_key(ctx: Context, key_ref: str, operation: str, *, allow_alias: bool = True) -> KeyRecord:
    """The key ``key_ref`` names, checked against ``operation``'s allowed key states."""
    key = lookup_key(ctx, key_ref, allow_alias=allow_alias)
    check_key_state(operation, key.state, key.arn)
    return key


def lookup_key(ctx: Context, key_ref: str, *, allow_alias: bool = True) -> KeyRecord:
    region, account, resource = ctx.region, ctx.account, key_ref
    if key_ref.startswith("arn:"):
        match = _ARN.match(key_ref)
        if match is None:
            raise InvalidArnException(f"Invalid arn {key_ref}")
        region, account, resource = match.groups()
    elif not key_ref.startswith("alias/"):
        resource = "key/" + key_ref
    if region != ctx.region or account != ctx.account:
        raise NotFoundException(f"Key '{key_ref}' does not exist")
    if resource.startswith("alias/"):
        if not allow_alias:
            raise NotFoundException(f"Invalid keyId '{key_ref}'")
        alias = ctx.keystore.get_alias(account, region, resource)
        if alias is None:
            raise NotFoundException(f"Alias {_alias_arn(region, account, resource)} is not found.")
        key_id = alias.target_key_id
    else:
        key_id = resource.removeprefix("key/")
        if not _KEY_ID.match(key_id):
            raise NotFoundException(f"Invalid keyId '{key_ref}'")
    key = ctx.keystore.get_key(account, region, key_id)
    if key is None:
        raise NotFoundException(f"Key '{_key_arn(region, account, key_id)}' does not exist")
    return key


def _key_arn(region: str, account: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"


def _alias_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:kms:{region}:{account}:{name}"


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
