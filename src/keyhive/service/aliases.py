"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

from typing import Any

from keyhive import limits
from keyhive.errors import AlreadyExistsException, InvalidAliasNameException, NotFoundException
from keyhive.keystore import AliasRecord, alias_arn
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import decode_marker, find_key, lookup_key, page

RESERVED_PREFIX = "alias/aws/"  # "reserved for AWS managed keys" (CreateAlias)


def _check_name(name: str) -> None:
    if not name.startswith("alias/") or name == "alias/":
        raise InvalidAliasNameException('Alias must start with the prefix "alias/".')
    if name.startswith(RESERVED_PREFIX):
        raise InvalidAliasNameException(f"Alias {name} must not begin with {RESERVED_PREFIX}.")


@operation("CreateAlias")
def create_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    key = find_key(ctx, req["TargetKeyId"], "CreateAlias", allow_alias=False)
    alias = AliasRecord(name, key.key_id, ctx.now, ctx.now)
    if not ctx.keystore.put_alias(ctx.account, ctx.region, alias, create=True):
        raise AlreadyExistsException(f"An alias with the name {alias_arn(ctx.region, ctx.account, name)} already exists")
    return {}


@operation("UpdateAlias")
def update_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    alias = _existing(ctx, name)
    key = find_key(ctx, req["TargetKeyId"], "UpdateAlias", allow_alias=False)
    alias.target_key_id, alias.updated = key.key_id, ctx.now
    ctx.keystore.put_alias(ctx.account, ctx.region, alias, create=False)
    return {}


@operation("DeleteAlias")
def delete_alias(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    name = req["AliasName"]
    _check_name(name)
    _existing(ctx, name)
    ctx.keystore.delete_alias(ctx.account, ctx.region, name)
    return {}


@operation("ListAliases")
def list_aliases(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    limit = req.get("Limit", limits.DEFAULT_LIST_LIMIT)
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


def _existing(ctx: Context, name: str) -> AliasRecord:
    alias = ctx.keystore.get_alias(ctx.account, ctx.region, name)
    if alias is None:
        raise NotFoundException(f"Alias {alias_arn(ctx.region, ctx.account, name)} is not found.")
    return alias
