"""Key life cycle: CreateKey, DescribeKey, ListKeys, enable/disable, deletion."""

from __future__ import annotations

import datetime
from typing import Any

from keyhive import keyspecs, limits
from keyhive.audit import reader
from keyhive.crypto import asymmetric
from keyhive.errors import (
    CustomKeyStoreNotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from keyhive.keystore import KeyRecord, key_arn
from keyhive.service.context import Context
from keyhive.service.policies import check_new_policy, default_key_policy
from keyhive.service.registry import operation
from keyhive.service.resolve import check_range, decode_marker, find_key, page
from keyhive.service.tags import tag_conditions, validate_tags

DAY = limits.SECONDS_PER_DAY


_ALGORITHM_LISTS = {
    keyspecs.ENCRYPT_DECRYPT: "EncryptionAlgorithms",
    keyspecs.SIGN_VERIFY: "SigningAlgorithms",
    keyspecs.GENERATE_VERIFY_MAC: "MacAlgorithms",
    keyspecs.KEY_AGREEMENT: "KeyAgreementAlgorithms",
}


def algorithm_lists(key: KeyRecord) -> dict[str, list[str]]:
    """The algorithms of the key's usage, under the member name AWS uses for that usage."""
    return {_ALGORITHM_LISTS[key.key_usage]: list(keyspecs.SPECS[key.key_spec].algorithms(key.key_usage))}


def key_metadata(key: KeyRecord) -> dict[str, Any]:
    """KeyMetadata as DescribeKey and CreateKey return it."""
    meta: dict[str, Any] = {
        "AWSAccountId": key.account,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created,
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "Origin": key.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        **algorithm_lists(key),
        "MultiRegion": False,
        "CurrentKeyMaterialId": key.current.material_id if key.versions else None,
    }
    if key.origin == "EXTERNAL" and key.versions:
        meta["ExpirationModel"] = key.expiration_model
        meta["ValidTo"] = key.valid_to
    if key.state == "PendingDeletion":
        # PendingDeletionWindowInDays is "present only when KeyState is PendingReplicaDeletion".
        meta["DeletionDate"] = key.deletion_date
    return meta


@operation("CreateKey")
def create_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    spec = req.get("KeySpec")
    legacy_spec = req.get("CustomerMasterKeySpec")
    if spec and legacy_spec:
        raise ValidationException(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
            "CustomerMasterKeySpec is deprecated."
        )
    spec = spec or legacy_spec or "SYMMETRIC_DEFAULT"
    usage = req.get("KeyUsage", keyspecs.ENCRYPT_DECRYPT)
    if spec in keyspecs.UNSUPPORTED_SPECS:
        raise UnsupportedOperationException(f"KeySpec {spec} is not supported by this Keyhive server.")
    key_spec = keyspecs.SPECS[spec]
    if usage not in key_spec.usages:
        raise ValidationException(f"KeyUsage {usage} is not compatible with KeySpec {spec}")
    if req.get("CustomKeyStoreId"):
        raise CustomKeyStoreNotFoundException()
    origin = req.get("Origin", "AWS_KMS")
    if origin not in ("AWS_KMS", "EXTERNAL") or req.get("XksKeyId"):
        raise UnsupportedOperationException(f"Origin {origin} and custom key stores are not supported.")
    if origin == "EXTERNAL" and key_spec.name.startswith("ML_DSA"):
        raise UnsupportedOperationException(f"Importing key material is not supported for {spec} keys.")
    if req.get("MultiRegion"):
        raise UnsupportedOperationException("Multi-Region keys are not supported.")
    tags = validate_tags(req.get("Tags", []))
    bypass = bool(req.get("BypassPolicyLockoutSafetyCheck"))
    ctx.authz.check(ctx, "CreateKey", conditions={
        "kms:KeySpec": spec, "kms:KeyUsage": usage, "kms:KeyOrigin": origin, "kms:MultiRegion": False,
        "kms:BypassPolicyLockoutSafetyCheck": bypass, **tag_conditions(tags),
    })
    policy = req.get("Policy") or default_key_policy(ctx.account)
    key = KeyRecord(
        key_id=ctx.keystore.new_key_id(),
        account=ctx.account,
        region=ctx.region,
        created=ctx.now,
        description=req.get("Description", ""),
        key_usage=usage,
        key_spec=spec,
        origin=origin,
        state="PendingImport" if origin == "EXTERNAL" else "Enabled",
        policy=policy,
        tags=tags,
    )
    if req.get("Policy"):
        check_new_policy(ctx, key, policy, bypass_lockout_check=bypass)
    ctx.keys_used.append((key.account, key.arn))
    external = origin == "EXTERNAL"
    material = None if key_spec.symmetric or external else asymmetric.generate(
        spec, rsa_bits=key_spec.rsa_bits, curve=key_spec.curve, hmac_bytes=key_spec.hmac_bytes)
    return {"KeyMetadata": key_metadata(ctx.keystore.create_key(key, material, external=external))}


@operation("GetKeyLastUsage")
def get_key_last_usage(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "GetKeyLastUsage", allow_alias=False)
    usage, tracking_start = reader.last_usage(ctx.keystore.barrier.storage, key.arn)
    reply: dict[str, Any] = {
        "KeyId": key.arn,
        "KeyCreationDate": key.created,
        "TrackingStartDate": _epoch(tracking_start) if tracking_start else key.created,
    }
    if usage is not None:
        reply["KeyLastUsage"] = {**usage, "Timestamp": _epoch(usage["Timestamp"])}
    return reply


def _epoch(iso: str) -> float:
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


@operation("DescribeKey")
def describe_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    return {"KeyMetadata": key_metadata(find_key(ctx, req["KeyId"], "DescribeKey"))}


@operation("ListKeys")
def list_keys(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    ctx.authz.check(ctx, "ListKeys")
    limit = req.get("Limit", limits.DEFAULT_LIST_LIMIT)
    after = decode_marker(req.get("Marker"))
    ids, marker = page(ctx.keystore.list_key_ids(ctx.account, ctx.region, after, limit + 1), limit)
    keys = [{"KeyId": key_id, "KeyArn": key_arn(ctx.region, ctx.account, key_id)} for key_id in ids]
    return {"Keys": keys, "Truncated": marker is not None, "NextMarker": marker}


@operation("UpdateKeyDescription")
def update_key_description(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "UpdateKeyDescription", allow_alias=False)
    key.description = req["Description"]
    ctx.keystore.save(key)
    return {}


def _set_state(ctx: Context, req: dict[str, Any], operation_name: str, state: str) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], operation_name, allow_alias=False)
    if key.state != state:
        key.state = state
        ctx.keystore.save(key)
    return {}


@operation("EnableKey")
def enable_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    return _set_state(ctx, req, "EnableKey", "Enabled")


@operation("DisableKey")
def disable_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    return _set_state(ctx, req, "DisableKey", "Disabled")


@operation("ScheduleKeyDeletion")
def schedule_key_deletion(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    days = req.get("PendingWindowInDays", limits.DEFAULT_PENDING_WINDOW_DAYS)
    check_range("pendingWindowInDays", days, limits.MIN_PENDING_WINDOW_DAYS, limits.MAX_PENDING_WINDOW_DAYS)
    key = find_key(ctx, req["KeyId"], "ScheduleKeyDeletion", allow_alias=False,
                   conditions={"kms:ScheduleKeyDeletionPendingWindowInDays": days})
    key.state = "PendingDeletion"
    key.pending_window_days = days
    key.deletion_date = ctx.now + days * DAY
    ctx.keystore.save(key)
    return {
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date,
        "KeyState": key.state,
        "PendingWindowInDays": days,
    }


@operation("CancelKeyDeletion")
def cancel_key_deletion(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "CancelKeyDeletion", allow_alias=False)
    key.state = "Disabled"  # AWS leaves a key whose deletion was cancelled disabled
    key.deletion_date = None
    key.pending_window_days = None
    ctx.keystore.save(key)
    return {"KeyId": key.arn}

