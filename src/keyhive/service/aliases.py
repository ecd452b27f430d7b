"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

from typing import Any

from keyhive.errors import (
    AlreadyExistsException,
    InvalidAliasNameException,
    NotFoundException,
    ValidationException,
)
from keyhive.keystore import AliasRecord, alias_arn
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import decode_marker, find_key, lookup_key, page

RESERVED_PREFIX = "alias/aws/"  # "reserved for AWS managed keys" (CreateAlias)
# ListAliases Limit: "between 1 and 100, inclusive. If you do not include a value, it defaults to 50."
LIST_ALIASES_DEFAULT_LIMIT = 50
LIST_ALIASES_MAX_LIMIT = 100


def _check_name(name: str) -> None:
    if not name.startswith("alias/") or name == "alias/":
        raise InvalidAliasNameException('Alias must start with the prefix "alias/".')
    if name.startswith(RESERVED_PREFIX):
        raise InvalidAliasNameException(f"Alias {name} must not begin with {RESERVED_PREFIX}.")


@operation("CreateAlias")
def create_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    _authorize_alias(ctx, "CreateAlias", name)
    key = find_key(ctx, req["TargetKeyId"], "CreateAlias", allow_alias=False)
    alias = AliasRecord(name, key.key_id, ctx.now, ctx.now)
    if not ctx.keystore.put_alias(ctx.account, ctx.region, alias, create=True):
        raise AlreadyExistsException(f"An alias with the name {alias_arn(ctx.region, ctx.account, name)} already exists")
    return {}


@operation("UpdateAlias")
def update_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    _authorize_alias(ctx, "UpdateAlias", name)
    alias = _existing(ctx, name)
    # Permission on the key the alias leaves, whatever its state (AWS checks only the new key's state).
    ctx.authz.check(ctx, "UpdateAlias", lookup_key(ctx, alias.target_key_id, allow_alias=False))
    key = find_key(ctx, req["TargetKeyId"], "UpdateAlias", allow_alias=False)
    alias.target_key_id, alias.updated = key.key_id, ctx.now
    ctx.keystore.put_alias(ctx.account, ctx.region, alias, create=False)
    return {}


@operation("DeleteAlias")
def delete_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    _authorize_alias(ctx, "DeleteAlias", name)
    alias = _existing(ctx, name)
    ctx.authz.check(ctx, "DeleteAlias", lookup_key(ctx, alias.target_key_id, allow_alias=False))
    ctx.keystore.delete_alias(ctx.account, ctx.region, name)
    return {}


@operation("ListAliases")
def list_aliases(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    ctx.authz.check(ctx, "ListAliases")
    limit = req.get("Limit", LIST_ALIASES_DEFAULT_LIMIT)
    if limit > LIST_ALIASES_MAX_LIMIT:
        raise ValidationException(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
            f"Member must have value less than or equal to {LIST_ALIASES_MAX_LIMIT}"
        )
    after = decode_marker(req.get("Marker"))
    aliases = ctx.keystore.aliases(ctx.account, ctx.region)
    if req.get("KeyId"):
        key = lookup_key(ctx, req["KeyId"], allow_alias=False)
        aliases = [a for a in aliases if a.target_key_id == key.key_id]
    by_name = {a.name: a for a in aliases}
    names, marker = page([n for n in sorted(by_name) if n > after][: limit + 1], limit)
    return {
        "Aliases": [
            {
                "AliasName": n,
                "AliasArn": alias_arn(ctx.region, ctx.account, n),
                "TargetKeyId": by_name[n].target_key_id,
                "CreationDate": by_name[n].created,
                "LastUpdatedDate": by_name[n].updated,
            }
            for n in names
        ],
        "Truncated": marker is not None,
        "NextMarker": marker,
    }


def _authorize_alias(ctx: Context, operation: str, name: str) -> None:
    """Alias operations need permission on the alias itself, which only identity policies give."""
    ctx.authz.check(ctx, operation, resource=alias_arn(ctx.region, ctx.account, name))


def _existing(ctx: Context, name: str) -> AliasRecord:
    alias = ctx.keystore.get_alias(ctx.account, ctx.region, name)
    if alias is None:
        raise NotFoundException(f"Alias {alias_arn(ctx.region, ctx.account, name)} is not found.")
    return alias
