"""The admin API's IAM operations: users, access keys, identity policies, tags.

Names and shapes follow AWS IAM's own API (CreateUser, CreateAccessKey,
PutUserPolicy ...) so that they read familiarly; only admins may call them.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from keyhive import policy
from keyhive.errors import (
    MalformedPolicyDocumentException,
    NoSuchEntityException,
    ValidationException,
)
from keyhive.iam import IdentityStore, describe_user
from keyhive.service.context import Caller

AdminHandler = Callable[[IdentityStore, Caller, dict[str, Any], float], dict[str, Any]]
IAM_OPERATIONS: dict[str, AdminHandler] = {}

_USER_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


def admin_operation(name: str) -> Callable[[AdminHandler], AdminHandler]:
    def register(fn: AdminHandler) -> AdminHandler:
        IAM_OPERATIONS[name] = fn
        return fn

    return register


def _string(req: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = req.get(name)
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ValidationException(f"'{name}' is missing or not valid")
    return value


def _account(caller: Caller, req: dict[str, Any]) -> str:
    return _string(req, "AccountId", _ACCOUNT) if "AccountId" in req else caller.account


def _user(req: dict[str, Any]) -> str:
    return _string(req, "UserName", _USER_NAME)


@admin_operation("CreateUser")
def create_user(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    admin = req.get("Admin", False)
    if not isinstance(admin, bool):
        raise ValidationException("'Admin' must be a boolean")
    return {"User": describe_user(iam.create_user(_account(caller, req), _user(req), now, admin=admin))}


@admin_operation("GetUser")
def get_user(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    return {"User": describe_user(iam.user(_account(caller, req), _user(req)))}


@admin_operation("DeleteUser")
def delete_user(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    iam.delete_user(_account(caller, req), _user(req))
    return {}


@admin_operation("ListUsers")
def list_users(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    return {"Users": [describe_user(u) for u in iam.users(_account(caller, req))]}


@admin_operation("CreateAccessKey")
def create_access_key(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    key = iam.create_access_key(_account(caller, req), _user(req), now)
    return {
        "AccessKey": {
            "UserName": key.user_name,
            "AccountId": key.account,
            "AccessKeyId": key.access_key_id,
            "SecretAccessKey": key.secret_access_key,  # shown this once
            "Status": key.status,
            "CreateDate": key.created,
        }
    }


@admin_operation("ListAccessKeys")
def list_access_keys(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    keys = iam.access_keys(_account(caller, req), _user(req))
    return {
        "AccessKeyMetadata": [
            {"UserName": k.user_name, "AccessKeyId": k.access_key_id, "Status": k.status, "CreateDate": k.created}
            for k in keys
        ]
    }


@admin_operation("UpdateAccessKey")
def update_access_key(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    status = _string(req, "Status")
    if status not in ("Active", "Inactive"):
        raise ValidationException("'Status' must be Active or Inactive")
    iam.update_access_key(_account(caller, req), _string(req, "AccessKeyId"), status)
    return {}


@admin_operation("DeleteAccessKey")
def delete_access_key(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    iam.delete_access_key(_account(caller, req), _string(req, "AccessKeyId"))
    return {}


@admin_operation("PutUserPolicy")
def put_user_policy(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    document = _string(req, "PolicyDocument")
    try:
        policy.validate_identity_policy(policy.parse_policy(document))
    except policy.PolicyError as exc:
        raise MalformedPolicyDocumentException(str(exc)) from None
    iam.put_user_policy(_account(caller, req), _user(req), _string(req, "PolicyName", _POLICY_NAME), document)
    return {}


@admin_operation("GetUserPolicy")
def get_user_policy(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    user = iam.user(_account(caller, req), _user(req))
    name = _string(req, "PolicyName")
    if name not in user.policies:
        raise NoSuchEntityException(f"The user policy with name {name} cannot be found.")
    return {"UserName": user.name, "PolicyName": name, "PolicyDocument": user.policies[name]}


@admin_operation("DeleteUserPolicy")
def delete_user_policy(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    iam.delete_user_policy(_account(caller, req), _user(req), _string(req, "PolicyName"))
    return {}


@admin_operation("ListUserPolicies")
def list_user_policies(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    return {"PolicyNames": sorted(iam.user(_account(caller, req), _user(req)).policies)}


@admin_operation("TagUser")
def tag_user(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    tags = req.get("Tags")
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str) for t in tags
    ):
        raise ValidationException("'Tags' must be a list of {Key, Value} strings")
    iam.tag_user(_account(caller, req), _user(req), {t["Key"]: t["Value"] for t in tags})
    return {}


@admin_operation("UntagUser")
def untag_user(iam: IdentityStore, caller: Caller, req: dict[str, Any], now: float) -> dict[str, Any]:
    keys = req.get("TagKeys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValidationException("'TagKeys' must be a list of strings")
    iam.untag_user(_account(caller, req), _user(req), keys)
    return {}
