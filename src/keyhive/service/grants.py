"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant."""

from __future__ import annotations

import re
from typing import Any

from keyhive import crypto, limits
from keyhive.errors import (
    AccessDeniedException,
    DryRunOperationException,
    InvalidGrantIdException,
    NotFoundException,
    ValidationException,
)
from keyhive.grants import (
    CONTEXT_OPERATIONS,
    SYMMETRIC_GRANT_OPERATIONS,
    Grant,
    grant_token,
    may_create_child,
    parse_grant_token,
)
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import decode_marker, find_key, lookup_key, page

_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:[\w+=,.@/:-]+$|^[a-z0-9.-]+\.amazonaws\.com$")
_GRANT_ID = re.compile(r"^[0-9a-f]{64}$")
# "Grants with grant constraints can include the DescribeKey and RetireGrant operations, but the
# constraint doesn't apply to these operations"; with CreateGrant it binds the grants created
# (CreateGrant, Constraints).
_CONSTRAINT_FREE_OPERATIONS = frozenset({"DescribeKey", "RetireGrant", "CreateGrant"})


def _check_principal(field: str, value: str) -> None:
    if not _PRINCIPAL.match(value):
        raise ValidationException(f"{field} {value} is not a valid principal.")


def _constraints(req: dict[str, Any], operations: list[str]) -> dict[str, dict[str, str]]:
    constraints = {k: v for k, v in (req.get("Constraints") or {}).items() if v is not None}
    if constraints and not set(operations) <= CONTEXT_OPERATIONS | _CONSTRAINT_FREE_OPERATIONS:
        raise ValidationException(
            "Grant constraints are allowed only with operations that take an encryption context, "
            "DescribeKey, RetireGrant and CreateGrant."
        )
    return constraints


@operation("CreateGrant")
def create_grant(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    operations = list(dict.fromkeys(req["Operations"]))
    unsupported = [op for op in operations if op not in SYMMETRIC_GRANT_OPERATIONS]
    if unsupported:
        raise ValidationException(f"Grant operations {unsupported} are not valid for a symmetric encryption KMS key.")
    grantee, retiring = req["GranteePrincipal"], req.get("RetiringPrincipal")
    _check_principal("GranteePrincipal", grantee)
    if retiring:
        _check_principal("RetiringPrincipal", retiring)
    constraints = _constraints(req, operations)
    conditions: dict[str, Any] = {
        "kms:GrantOperations": tuple(operations),
        "kms:GranteePrincipal": grantee,
        "kms:GrantIsForAWSResource": False,
    }
    if retiring:
        conditions["kms:RetiringPrincipal"] = retiring
    if constraints:
        conditions["kms:GrantConstraintType"] = next(iter(constraints))
    key = find_key(ctx, req["KeyId"], "CreateGrant", allow_alias=False, conditions=conditions)
    if not ctx.authz.allows(ctx, "CreateGrant", key, conditions=conditions):
        _check_child_grant(ctx, key, operations, constraints)  # the permission came from a grant
    if req.get("DryRun"):
        raise DryRunOperationException()
    name = req.get("Name", "")
    for existing in ctx.keystore.grants(key):  # Name makes a retried CreateGrant idempotent
        if name and existing.name == name and (existing.grantee_principal, existing.retiring_principal,
                                               existing.operations, existing.constraints) == (
                grantee, retiring, tuple(operations), constraints):
            return {"GrantToken": grant_token(existing), "GrantId": existing.grant_id}
    grant = Grant(
        grant_id=crypto.random_bytes(32).hex(),
        key_id=key.key_id,
        key_arn=key.arn,
        name=name,
        created=ctx.now,
        grantee_principal=grantee,
        retiring_principal=retiring,
        issuing_account=f"arn:aws:iam::{key.account}:root",
        operations=tuple(operations),
        constraints=constraints,
    )
    ctx.keystore.put_grant(key, grant)
    return {"GrantToken": grant_token(grant), "GrantId": grant.grant_id}


def _check_child_grant(ctx: Context, key: KeyRecord, operations: list[str],
                       constraints: dict[str, dict[str, str]]) -> None:
    caller = ctx.caller.principal_arn
    if not any(may_create_child(g, caller, operations, constraints) for g in ctx.keystore.grants(key)):
        raise AccessDeniedException(
            f"User: {caller} is not authorized to perform: kms:CreateGrant on resource: {key.arn}"
        )


def _paged(grants: list[Grant], req: dict[str, Any], default_limit: int) -> dict[str, Any]:
    limit = req.get("Limit", default_limit)
    after = decode_marker(req.get("Marker"))
    by_id = {g.grant_id: g for g in grants}
    ids, marker = page([i for i in sorted(by_id) if i > after][: limit + 1], limit)
    return {"Grants": [by_id[i].describe() for i in ids], "Truncated": marker is not None, "NextMarker": marker}


@operation("ListGrants")
def list_grants(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "ListGrants", allow_alias=False)
    grants = ctx.keystore.grants(key)
    if req.get("GrantId"):
        grants = [g for g in grants if g.grant_id == req["GrantId"]]
    if req.get("GranteePrincipal"):
        grants = [g for g in grants if g.grantee_principal == req["GranteePrincipal"]]
    return _paged(grants, req, limits.DEFAULT_LIST_LIMIT)


@operation("ListRetirableGrants")
def list_retirable_grants(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    ctx.authz.check(ctx, "ListRetirableGrants")
    retiring = req.get("RetiringPrincipal")
    if not retiring:  # "Required: Yes" in the API reference, optional in the model
        raise ValidationException(
            "1 validation error detected: Value null at 'retiringPrincipal' failed to satisfy constraint: "
            "Member must not be null"
        )
    grants = [g for g in ctx.keystore.all_grants(ctx.account, ctx.region) if g.retiring_principal == retiring]
    return _paged(grants, req, limits.DEFAULT_LIST_LIMIT)


def _grant(ctx: Context, key: KeyRecord, grant_id: str) -> Grant:
    if not _GRANT_ID.match(grant_id):
        raise InvalidGrantIdException(f"Grant ID {grant_id} is not valid.")
    for grant in ctx.keystore.grants(key):
        if grant.grant_id == grant_id:
            return grant
    raise NotFoundException(f"Grant ID {grant_id} not found")


@operation("RetireGrant")
def retire_grant(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    if req.get("GrantToken"):
        key_ref, grant_id = parse_grant_token(req["GrantToken"])
    elif req.get("KeyId") and req.get("GrantId"):
        key_ref, grant_id = req["KeyId"], req["GrantId"]
    else:
        raise ValidationException("Specify either GrantToken, or both KeyId and GrantId.")
    key = lookup_key(ctx, key_ref, allow_alias=False, operation="RetireGrant")
    grant = _grant(ctx, key, grant_id)
    # Who may retire (KMS developer guide, "Retiring and revoking grants"): the retiring
    # principal, or the grantee when the grant includes RetireGrant.
    caller = ctx.caller.principal_arn
    if caller != grant.retiring_principal and not (
        caller == grant.grantee_principal and "RetireGrant" in grant.operations
    ):
        raise AccessDeniedException(
            f"User: {caller} is not authorized to perform: kms:RetireGrant on resource: {key.arn}"
        )
    if req.get("DryRun"):
        raise DryRunOperationException()
    ctx.keystore.delete_grant(key, grant.grant_id)
    return {}


@operation("RevokeGrant")
def revoke_grant(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "RevokeGrant", allow_alias=False)
    grant = _grant(ctx, key, req["GrantId"])
    if req.get("DryRun"):
        raise DryRunOperationException()
    ctx.keystore.delete_grant(key, grant.grant_id)
    return {}
