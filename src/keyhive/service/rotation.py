"""Rotation of KMS key material, automatic and on demand.

Rotation adds a material version; every older version keeps decrypting what it
encrypted, and ciphertexts keep reporting the same KeyId.
"""

from __future__ import annotations

from typing import Any

from keyhive import limits
from keyhive.errors import (
    InvalidMarkerException,
    LimitExceededException,
    UnsupportedOperationException,
)
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import check_range, decode_marker, find_key, page

DAY = limits.SECONDS_PER_DAY


def _last_rotation(key: KeyRecord) -> float:
    automatic = [v.created for v in key.versions if v.rotation_type == "AUTOMATIC"]
    return max(automatic, default=key.created)


def _rotatable(key: KeyRecord) -> KeyRecord:
    """Only symmetric encryption keys with AWS_KMS material rotate (KMS developer guide, Rotating keys)."""
    if key.key_spec != "SYMMETRIC_DEFAULT" or key.origin != "AWS_KMS":
        raise UnsupportedOperationException(f"{key.arn} key spec {key.key_spec} does not support key rotation.")
    return key


@operation("EnableKeyRotation")
def enable_key_rotation(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    period = req.get("RotationPeriodInDays", limits.DEFAULT_ROTATION_PERIOD_DAYS)
    check_range("rotationPeriodInDays", period, limits.MIN_ROTATION_PERIOD_DAYS, limits.MAX_ROTATION_PERIOD_DAYS)
    key = _rotatable(find_key(ctx, req["KeyId"], "EnableKeyRotation", allow_alias=False,
                   conditions={"kms:RotationPeriodInDays": period}))
    # A changed period counts from the last automatic rotation, as AWS documents.
    start = _last_rotation(key) if key.rotation_enabled else ctx.now
    key.rotation_enabled = True
    key.rotation_period_days = period
    key.next_rotation = max(start + period * DAY, ctx.now)
    ctx.keystore.save(key)
    return {}


@operation("DisableKeyRotation")
def disable_key_rotation(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(find_key(ctx, req["KeyId"], "DisableKeyRotation", allow_alias=False))
    key.rotation_enabled = False
    key.rotation_period_days = None
    key.next_rotation = None
    ctx.keystore.save(key)
    return {}


@operation("GetKeyRotationStatus")
def get_key_rotation_status(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(find_key(ctx, req["KeyId"], "GetKeyRotationStatus", allow_alias=False))
    return {
        "KeyRotationEnabled": key.rotation_enabled,
        "KeyId": key.arn,
        "RotationPeriodInDays": key.rotation_period_days,
        "NextRotationDate": key.next_rotation,
        "OnDemandRotationStartDate": key.on_demand_started,
    }


@operation("RotateKeyOnDemand")
def rotate_key_on_demand(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(find_key(ctx, req["KeyId"], "RotateKeyOnDemand", allow_alias=False))
    done = sum(1 for v in key.versions if v.rotation_type == "ON_DEMAND")
    if done >= limits.MAX_ON_DEMAND_ROTATIONS:
        raise LimitExceededException(
            f"You have exceeded the maximum of {limits.MAX_ON_DEMAND_ROTATIONS} on-demand rotations for {key.arn}."
        )
    ctx.keystore.rotate(key, "ON_DEMAND", ctx.now)
    return {"KeyId": key.arn}


@operation("ListKeyRotations")
def list_key_rotations(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(find_key(ctx, req["KeyId"], "ListKeyRotations", allow_alias=False))
    limit = req.get("Limit", limits.DEFAULT_LIST_LIMIT)
    after = _version_marker(req.get("Marker"))
    include_all = req.get("IncludeKeyMaterial") == "ALL_KEY_MATERIAL"
    versions = [v for v in key.versions if include_all or v.rotation_type is not None]
    by_number = {f"{v.version:010d}": v for v in versions}
    numbers, marker = page([n for n in sorted(by_number) if int(n) > after][: limit + 1], limit)
    current = key.current.version
    rotations = []
    for n in numbers:
        v = by_number[n]
        entry: dict[str, Any] = {
            "KeyId": key.key_id,
            "KeyMaterialId": v.material_id,
            "KeyMaterialState": "CURRENT" if v.version == current else "NON_CURRENT",
        }
        if v.rotation_type is not None:
            entry["RotationDate"] = v.created
            entry["RotationType"] = v.rotation_type
        rotations.append(entry)
    return {"Rotations": rotations, "Truncated": marker is not None, "NextMarker": marker}


def _version_marker(marker: str | None) -> int:
    """The material version a ListKeyRotations marker points after (0: from the start)."""
    after = decode_marker(marker)
    if not after:
        return 0
    if not (after.isascii() and after.isdigit()):
        raise InvalidMarkerException()
    return int(after)

