"""Tags on KMS keys: TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from typing import Any

from keyhive import limits
from keyhive.errors import LimitExceededException, TagException, ValidationException
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import decode_marker, find_key, page

LIST_TAGS_DEFAULT_LIMIT = 50  # ListResourceTags: "Default: 50" (API reference)
LIST_TAGS_MAX_LIMIT = 50  # ListResourceTags: "must be between 1 and 50, inclusive" (the model says 1000)


def validate_tags(tags: list[dict[str, str]]) -> list[dict[str, str]]:
    if len(tags) > limits.MAX_TAGS_PER_KEY:
        raise LimitExceededException(f"A KMS key can have at most {limits.MAX_TAGS_PER_KEY} tags.")
    seen: set[str] = set()
    for tag in tags:
        key = tag["TagKey"]
        if key.lower().startswith("aws:"):
            raise TagException("Tags beginning with aws: are reserved.")
        if key in seen:
            raise TagException(f"Duplicate tag key {key}")
        seen.add(key)
    return [{"TagKey": t["TagKey"], "TagValue": t["TagValue"]} for t in tags]


def tag_conditions(tags: list[dict[str, str]]) -> dict[str, Any]:
    """aws:RequestTag/* and aws:TagKeys for a request that sets ``tags``."""
    conditions: dict[str, Any] = {f"aws:RequestTag/{t['TagKey']}": t["TagValue"] for t in tags}
    conditions["aws:TagKeys"] = tuple(t["TagKey"] for t in tags)
    return conditions


@operation("TagResource")
def tag_resource(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    tags = validate_tags(req["Tags"])
    key = find_key(ctx, req["KeyId"], "TagResource", allow_alias=False, conditions=tag_conditions(tags))
    merged = {t["TagKey"]: t["TagValue"] for t in key.tags}
    merged.update({t["TagKey"]: t["TagValue"] for t in tags})
    if len(merged) > limits.MAX_TAGS_PER_KEY:
        raise LimitExceededException(f"A KMS key can have at most {limits.MAX_TAGS_PER_KEY} tags.")
    key.tags = [{"TagKey": k, "TagValue": v} for k, v in merged.items()]
    ctx.keystore.save(key)
    return {}


@operation("UntagResource")
def untag_resource(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "UntagResource", allow_alias=False,
                   conditions={"aws:TagKeys": tuple(req["TagKeys"])})
    doomed = set(req["TagKeys"])
    key.tags = [t for t in key.tags if t["TagKey"] not in doomed]
    ctx.keystore.save(key)
    return {}


@operation("ListResourceTags")
def list_resource_tags(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    limit = req.get("Limit", LIST_TAGS_DEFAULT_LIMIT)
    if limit > LIST_TAGS_MAX_LIMIT:
        raise ValidationException(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
            f"Member must have value less than or equal to {LIST_TAGS_MAX_LIMIT}"
        )
    key = find_key(ctx, req["KeyId"], "ListResourceTags", allow_alias=False)
    after = decode_marker(req.get("Marker"))
    ordered = sorted(t["TagKey"] for t in key.tags)
    names, marker = page([k for k in ordered if k > after][: limit + 1], limit)
    values = {t["TagKey"]: t["TagValue"] for t in key.tags}
    return {
        "Tags": [{"TagKey": k, "TagValue": values[k]} for k in names],
        "Truncated": marker is not None,
        "NextMarker": marker,
    }
