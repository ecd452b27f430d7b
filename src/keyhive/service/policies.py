"""Key policies: stored and returned (GetKeyPolicy, PutKeyPolicy, ListKeyPolicies).

The grammar is checked by the pure policy engine (keyhive.policy); enforcement
happens in keyhive.service.authz on every request.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from keyhive import policy
from keyhive.errors import MalformedPolicyDocumentException, NotFoundException
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import find_key

POLICY_NAME = "default"  # the only key policy name AWS KMS supports


def default_key_policy(account: str) -> str:
    """AWS's default key policy: the account root may do everything."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


def check_new_policy(ctx: Context, key: KeyRecord, text: str, *, bypass_lockout_check: bool) -> None:
    """Validate a key policy about to be attached to ``key`` (CreateKey, PutKeyPolicy).

    The grammar, the principals (each named user must exist), and AWS's lockout
    safety check: the new policy must still let the caller call PutKeyPolicy.
    """
    try:
        document = policy.parse_policy(text)
        policy.validate_key_policy(document)
    except policy.PolicyError as exc:
        raise MalformedPolicyDocumentException(str(exc)) from None
    if not all(ctx.authz.principal_exists(p) for p in document.principals()):
        raise MalformedPolicyDocumentException("Policy contains a statement with one or more invalid principals.")
    if not bypass_lockout_check and not ctx.authz.allows(ctx, "PutKeyPolicy", replace(key, policy=text)):
        raise MalformedPolicyDocumentException(
            "The new key policy will not allow you to update the key policy in the future."
        )


def _check_name(name: str | None) -> None:
    if name not in (None, POLICY_NAME):
        raise NotFoundException(f"No such policy: {name}")


@operation("GetKeyPolicy")
def get_key_policy(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    _check_name(req.get("PolicyName"))
    key = find_key(ctx, req["KeyId"], "GetKeyPolicy", allow_alias=False)
    return {"Policy": key.policy, "PolicyName": POLICY_NAME}


@operation("PutKeyPolicy")
def put_key_policy(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    _check_name(req.get("PolicyName"))
    bypass = bool(req.get("BypassPolicyLockoutSafetyCheck"))
    key = find_key(ctx, req["KeyId"], "PutKeyPolicy", allow_alias=False,
                   conditions={"kms:BypassPolicyLockoutSafetyCheck": bypass})
    check_new_policy(ctx, key, req["Policy"], bypass_lockout_check=bypass)
    key.policy = req["Policy"]
    ctx.keystore.save(key)
    return {}


@operation("ListKeyPolicies")
def list_key_policies(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    find_key(ctx, req["KeyId"], "ListKeyPolicies", allow_alias=False)
    return {"PolicyNames": [POLICY_NAME], "Truncated": False}
