"""keyhive.policy against AWS's documented examples.

Policies are taken from the IAM User Guide ("Condition operators", "Creating a condition
with multiple keys or values", "NotPrincipal", "Variables and tags") and the AWS KMS
Developer Guide ("Default key policy", "Creating a key policy", "AWS KMS condition keys",
"Allowing users in other accounts to use a KMS key").  Each case names its source.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyhive.policy import (
    Match,
    Policy,
    PolicyError,
    RequestContext,
    Verdict,
    access_denied_message,
    decide,
    evaluate_identity_policies,
    evaluate_key_policy,
    lockout_safe,
    parse_policy,
    uses_time,
    validate_identity_policy,
    validate_key_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
KEY = f"arn:aws:kms:us-west-2:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:us-west-2:{OTHER}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
ALIAS = f"arn:aws:kms:us-west-2:{ACCT}:alias/finance-key"
ROOT = f"arn:aws:iam::{ACCT}:root"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
BOB = f"arn:aws:iam::{ACCT}:user/bob"
ADMIN = f"arn:aws:iam::{ACCT}:user/KMSAdminUser"
EXAMPLE_USER = f"arn:aws:iam::{ACCT}:user/ExampleUser"
EXAMPLE_ROLE = f"arn:aws:iam::{ACCT}:role/ExampleRole"
EXAMPLE_SESSION = f"arn:aws:sts::{ACCT}:assumed-role/ExampleRole/app-1"
APP_ROLE = f"arn:aws:iam::{ACCT}:role/RoleForExampleApp"
APP_SESSION = f"arn:aws:sts::{ACCT}:assumed-role/RoleForExampleApp/s"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
OTHER_USER = f"arn:aws:iam::{OTHER}:user/ExampleUser"
OTHER_CAROL = f"arn:aws:iam::{OTHER}:user/carol"
OTHER_BOB = f"arn:aws:iam::{OTHER}:user/Bob"


def req(
    principal: str = ALICE,
    action: str = "kms:Decrypt",
    resource: str = KEY,
    keys: dict[str, Any] | None = None,
) -> RequestContext:
    account = principal.split(":")[4]
    return RequestContext(principal, account, action, resource, keys or {})


def doc(*statements: dict[str, Any], version: str | None = "2012-10-17") -> str:
    body: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        body["Version"] = version
    return json.dumps(body)


def allow(principal: Any = None, action: Any = "kms:*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource, **extra}
    if principal is not None:
        statement["Principal"] = principal
    return statement


def deny(principal: Any = None, action: Any = "kms:*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {**allow(principal, action, resource, **extra), "Effect": "Deny"}


def when(operator: str, key: str, value: Any) -> dict[str, Any]:
    return {"Condition": {operator: {key: value}}}


# -- documented key policies ----------------------------------------------------------
# KMS guide, "Default key policy": the whole default policy for keys made programmatically.
DEFAULT = doc(allow({"AWS": ROOT}))
# KMS guide, "Creating a key policy", "Example key policy" (console default, four statements).
CONSOLE = doc(
    {**allow({"AWS": ROOT}), "Sid": "Enable IAM policies"},
    allow(
        {"AWS": [ADMIN, f"arn:aws:iam::{ACCT}:role/KMSAdminRole"]},
        [
            "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
            "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
            "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
        ],
    ),
    allow(
        {"AWS": [EXAMPLE_USER, EXAMPLE_ROLE, OTHER_ROOT]},
        ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
    ),
    allow(
        {"AWS": [EXAMPLE_USER, EXAMPLE_ROLE, OTHER_ROOT]},
        ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
        **when("Bool", "kms:GrantIsForAWSResource", "true"),
    ),
)
# The same key users statements without the account statement, so that they alone decide.
USERS_ONLY = doc(*json.loads(CONSOLE)["Statement"][2:])
# KMS guide, "kms:EncryptionContext:context-key": a Deny on Stage=Restricted next to an Allow.
STAGE = doc(
    allow({"AWS": APP_ROLE}, "kms:GenerateDataKey"),
    deny({"AWS": APP_ROLE}, "kms:GenerateDataKey", **when("StringEquals", "kms:EncryptionContext:Stage", "Restricted")),
)
STAGES = doc(
    allow({"AWS": APP_ROLE}, "kms:GenerateDataKey"),
    deny(
        {"AWS": APP_ROLE},
        "kms:GenerateDataKey",
        **when("StringEquals", "kms:EncryptionContext:Stage", ["Restricted", "Production"]),
    ),
)
# Same page: require AppName=ExampleApp and forbid every other context key.
APP_ONLY = doc(
    allow(
        {"AWS": ALICE},
        "kms:GenerateDataKey",
        Condition={
            "StringEquals": {"kms:EncryptionContext:AppName": "ExampleApp"},
            "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["AppName"]},
        },
    )
)
# Same page: two pairs required (two keys in one operator: AND).
TWO_PAIRS = doc(
    allow(
        {"AWS": APP_ROLE},
        "kms:Decrypt",
        Condition={
            "StringEquals": {"kms:EncryptionContext:Department": "IT", "kms:EncryptionContext:Project": "Alpha"}
        },
    )
)
# Same page, "Using variables in an encryption context condition".
OWN_CONTEXT = doc(
    allow(
        {"AWS": [BOB, APP_ROLE]},
        ["kms:Decrypt", "kms:Encrypt"],
        **when("StringEquals", "kms:EncryptionContext:user", "${aws:username}"),
    )
)
OWN_CONTEXT_2008 = OWN_CONTEXT.replace('"Version": "2012-10-17"', '"Version": "2008-10-17"')
# KMS guide, "Allowing users in other accounts to use a KMS key".
EXTERNAL_ACCOUNT = doc(
    allow({"AWS": [OTHER_ROOT]}, ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"])
)
EXTERNAL_USERS = doc(allow({"AWS": [f"arn:aws:iam::{OTHER}:role/ExampleRole", OTHER_USER]}, ["kms:Encrypt", "kms:Decrypt"]))
# KMS guide, "kms:CallerAccount": the AWS managed key for Amazon EBS.
EBS = doc(
    allow(
        {"AWS": "*"},
        ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
        Condition={"StringEquals": {"kms:CallerAccount": ACCT, "kms:ViaService": "ec2.us-west-2.amazonaws.com"}},
    )
)
# IAM guide, "NotPrincipal with Deny": everyone but Bob (and his account) is denied.
NOT_BOB = doc(allow("*"), {"Effect": "Deny", "NotPrincipal": {"AWS": [OTHER_BOB, OTHER_ROOT]}, "Action": "kms:*", "Resource": "*"})
NOT_ALICE_ALLOW = doc({"Effect": "Allow", "NotPrincipal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"})

CTX = "kms:EncryptionContext:"

KEY_POLICY_CASES = [
    # default key policy: the account is named, so its principals are delegated to IAM
    ("default: a user gets the account", DEFAULT, req(), Match.ALLOW_ACCOUNT),
    ("default: the root is the account", DEFAULT, req(ROOT), Match.ALLOW_PRINCIPAL),
    ("default: other account's user", DEFAULT, req(OTHER_USER), Match.NONE),
    ("default: other account's root", DEFAULT, req(OTHER_ROOT), Match.NONE),
    ("default: not a kms action", DEFAULT, req(action="s3:GetObject"), Match.NONE),
    ("bare account id names the account", doc(allow({"AWS": ACCT})), req(), Match.ALLOW_ACCOUNT),
    ("bare account id and the root", doc(allow({"AWS": ACCT})), req(ROOT), Match.ALLOW_PRINCIPAL),
    # console policy: key administrators and key users
    ("console: admin DescribeKey", CONSOLE, req(ADMIN, "kms:DescribeKey"), Match.ALLOW_PRINCIPAL),
    ("console: admin PutKeyPolicy (kms:Put*)", CONSOLE, req(ADMIN, "kms:PutKeyPolicy"), Match.ALLOW_PRINCIPAL),
    ("console: admin ScheduleKeyDeletion", CONSOLE, req(ADMIN, "kms:ScheduleKeyDeletion"), Match.ALLOW_PRINCIPAL),
    ("console: admin Decrypt only via the account", CONSOLE, req(ADMIN, "kms:Decrypt"), Match.ALLOW_ACCOUNT),
    ("console: user Encrypt", CONSOLE, req(EXAMPLE_USER, "kms:Encrypt"), Match.ALLOW_PRINCIPAL),
    ("console: user GenerateDataKey*", CONSOLE, req(EXAMPLE_USER, "kms:GenerateDataKeyWithoutPlaintext"),
     Match.ALLOW_PRINCIPAL),
    ("console: user ReEncrypt*", CONSOLE, req(EXAMPLE_USER, "kms:ReEncryptFrom"), Match.ALLOW_PRINCIPAL),
    ("console: role session is the role", CONSOLE, req(EXAMPLE_SESSION, "kms:Decrypt"), Match.ALLOW_PRINCIPAL),
    ("users only: grant for an AWS resource", USERS_ONLY,
     req(EXAMPLE_USER, "kms:CreateGrant", keys={"kms:GrantIsForAWSResource": True}), Match.ALLOW_PRINCIPAL),
    ("users only: grant with the flag as text", USERS_ONLY,
     req(EXAMPLE_USER, "kms:CreateGrant", keys={"kms:GrantIsForAWSResource": "true"}), Match.ALLOW_PRINCIPAL),
    ("users only: direct grant (flag false)", USERS_ONLY,
     req(EXAMPLE_USER, "kms:CreateGrant", keys={"kms:GrantIsForAWSResource": False}), Match.NONE),
    ("users only: direct grant (flag absent)", USERS_ONLY, req(EXAMPLE_USER, "kms:CreateGrant"), Match.NONE),
    ("users only: user cannot delete", USERS_ONLY, req(EXAMPLE_USER, "kms:ScheduleKeyDeletion"), Match.NONE),
    ("users only: external account user", USERS_ONLY, req(OTHER_USER, "kms:Encrypt"), Match.ALLOW_ACCOUNT),
    ("users only: same role name, other account", USERS_ONLY,
     req(f"arn:aws:sts::{OTHER}:assumed-role/ExampleRole/app-1", "kms:Encrypt"), Match.ALLOW_ACCOUNT),
    ("users only: alice is nobody here", USERS_ONLY, req(ALICE, "kms:Encrypt"), Match.NONE),
    ("user ARN name is case-sensitive", doc(allow({"AWS": f"arn:aws:iam::{ACCT}:user/Alice"})), req(), Match.NONE),
    ("role with a path via aws:PrincipalArn", doc(allow({"AWS": f"arn:aws:iam::{ACCT}:role/team/Ops"})),
     req(f"arn:aws:sts::{ACCT}:assumed-role/Ops/s", keys={"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:role/team/Ops"}),
     Match.ALLOW_PRINCIPAL),
    # encryption context conditions
    ("context: Stage=Restricted denied", STAGE,
     req(APP_SESSION, "kms:GenerateDataKey", keys={CTX + "Stage": "Restricted"}), Match.DENY),
    ("context: Stage=Test allowed", STAGE,
     req(APP_SESSION, "kms:GenerateDataKey", keys={CTX + "Stage": "Test"}), Match.ALLOW_PRINCIPAL),
    ("context: none allowed", STAGE, req(APP_SESSION, "kms:GenerateDataKey"), Match.ALLOW_PRINCIPAL),
    ("context: key name is case-insensitive", STAGE,
     req(APP_SESSION, "kms:GenerateDataKey", keys={"KMS:encryptioncontext:stage": "Restricted"}), Match.DENY),
    ("context: value is case-sensitive", STAGE,
     req(APP_SESSION, "kms:GenerateDataKey", keys={CTX + "Stage": "restricted"}), Match.ALLOW_PRINCIPAL),
    ("context: values are ORed", STAGES,
     req(APP_SESSION, "kms:GenerateDataKey", keys={CTX + "Stage": "Production"}), Match.DENY),
    ("context: the one allowed pair", APP_ONLY,
     req(action="kms:GenerateDataKey", keys={CTX + "AppName": "ExampleApp", "kms:EncryptionContextKeys": ("AppName",)}),
     Match.ALLOW_PRINCIPAL),
    ("context: an extra pair is refused", APP_ONLY,
     req(action="kms:GenerateDataKey", keys={CTX + "AppName": "ExampleApp", CTX + "Project": "Alpha",
                                              "kms:EncryptionContextKeys": ("AppName", "Project")}), Match.NONE),
    ("context: none at all is refused", APP_ONLY, req(action="kms:GenerateDataKey"), Match.NONE),
    ("context: both pairs", TWO_PAIRS,
     req(APP_SESSION, keys={CTX + "Department": "IT", CTX + "Project": "Alpha"}), Match.ALLOW_PRINCIPAL),
    ("context: one of two pairs", TWO_PAIRS, req(APP_SESSION, keys={CTX + "Department": "IT"}), Match.NONE),
    ("variable: bob decrypts his own", OWN_CONTEXT, req(BOB, keys={CTX + "user": "bob"}), Match.ALLOW_PRINCIPAL),
    ("variable: bob cannot decrypt alice's", OWN_CONTEXT, req(BOB, keys={CTX + "user": "alice"}), Match.NONE),
    ("variable: a role has no user name", OWN_CONTEXT, req(APP_SESSION, keys={CTX + "user": "s"}), Match.NONE),
    ("variable: 2008-10-17 reads it literally", OWN_CONTEXT_2008,
     req(BOB, keys={CTX + "user": "${aws:username}"}), Match.ALLOW_PRINCIPAL),
    ("variable: 2008-10-17 does not substitute", OWN_CONTEXT_2008, req(BOB, keys={CTX + "user": "bob"}), Match.NONE),
    # cross-account
    ("external account: its user", EXTERNAL_ACCOUNT, req(OTHER_USER), Match.ALLOW_ACCOUNT),
    ("external account: its root", EXTERNAL_ACCOUNT, req(OTHER_ROOT), Match.ALLOW_PRINCIPAL),
    ("external account: not for the owner", EXTERNAL_ACCOUNT, req(ALICE), Match.NONE),
    ("external users: named user", EXTERNAL_USERS, req(OTHER_USER), Match.ALLOW_PRINCIPAL),
    ("external users: another user of theirs", EXTERNAL_USERS, req(OTHER_CAROL), Match.NONE),
    # kms:CallerAccount and kms:ViaService
    ("EBS: through EC2 in the account", EBS,
     req(keys={"kms:CallerAccount": ACCT, "kms:ViaService": "ec2.us-west-2.amazonaws.com"}), Match.ALLOW_PRINCIPAL),
    ("EBS: directly", EBS, req(keys={"kms:CallerAccount": ACCT}), Match.NONE),
    ("EBS: another account", EBS,
     req(OTHER_USER, keys={"kms:CallerAccount": OTHER, "kms:ViaService": "ec2.us-west-2.amazonaws.com"}), Match.NONE),
    ("EBS: through RDS", EBS,
     req(keys={"kms:CallerAccount": ACCT, "kms:ViaService": "rds.us-west-2.amazonaws.com"}), Match.NONE),
    # NotPrincipal
    ("NotPrincipal deny: Bob is exempt", NOT_BOB, req(OTHER_BOB), Match.ALLOW_PRINCIPAL),
    ("NotPrincipal deny: Bob's account root is exempt", NOT_BOB, req(OTHER_ROOT), Match.ALLOW_PRINCIPAL),
    ("NotPrincipal deny: alice is denied", NOT_BOB, req(ALICE), Match.DENY),
    ("NotPrincipal deny: Bob's colleague is denied", NOT_BOB, req(OTHER_CAROL), Match.DENY),
    ("NotPrincipal allow: everyone else", NOT_ALICE_ALLOW, req(BOB), Match.ALLOW_PRINCIPAL),
    ("NotPrincipal allow: not alice", NOT_ALICE_ALLOW, req(ALICE), Match.NONE),
    # Principal forms
    ('Principal "*"', doc(allow("*")), req(OTHER_USER), Match.ALLOW_PRINCIPAL),
    ('Principal {"AWS": "*"}', doc(allow({"AWS": "*"})), req(ALICE), Match.ALLOW_PRINCIPAL),
    ("Principal list", doc(allow({"AWS": [BOB, ALICE]})), req(ALICE), Match.ALLOW_PRINCIPAL),
    ("Service principal is not a user", doc(allow({"Service": "ec2.amazonaws.com"})), req(), Match.NONE),
    ("Deny naming the account covers its users", doc(allow("*"), deny({"AWS": ACCT})), req(ALICE), Match.DENY),
    ("statement without Resource has no effect", doc({"Effect": "Allow", "Principal": "*", "Action": "kms:*"}),
     req(), Match.NONE),
    ("Deny wins over a later Allow", doc(deny({"AWS": ALICE}, "kms:Decrypt"), allow({"AWS": ALICE})), req(), Match.DENY),
    ("principal beats account", doc(allow({"AWS": ROOT}), allow({"AWS": ALICE}, "kms:Decrypt")), req(),
     Match.ALLOW_PRINCIPAL),
]


@pytest.mark.parametrize(("policy", "request_", "expected"), [c[1:] for c in KEY_POLICY_CASES],
                         ids=[c[0] for c in KEY_POLICY_CASES])
def test_key_policy(policy: str, request_: RequestContext, expected: Match) -> None:
    assert evaluate_key_policy(parse_policy(policy), request_) is expected


# -- identity policies: actions, resources, operators ---------------------------------
def ident(*statements: dict[str, Any], version: str | None = "2012-10-17") -> str:
    return doc(*statements, version=version)


def cond(operator: str, key: str, value: Any, effect: str = "Allow") -> str:
    return ident({"Effect": effect, "Action": "*", "Resource": "*", "Condition": {operator: {key: value}}})


def on(action: Any = "*", resource: Any = "*", *, not_action: bool = False, not_resource: bool = False) -> str:
    statement: dict[str, Any] = {"Effect": "Allow"}
    statement["NotAction" if not_action else "Action"] = action
    statement["NotResource" if not_resource else "Resource"] = resource
    return ident(statement)


A, N, D = Match.ALLOW_PRINCIPAL, Match.NONE, Match.DENY
ATTRS = "dynamodb:requestedAttributes"
SRC_IP = "aws:SourceIp"
T = "aws:CurrentTime"

IDENTITY_CASES = [
    # actions: IAM grammar notes, "action_string"
    ("kms:* matches any kms action", on("kms:*"), req(action="kms:ScheduleKeyDeletion"), A),
    ("action case is ignored", on("KMS:decrypt"), req(action="kms:Decrypt"), A),
    ("request action case is ignored", on("kms:Decrypt"), req(action="KMS:DECRYPT"), A),
    ("kms:Describe* matches DescribeKey", on("kms:Describe*"), req(action="kms:DescribeKey"), A),
    ("kms:Describe* does not match Decrypt", on("kms:Describe*"), req(action="kms:Decrypt"), N),
    ("* matches every service", on("*"), req(action="s3:GetObject"), A),
    ("? matches one character", on("kms:?ecrypt"), req(action="kms:Decrypt"), A),
    ("? does not match two", on("kms:?crypt"), req(action="kms:Decrypt"), N),
    ("action list", on(["kms:Encrypt", "kms:Re*"]), req(action="kms:ReEncryptFrom"), A),
    ("other service prefix", on("kmsx:*"), req(action="kms:Decrypt"), N),
    ("NotAction allows the rest", on("kms:Decrypt", not_action=True), req(action="kms:Encrypt"), A),
    ("NotAction excludes its own", on("kms:Decrypt", not_action=True), req(action="kms:Decrypt"), N),
    ("NotAction Deny", ident(allow(), {"Effect": "Deny", "NotAction": "kms:Describe*", "Resource": "*"}),
     req(action="kms:Encrypt"), D),
    ("NotAction Deny spares its own", ident(allow(), {"Effect": "Deny", "NotAction": "kms:Describe*", "Resource": "*"}),
     req(action="kms:DescribeKey"), A),
    # resources: ARN matching part by part, case-sensitive
    ("exact key ARN", on("*", KEY), req(), A),
    ("any Region, this account's keys", on("*", f"arn:aws:kms:*:{ACCT}:key/*"), req(), A),
    ("other account's keys", on("*", f"arn:aws:kms:us-west-2:{OTHER}:key/*"), req(), N),
    ("key pattern does not match an alias", on("*", f"arn:aws:kms:*:{ACCT}:key/*"), req(resource=ALIAS), N),
    ("? in the Region", on("*", f"arn:aws:kms:us-west-?:{ACCT}:key/*"), req(), A),
    ("resource is case-sensitive", on("*", f"arn:aws:kms:us-west-2:{ACCT}:KEY/*"), req(), N),
    ("last part spans slashes", on("*", f"arn:aws:kms:*:{ACCT}:*"), req(), A),
    ("* in a part stays in its part", on("*", "arn:aws:kms:*:key/*"), req(), N),
    ("NotResource allows other resources", on("*", f"arn:aws:kms:*:{ACCT}:alias/*", not_resource=True), req(), A),
    ("NotResource excludes its own", on("*", f"arn:aws:kms:*:{ACCT}:alias/*", not_resource=True),
     req(resource=ALIAS), N),
    ('"*" matches a keyless request', on("kms:CreateKey", "*"), req(action="kms:CreateKey", resource="*"), A),
    ("a key pattern does not match keyless", on("kms:CreateKey", f"arn:aws:kms:*:{ACCT}:key/*"),
     req(action="kms:CreateKey", resource="*"), N),
    ("variable in Resource", on("*", f"arn:aws:kms:*:{ACCT}:alias/${{aws:username}}-*"),
     req(resource=f"arn:aws:kms:us-west-2:{ACCT}:alias/alice-key"), A),
    ("variable in Resource, other user", on("*", f"arn:aws:kms:*:{ACCT}:alias/${{aws:username}}-*"),
     req(BOB, resource=f"arn:aws:kms:us-west-2:{ACCT}:alias/alice-key"), N),
    # String operators (IAM guide, "String condition operators")
    ("StringEquals present", cond("StringEquals", "aws:PrincipalTag/job-category", "iamuser-admin"),
     req(keys={"aws:PrincipalTag/job-category": "iamuser-admin"}), A),
    ("StringEquals other value", cond("StringEquals", "aws:PrincipalTag/job-category", "iamuser-admin"),
     req(keys={"aws:PrincipalTag/job-category": "dev"}), N),
    ("StringEquals absent key", cond("StringEquals", "aws:PrincipalTag/job-category", "iamuser-admin"), req(), N),
    ("StringNotEquals absent key", cond("StringNotEquals", "kms:EncryptionAlgorithm", "SYMMETRIC_DEFAULT"), req(), A),
    ("StringNotEquals equal value", cond("StringNotEquals", "kms:EncryptionAlgorithm", "SYMMETRIC_DEFAULT"),
     req(keys={"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}), N),
    ("StringNotEquals list (NOR), one of them", cond("StringNotEquals", "k:x", ["a", "b"]), req(keys={"k:x": "b"}), N),
    ("StringNotEquals list (NOR), neither", cond("StringNotEquals", "k:x", ["a", "b"]), req(keys={"k:x": "c"}), A),
    ("StringEqualsIgnoreCase", cond("StringEqualsIgnoreCase", "k:x", "EXAMPLEAPP"), req(keys={"k:x": "ExampleApp"}), A),
    ("StringNotEqualsIgnoreCase", cond("StringNotEqualsIgnoreCase", "k:x", "EXAMPLEAPP"),
     req(keys={"k:x": "exampleapp"}), N),
    ("StringLike pattern", cond("StringLike", "kms:RequestAlias", "alias/*test*"),
     req(keys={"kms:RequestAlias": "alias/my-test-key"}), A),
    ("StringLike is case-sensitive", cond("StringLike", "kms:RequestAlias", "alias/*test*"),
     req(keys={"kms:RequestAlias": "alias/my-TEST-key"}), N),
    ("StringNotLike", cond("StringNotLike", "kms:SigningAlgorithm", "RSASSA_PSS*"),
     req(keys={"kms:SigningAlgorithm": "ECDSA_SHA_256"}), A),
    ("StringEquals takes * literally", cond("StringEquals", "k:x", "a*"), req(keys={"k:x": "abc"}), N),
    ("StringEquals * literal matches *", cond("StringEquals", "k:x", "a*"), req(keys={"k:x": "a*"}), A),
    ("${*} is a literal * in StringLike", cond("StringLike", "k:x", "a${*}"), req(keys={"k:x": "ab"}), N),
    ("${*} matches a literal *", cond("StringLike", "k:x", "a${*}"), req(keys={"k:x": "a*"}), A),
    ("StringLike with empty string value", cond("StringLike", "s3:prefix", ["", "home/"]), req(keys={"s3:prefix": ""}), A),
    ("kms:RequestAlias", cond("StringEquals", "kms:RequestAlias", "alias/finance-key"),
     req(keys={"kms:RequestAlias": "alias/finance-key"}), A),
    ("key name case-insensitive", cond("IpAddress", "AWS:SOURCEIP", "203.0.113.0/24"),
     req(keys={"aws:SourceIp": "203.0.113.9"}), A),
    # Numeric (kms:ValidTo example; s3:max-keys example)
    ("NumericLessThanEquals at the limit", cond("NumericLessThanEquals", "kms:ValidTo", "1546257599.0"),
     req(keys={"kms:ValidTo": 1546257599}), A),
    ("NumericLessThanEquals above", cond("NumericLessThanEquals", "kms:ValidTo", "1546257599.0"),
     req(keys={"kms:ValidTo": 1546257600}), N),
    ("NumericEquals text vs number", cond("NumericEquals", "s3:max-keys", "10"), req(keys={"s3:max-keys": "10.0"}), A),
    ("NumericEquals JSON number", cond("NumericEquals", "s3:max-keys", 10), req(keys={"s3:max-keys": 10}), A),
    ("NumericNotEquals absent", cond("NumericNotEquals", "s3:max-keys", 10), req(), A),
    ("NumericGreaterThan non-number", cond("NumericGreaterThan", "s3:max-keys", 1), req(keys={"s3:max-keys": "x"}), N),
    ("NumericLessThan", cond("NumericLessThan", "s3:max-keys", 10.5), req(keys={"s3:max-keys": 10}), A),
    ("NumericGreaterThanEquals", cond("NumericGreaterThanEquals", "s3:max-keys", 11), req(keys={"s3:max-keys": 10}), N),
    # Date (aws:TokenIssueTime example; W3C formats and epoch)
    ("DateGreaterThan ISO", cond("DateGreaterThan", T, "2020-01-01T00:00:01Z"),
     req(keys={T: "2024-05-01T12:00:00Z"}), A),
    ("DateGreaterThan earlier", cond("DateGreaterThan", T, "2020-01-01T00:00:01Z"),
     req(keys={T: "2019-12-31T23:59:59Z"}), N),
    ("DateLessThan epoch policy, ISO request", cond("DateLessThan", T, "1577836800"),
     req(keys={T: "2019-12-31T23:59:59Z"}), A),
    ("DateEquals day vs epoch request", cond("DateEquals", "aws:EpochTime", "2020-01-01"),
     req(keys={"aws:EpochTime": 1577836800}), A),
    ("DateEquals with a zone offset", cond("DateEquals", T, "2020-01-01T01:00:00+01:00"),
     req(keys={T: "2020-01-01T00:00:00Z"}), A),
    ("DateLessThanEquals epoch", cond("DateLessThanEquals", "aws:EpochTime", 1577836800),
     req(keys={"aws:EpochTime": 1577836801}), N),
    ("DateNotEquals absent", cond("DateNotEquals", T, "2020-01-01"), req(), A),
    ("DateGreaterThanEquals fraction", cond("DateGreaterThanEquals", T, "2020-01-01T00:00:00.5Z"),
     req(keys={T: "2020-01-01T00:00:01Z"}), A),
    # Bool (aws:SecureTransport example, a Deny)
    ("Bool false denies plain HTTP", ident(allow(), deny(**when("Bool", "aws:SecureTransport", "false"))),
     req(keys={"aws:SecureTransport": False}), D),
    ("Bool false spares TLS", ident(allow(), deny(**when("Bool", "aws:SecureTransport", "false"))),
     req(keys={"aws:SecureTransport": True}), A),
    ("Bool JSON true", cond("Bool", "kms:MultiRegion", True), req(keys={"kms:MultiRegion": True}), A),
    ("Bool absent", cond("Bool", "kms:MultiRegion", True), req(), N),
    ("BoolIfExists absent", cond("BoolIfExists", "aws:MultiFactorAuthPresent", "false"), req(), A),
    # Binary
    ("BinaryEquals", cond("BinaryEquals", "k:bin", "QmluYXJ5VmFsdWVJbkJhc2U2NA=="),
     req(keys={"k:bin": "QmluYXJ5VmFsdWVJbkJhc2U2NA=="}), A),
    ("BinaryEquals other bytes", cond("BinaryEquals", "k:bin", "QmluYXJ5VmFsdWVJbkJhc2U2NA=="),
     req(keys={"k:bin": "AAAA"}), N),
    # IP addresses (aws:SourceIp examples, IPv4 and IPv6)
    ("IpAddress in range", cond("IpAddress", SRC_IP, "203.0.113.0/24"), req(keys={SRC_IP: "203.0.113.7"}), A),
    ("IpAddress out of range", cond("IpAddress", SRC_IP, "203.0.113.0/24"), req(keys={SRC_IP: "198.51.100.1"}), N),
    ("IpAddress IPv6", cond("IpAddress", SRC_IP, ["203.0.113.0/24", "2001:DB8:1234:5678::/64"]),
     req(keys={SRC_IP: "2001:db8:1234:5678::1"}), A),
    ("IpAddress without prefix is /32", cond("IpAddress", SRC_IP, "203.0.113.7"), req(keys={SRC_IP: "203.0.113.8"}), N),
    ("IPv4 request, IPv6 range", cond("IpAddress", SRC_IP, "::/0"), req(keys={SRC_IP: "203.0.113.7"}), N),
    ("NotIpAddress absent (VPC endpoint)", cond("NotIpAddress", SRC_IP, "203.0.113.0/24"), req(), A),
    ("NotIpAddress in range", cond("NotIpAddress", SRC_IP, "203.0.113.0/24"), req(keys={SRC_IP: "203.0.113.1"}), N),
    ("IpAddress on a non-address", cond("IpAddress", SRC_IP, "0.0.0.0/0"), req(keys={SRC_IP: "example.com"}), N),
    # ARN operators (IAM guide: ArnLike vs StringLike)
    ("ArnLike part by part", cond("ArnLike", "aws:SourceArn", "arn:aws:someservice:*:111122223333:finance/*"),
     req(keys={"aws:SourceArn": "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/doc.txt"}), N),
    ("StringLike across colons", cond("StringLike", "aws:SourceArn", "arn:aws:someservice:*:111122223333:finance/*"),
     req(keys={"aws:SourceArn": "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/doc.txt"}), A),
    ("ArnEquals with wildcards", cond("ArnEquals", "aws:SourceArn", "arn:aws:sns:*:123456789012:TOPIC-*"),
     req(keys={"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:TOPIC-1"}), A),
    ("ArnNotLike absent", cond("ArnNotLike", "aws:SourceArn", "arn:aws:sns:*:*:*"), req(), A),
    ("ArnNotEquals Deny: everyone but alice",
     cond("ArnNotEquals", "aws:PrincipalArn", f"arn:aws:iam::{ACCT}:user/alice", effect="Deny"), req(BOB), D),
    ("ArnNotEquals Deny spares alice (aws:PrincipalArn derived)",
     cond("ArnNotEquals", "aws:PrincipalArn", f"arn:aws:iam::{ACCT}:user/alice", effect="Deny"), req(ALICE), N),
    # Null (kms:EncryptionContextKeys and aws:TokenIssueTime examples)
    ("Null false with a context", cond("Null", "kms:EncryptionContextKeys", False),
     req(keys={"kms:EncryptionContextKeys": ("AppName",)}), A),
    ("Null false with an empty context", cond("Null", "kms:EncryptionContextKeys", False),
     req(keys={"kms:EncryptionContextKeys": ()}), N),
    ("Null false without context", cond("Null", "kms:EncryptionContextKeys", "false"), req(), N),
    ("Null true, long-term credentials", cond("Null", "aws:TokenIssueTime", "true"), req(), A),
    ("Null true, temporary credentials", cond("Null", "aws:TokenIssueTime", "true"),
     req(keys={"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}), N),
    # ...IfExists (IAM guide, ec2:InstanceType example and the Deny warning)
    ("StringLikeIfExists absent", cond("StringLikeIfExists", "ec2:InstanceType", ["t1.*", "t2.*", "m3.*"]), req(), A),
    ("StringLikeIfExists present", cond("StringLikeIfExists", "ec2:InstanceType", ["t1.*", "t2.*", "m3.*"]),
     req(keys={"ec2:InstanceType": "c5.large"}), N),
    ("StringNotEqualsIfExists Deny still denies when absent",
     ident(allow(), deny(**when("StringNotEqualsIfExists", "aws:ResourceTag/team", "blue"))), req(), D),
    ("NumericLessThanIfExists present", cond("NumericLessThanIfExists", "s3:max-keys", 5), req(keys={"s3:max-keys": 9}), N),
    # ForAllValues / ForAnyValue (IAM guide, DynamoDB examples; KMS aliases and grants)
    ("ForAllValues: all listed", cond("ForAllValues:StringLike", ATTRS, ["PostDateTime", "Message", "Tags"]),
     req(keys={ATTRS: ("PostDateTime", "Message")}), A),
    ("ForAllValues: one unlisted", cond("ForAllValues:StringLike", ATTRS, ["PostDateTime", "Message", "Tags"]),
     req(keys={ATTRS: ("PostDateTime", "UserName")}), N),
    ("ForAllValues: absent key holds", cond("ForAllValues:StringLike", ATTRS, ["PostDateTime"]), req(), A),
    ("ForAllValues: empty set holds", cond("ForAllValues:StringLike", ATTRS, ["PostDateTime"]), req(keys={ATTRS: ()}), A),
    ("ForAnyValue Deny: one forbidden attribute",
     ident(allow(), deny(**when("ForAnyValue:StringLike", ATTRS, ["ID", "PostDateTime"]))),
     req(keys={ATTRS: ("UserName", "Message", "PostDateTime")}), D),
    ("ForAnyValue Deny: none forbidden",
     ident(allow(), deny(**when("ForAnyValue:StringLike", ATTRS, ["ID", "PostDateTime"]))),
     req(keys={ATTRS: ("UserName",)}), A),
    ("ForAnyValue: absent key fails", cond("ForAnyValue:StringEquals", "kms:EncryptionContextKeys", "AppName"), req(), N),
    ("ForAnyValue: a single-valued key", cond("ForAnyValue:StringEquals", "kms:EncryptionContextKeys", "AppName"),
     req(keys={"kms:EncryptionContextKeys": "AppName"}), A),
    ("ForAnyValue:...IfExists absent", cond("ForAnyValue:StringEqualsIfExists", "k:set", "a"), req(), A),
    ("ForAnyValue:StringNotEquals", cond("ForAnyValue:StringNotEquals", "k:set", ["a"]), req(keys={"k:set": ("a", "b")}), A),
    ("ForAllValues:StringNotEquals", cond("ForAllValues:StringNotEquals", "k:set", ["a"]), req(keys={"k:set": ("a", "b")}), N),
    ("grant operations within the list", cond("ForAllValues:StringEquals", "kms:GrantOperations", ["Encrypt", "ReEncryptTo"]),
     req(action="kms:CreateGrant", keys={"kms:GrantOperations": ("Encrypt",)}), A),
    ("grant operations beyond the list", cond("ForAllValues:StringEquals", "kms:GrantOperations", ["Encrypt", "ReEncryptTo"]),
     req(action="kms:CreateGrant", keys={"kms:GrantOperations": ("Encrypt", "Decrypt")}), N),
    # several keys (AND) and several operators (AND)
    ("two operators, both hold", ident(allow(Condition={"StringEquals": {"k:a": "1"}, "IpAddress": {SRC_IP: "10.0.0.0/8"}})),
     req(keys={"k:a": "1", SRC_IP: "10.1.2.3"}), A),
    ("two operators, one fails", ident(allow(Condition={"StringEquals": {"k:a": "1"}, "IpAddress": {SRC_IP: "10.0.0.0/8"}})),
     req(keys={"k:a": "1", SRC_IP: "11.1.2.3"}), N),
    # policy variables in conditions
    ("${aws:PrincipalTag/x}", cond("StringEquals", "aws:ResourceTag/team", "${aws:PrincipalTag/team}"),
     req(keys={"aws:ResourceTag/team": "blue", "aws:PrincipalTag/team": "blue"}), A),
    ("${aws:PrincipalTag/x} differs", cond("StringEquals", "aws:ResourceTag/team", "${aws:PrincipalTag/team}"),
     req(keys={"aws:ResourceTag/team": "blue", "aws:PrincipalTag/team": "red"}), N),
    ("${aws:PrincipalAccount} is derived", cond("StringEquals", "kms:CallerAccount", "${aws:PrincipalAccount}"),
     req(keys={"kms:CallerAccount": ACCT}), A),
    ("variable with a default", cond("StringEquals", "k:who", "${aws:userid, 'anonymous'}"),
     req(keys={"k:who": "anonymous"}), A),
    ("unresolved variable voids a Deny statement",
     ident(allow(), deny(**when("StringNotEquals", "k:who", "${aws:PrincipalTag/none}"))), req(keys={"k:who": "x"}), A),
    ("${$} is a dollar", cond("StringEquals", "k:x", "${$}{a}"), req(keys={"k:x": "${a}"}), A),
    ("${?} is a literal ?", cond("StringLike", "k:x", "a${?}"), req(keys={"k:x": "ab"}), N),
]


@pytest.mark.parametrize(("policy", "request_", "expected"), [c[1:] for c in IDENTITY_CASES],
                         ids=[c[0] for c in IDENTITY_CASES])
def test_identity_policy(policy: str, request_: RequestContext, expected: Match) -> None:
    parsed = parse_policy(policy)
    validate_identity_policy(parsed)
    assert evaluate_identity_policies([parsed], request_) is expected


def test_there_are_enough_documented_cases() -> None:
    assert len(KEY_POLICY_CASES) + len(IDENTITY_CASES) >= 80


def test_identity_policies_combine() -> None:
    allow_all = parse_policy(on("kms:*"))
    deny_decrypt = parse_policy(ident(deny(None, "kms:Decrypt")))
    assert evaluate_identity_policies([], req()) is Match.NONE
    assert evaluate_identity_policies([allow_all], req()) is Match.ALLOW_PRINCIPAL
    assert evaluate_identity_policies([allow_all, deny_decrypt], req()) is Match.DENY
    assert evaluate_identity_policies([deny_decrypt, allow_all], req(action="kms:Encrypt")) is Match.ALLOW_PRINCIPAL


def test_a_principal_in_an_identity_policy_never_widens_it() -> None:
    stray = parse_policy(doc(allow({"AWS": BOB})))
    assert evaluate_identity_policies([stray], req(ALICE)) is Match.NONE


# -- decide: the KMS decision ---------------------------------------------------------
IAM_ALLOW = parse_policy(on("kms:*"))
IAM_DENY = parse_policy(ident(deny(None, "kms:*")))
P = parse_policy


@pytest.mark.parametrize(
    ("request_", "key_policy", "identity", "grant", "allowed", "reason"),
    [
        pytest.param(req(), P(DEFAULT), [IAM_ALLOW], False, True, "allowed by the key policy and by an identity-based policy",
                     id="default policy delegates to IAM"),
        pytest.param(req(), P(DEFAULT), [], False, False, "because no identity-based policy allows the kms:Decrypt action",
                     id="default policy, no IAM policy"),
        pytest.param(req(ROOT), P(DEFAULT), [], False, True, "allowed by the key policy", id="account root"),
        pytest.param(req(ROOT), P(USERS_ONLY), [], False, False,
                     "because no resource-based policy allows the kms:Decrypt action", id="root needs the key policy"),
        pytest.param(req(EXAMPLE_USER), P(USERS_ONLY), [], False, True, "allowed by the key policy",
                     id="key policy names the user"),
        pytest.param(req(ALICE), P(USERS_ONLY), [IAM_ALLOW], False, False,
                     "because no resource-based policy allows the kms:Decrypt action", id="IAM alone is not enough"),
        pytest.param(req(ALICE), P(USERS_ONLY), [], True, True, "allowed by a grant", id="a grant suffices"),
        pytest.param(req(ALICE), P(doc(allow("*"), deny({"AWS": ALICE}))), [IAM_ALLOW], True, False,
                     "with an explicit deny in a resource-based policy", id="key policy deny beats a grant"),
        pytest.param(req(EXAMPLE_USER), P(USERS_ONLY), [IAM_DENY], True, False,
                     "with an explicit deny in an identity-based policy", id="IAM deny beats key policy and grant"),
        pytest.param(req(action="kms:CreateKey", resource="*"), None, [IAM_ALLOW], False, True,
                     "allowed by an identity-based policy", id="CreateKey with IAM"),
        pytest.param(req(action="kms:CreateKey", resource="*"), None, [], False, False,
                     "because no identity-based policy allows the kms:CreateKey action", id="CreateKey without IAM"),
        pytest.param(req(ROOT, "kms:CreateKey", "*"), None, [], False, True, "allowed as the account root user",
                     id="CreateKey by the root"),
        pytest.param(req(action="kms:ListAliases", resource="*"), None, [IAM_DENY], False, False,
                     "with an explicit deny in an identity-based policy", id="ListAliases denied"),
        # cross-account: "Neither the key policy nor the IAM policy alone is sufficient"
        pytest.param(req(OTHER_USER), P(EXTERNAL_USERS), [], False, False,
                     "because no identity-based policy allows the kms:Decrypt action", id="external user without IAM"),
        pytest.param(req(OTHER_USER), P(EXTERNAL_USERS), [IAM_ALLOW], False, True,
                     "allowed by the key policy and by an identity-based policy", id="external user with IAM"),
        pytest.param(req(OTHER_CAROL), P(EXTERNAL_USERS), [IAM_ALLOW], False, False,
                     "because no resource-based policy allows the kms:Decrypt action", id="external user not named"),
        pytest.param(req(OTHER_USER), P(EXTERNAL_ACCOUNT), [IAM_ALLOW], False, True,
                     "allowed by the key policy and by an identity-based policy", id="external account delegates"),
        pytest.param(req(OTHER_USER), P(EXTERNAL_ACCOUNT), [], False, False,
                     "because no identity-based policy allows the kms:Decrypt action", id="external account, no IAM"),
        pytest.param(req(OTHER_ROOT), P(EXTERNAL_ACCOUNT), [], False, True,
                     "allowed by the key policy and as the account root user", id="external root"),
        pytest.param(req(OTHER_USER), P(doc(allow("*"))), [], False, False,
                     "because no identity-based policy allows the kms:Decrypt action", id="* still needs their IAM"),
        pytest.param(req(ALICE), P(doc(allow("*"))), [], False, True, "allowed by the key policy", id="* in the account"),
        pytest.param(req(ALICE, resource="1234abcd"), P(doc(allow("*"))), [], False, False,
                     "because no identity-based policy allows the kms:Decrypt action", id="unknown key account"),
        pytest.param(req(OTHER_USER, resource=OTHER_KEY), P(doc(allow({"AWS": OTHER_USER}))), [], False, True,
                     "allowed by the key policy", id="their own key"),
    ],
)
def test_decide(
    request_: RequestContext, key_policy: Policy | None, identity: list[Policy], grant: bool, allowed: bool, reason: str
) -> None:
    assert decide(request_, key_policy, identity, grant_allows=grant) == Verdict(allowed, reason)


def test_access_denied_message_reads_as_aws_writes_it() -> None:
    request_ = req()
    verdict = decide(request_, parse_policy(USERS_ONLY), [])
    assert access_denied_message(request_, verdict) == (
        f"User: {ALICE} is not authorized to perform: kms:Decrypt on resource: {KEY} "
        "because no resource-based policy allows the kms:Decrypt action"
    )


def test_lockout_safety_check() -> None:
    assert lockout_safe(parse_policy(DEFAULT), req(action="kms:CreateKey"))
    assert lockout_safe(parse_policy(CONSOLE), req(ADMIN, "kms:CreateKey"))
    assert not lockout_safe(parse_policy(USERS_ONLY), req(EXAMPLE_USER, "kms:CreateKey"))
    assert not lockout_safe(parse_policy(doc(allow({"AWS": BOB}))), req(ALICE))


# -- parsing ---------------------------------------------------------------------------
def test_statement_may_be_an_object_and_version_optional() -> None:
    policy = parse_policy(json.dumps({"Statement": allow("*")}))
    assert len(policy.statements) == 1 and policy.version is None


def test_parse_is_cached() -> None:
    assert parse_policy(DEFAULT) is parse_policy(DEFAULT)


def test_principals_lists_every_aws_principal() -> None:
    assert parse_policy(CONSOLE).principals() == {
        ROOT, ADMIN, f"arn:aws:iam::{ACCT}:role/KMSAdminRole", EXAMPLE_USER, EXAMPLE_ROLE, OTHER_ROOT,
    }
    assert parse_policy(NOT_BOB).principals() == {OTHER_BOB, OTHER_ROOT}
    assert parse_policy(doc(allow("*"))).principals() == frozenset()


def test_uses_time() -> None:
    assert uses_time(parse_policy(cond("DateLessThan", "aws:CurrentTime", "2030-01-01T00:00:00Z")))
    assert uses_time(parse_policy(cond("NumericLessThan", "AWS:EpochTime", 1)))
    assert uses_time(parse_policy(cond("StringEquals", "k:x", "${aws:CurrentTime}")))
    assert not uses_time(parse_policy(CONSOLE))


def _statement(**fields: Any) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                                                              **fields}]})


MALFORMED = {
    "not JSON": "{not json",
    "not an object": "[]",
    "no Statement": '{"Version": "2012-10-17"}',
    "empty Statement": '{"Statement": []}',
    "Statement not an object": '{"Statement": ["x"]}',
    "unknown Version": '{"Version": "2020-01-01", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}',
    "unknown top-level element": '{"Foo": 1, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}',
    "duplicate element": '{"Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}',
    "lower-case effect": _statement(Effect="allow"),
    "no Effect": json.dumps({"Statement": {"Action": "*", "Resource": "*"}}),
    "unknown statement element": _statement(Effects="Allow"),
    "Action and NotAction": _statement(NotAction="kms:Decrypt"),
    "neither Action nor NotAction": json.dumps({"Statement": {"Effect": "Allow", "Resource": "*"}}),
    "Resource and NotResource": _statement(NotResource="*"),
    "Principal and NotPrincipal": _statement(Principal="*", NotPrincipal="*"),
    "non-string action": _statement(Action=5),
    "action in a list, not a string": _statement(Action=["kms:Decrypt", ["x"]]),
    "action without service": _statement(Action="Decrypt"),
    "empty action list": _statement(Action=[]),
    "non-string resource": _statement(Resource=True),
    "Principal as a bare ARN": _statement(Principal=ALICE),
    "unknown principal type": _statement(Principal={"Group": "x"}),
    "partial wildcard principal": _statement(Principal={"AWS": f"arn:aws:iam::{ACCT}:user/*"}),
    "unknown operator": _statement(Condition={"StringEqualz": {"k:x": "a"}}),
    "unknown set operator": _statement(Condition={"ForSomeValues:StringEquals": {"k:x": "a"}}),
    "NullIfExists": _statement(Condition={"NullIfExists": {"k:x": "true"}}),
    "IfExists alone": _statement(Condition={"IfExists": {"k:x": "true"}}),
    "operator not an object": _statement(Condition={"StringEquals": "x"}),
    "Condition not an object": _statement(Condition=["StringEquals"]),
    "condition value an object": _statement(Condition={"StringEquals": {"k:x": {"a": 1}}}),
    "empty condition values": _statement(Condition={"StringEquals": {"k:x": []}}),
    "numeric not a number": _statement(Condition={"NumericEquals": {"k:x": "ten"}}),
    "date not a date": _statement(Condition={"DateEquals": {"k:x": "yesterday"}}),
    "date out of range": _statement(Condition={"DateEquals": {"k:x": "2021-02-29"}}),
    "bad CIDR": _statement(Condition={"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}}),
    "bad base64": _statement(Condition={"BinaryEquals": {"k:x": "!!"}}),
    "Null not Boolean": _statement(Condition={"Null": {"k:x": "maybe"}}),
    "Bool not Boolean": _statement(Condition={"Bool": {"k:x": "yes"}}),
    "NaN": '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": '
           '{"NumericEquals": {"k:x": NaN}}}}',
    "Sid a number": _statement(Sid=1),
    "Id not a string": '{"Id": 1, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}',
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "too large": json.dumps({"Statement": allow("*"), "Id": "x" * 200_000}),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_documents_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_error_messages_quote_only_a_fragment() -> None:
    secretish = "StringEquals" + "A" * 5000
    with pytest.raises(PolicyError) as raised:
        parse_policy(_statement(Condition={secretish: {"k:x": "a"}}))
    assert len(str(raised.value)) < 120 and "AAAA" * 20 not in str(raised.value)


def test_validate_identity_policy() -> None:
    validate_identity_policy(parse_policy(on("kms:*")))
    for bad in (doc(allow("*")), ident({"Effect": "Allow", "Action": "kms:*"}), ident({**allow(), "Sid": "has space"})):
        with pytest.raises(PolicyError):
            validate_identity_policy(parse_policy(bad))


def test_validate_key_policy() -> None:
    for good in (DEFAULT, CONSOLE, NOT_BOB, doc({"Effect": "Allow", "Principal": "*", "Action": "kms:*"})):
        validate_key_policy(parse_policy(good))
    with pytest.raises(PolicyError):
        validate_key_policy(parse_policy(on("kms:*")))
    with pytest.raises(PolicyError, match="OverlyPermissiveCondition"):
        validate_key_policy(parse_policy(doc(allow("*", **when("ForAllValues:StringEquals", CTX + "Dept", "IT")))))


def test_a_hostile_pattern_matches_in_linear_time() -> None:
    """A pattern that makes a backtracking regex take exponential time (``.*a.*a...b``)."""
    policy = parse_policy(cond("StringLike", "k:x", "*a" * 40 + "b"))
    verdict = evaluate_identity_policies([policy], req(keys={"k:x": "a" * 8192}))
    assert verdict is Match.NONE  # returns at all: a regex would not within the test's lifetime


def test_parse_refuses_what_is_not_text() -> None:
    with pytest.raises(PolicyError):
        parse_policy({"Statement": []})  # type: ignore[arg-type]
