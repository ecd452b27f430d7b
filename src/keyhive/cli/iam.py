"""``keyhive iam``: users, access keys and identity policies, through the admin API.

Each command is one admin API call signed with the caller's AWS credentials
(an admin's); output is the JSON reply, or a short table with ``--text``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from keyhive.cli.client import ClientError, call, default_endpoint, error_text


def add_commands(commands: Any) -> None:
    iam = commands.add_parser("iam", help="manage users, access keys and identity policies (admin)")
    ops = iam.add_subparsers(title="iam commands")

    def command(name: str, help_text: str, action: str, *args: tuple[str, dict[str, Any]]) -> None:
        parser = ops.add_parser(name, help=help_text)
        parser.add_argument("--endpoint", default=None, help="server URL (default $KEYHIVE_ENDPOINT)")
        parser.add_argument("--account-id", help="the users' account (default: the caller's)")
        for flag, options in args:
            parser.add_argument(flag, **options)
        parser.set_defaults(run=_run, action=action)

    user = ("--user-name", {"required": True, "help": "the IAM user's name"})
    command("create-user", "create a user", "CreateUser", user,
            ("--admin", {"action": "store_true", "help": "may use the admin API and everything else"}))
    command("get-user", "show a user", "GetUser", user)
    command("delete-user", "delete a user (its access keys and policies first)", "DeleteUser", user)
    command("list-users", "list the users of an account", "ListUsers")
    command("create-access-key", "create an access key; the secret is shown only this once", "CreateAccessKey", user)
    command("list-access-keys", "list a user's access keys (never their secrets)", "ListAccessKeys", user)
    command("update-access-key", "activate or deactivate an access key", "UpdateAccessKey",
            ("--access-key-id", {"required": True, "help": "the access key's id"}),
            ("--status", {"required": True, "choices": ["Active", "Inactive"], "help": "Inactive keys are refused"}))
    command("delete-access-key", "delete an access key", "DeleteAccessKey",
            ("--access-key-id", {"required": True, "help": "the access key's id"}))
    command("put-user-policy", "attach an inline identity policy (AWS JSON policy language)", "PutUserPolicy", user,
            ("--policy-name", {"required": True, "help": "the inline policy's name"}),
            ("--policy-document", {"required": True, "help": "the JSON document, or file://PATH"}))
    command("get-user-policy", "show an inline identity policy", "GetUserPolicy", user, ("--policy-name", {"required": True, "help": "the inline policy's name"}))
    command("delete-user-policy", "remove an inline identity policy", "DeleteUserPolicy", user,
            ("--policy-name", {"required": True, "help": "the inline policy's name"}))
    command("list-user-policies", "list a user's inline policy names", "ListUserPolicies", user)
    command("tag-user", "tag a user (aws:PrincipalTag/* in policies)", "TagUser", user,
            ("--tags", {"required": True, "nargs": "+", "metavar": "KEY=VALUE", "help": "tags to set"}))
    command("untag-user", "remove tags from a user", "UntagUser", user,
            ("--tag-keys", {"required": True, "nargs": "+", "help": "keys of the tags to remove"}))


def _document(value: str) -> str:
    return Path(value.removeprefix("file://")).read_text() if value.startswith("file://") else value


def _request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.account_id:
        body["AccountId"] = args.account_id
    for attr, field in (("user_name", "UserName"), ("access_key_id", "AccessKeyId"), ("status", "Status"),
                        ("policy_name", "PolicyName"), ("tag_keys", "TagKeys")):
        if getattr(args, attr, None) is not None:
            body[field] = getattr(args, attr)
    if getattr(args, "admin", False):
        body["Admin"] = True
    if getattr(args, "policy_document", None):
        body["PolicyDocument"] = _document(args.policy_document)
    if getattr(args, "tags", None):
        pairs = [t.split("=", 1) for t in args.tags]
        if any(len(p) != 2 for p in pairs):
            raise ClientError("--tags takes KEY=VALUE pairs")
        body["Tags"] = [{"Key": k, "Value": v} for k, v in pairs]
    return body


def _run(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or default_endpoint()
    code, doc = call(endpoint, "POST", f"/keyhive/v1/iam/{args.action}", _request(args), sign=True)
    if code != 200:
        raise ClientError(error_text(doc))
    if doc:
        print(json.dumps(doc, indent=2))
    return 0
