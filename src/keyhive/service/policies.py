"""Key policies: stored and returned (GetKeyPolicy, PutKeyPolicy, ListKeyPolicies).

Enforcement is the policy engine's job (a later layer); here a policy must be a
JSON policy document in AWS's grammar at the top level.
"""

from __future__ import annotations

import json
from typing import Any

from keyhive.errors import MalformedPolicyDocumentException, NotFoundException
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


def validate_policy(policy: str) -> None:
    try:
        doc = json.loads(policy)
    except ValueError:
        raise MalformedPolicyDocumentException("The key policy is not a valid JSON document.") from None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise MalformedPolicyDocumentException("Policy document must contain at least one Statement.")
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("Effect") not in ("Allow", "Deny"):
            raise MalformedPolicyDocumentException("Each statement must have an Effect of Allow or Deny.")
        if "Action" not in statement and "NotAction" not in statement:
            raise MalformedPolicyDocumentException("Each statement must have an Action or NotAction.")


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
    key = find_key(ctx, req["KeyId"], "PutKeyPolicy", allow_alias=False)
    validate_policy(req["Policy"])
    key.policy = req["Policy"]
    ctx.keystore.save(key)
    return {}


@operation("ListKeyPolicies")
def list_key_policies(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    find_key(ctx, req["KeyId"], "ListKeyPolicies", allow_alias=False)
    return {"PolicyNames": [POLICY_NAME], "Truncated": False}
