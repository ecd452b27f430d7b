"""Properties of keyhive.policy that hold for every policy and request.

Deny only narrows, Allow only widens, no statement means no access, an explicit Deny
beats grants, action names ignore case, and no input makes the parser fail with anything
but PolicyError.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keyhive.policy import (
    Match,
    Policy,
    PolicyError,
    RequestContext,
    decide,
    evaluate_identity_policies,
    evaluate_key_policy,
    parse_policy,
)

ACCOUNTS = ("111122223333", "444455556666")
KEYS = tuple(f"arn:aws:kms:us-west-2:{a}:key/{k}" for a in ACCOUNTS for k in ("k1", "k2"))
PRINCIPALS = tuple(
    arn
    for a in ACCOUNTS
    for arn in (
        f"arn:aws:iam::{a}:root",
        f"arn:aws:iam::{a}:user/alice",
        f"arn:aws:iam::{a}:user/bob",
        f"arn:aws:sts::{a}:assumed-role/App/s1",
    )
)
ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:DescribeKey", "kms:PutKeyPolicy", "kms:CreateGrant")
# Repeated entries are drawn more often, so that many generated statements apply.
ACTION_PATTERNS = (*ACTIONS, "kms:*", "kms:*", "*", "*", "kms:Describe*", "kms:?ncrypt", "kms:*Key*", "s3:*")
RESOURCE_PATTERNS = ("*", "*", "*", *KEYS, "arn:aws:kms:*:111122223333:key/*", "arn:aws:kms:us-west-2:*:key/k?")
PRINCIPAL_VALUES = (
    "*",
    {"AWS": "*"},
    *({"AWS": f"arn:aws:iam::{a}:root"} for a in ACCOUNTS),
    *({"AWS": a} for a in ACCOUNTS),
    *({"AWS": p} for p in PRINCIPALS),
    {"AWS": [f"arn:aws:iam::{ACCOUNTS[0]}:role/App", f"arn:aws:iam::{ACCOUNTS[1]}:root"]},
    {"Service": "ec2.amazonaws.com"},
)
CONDITIONS: tuple[dict[str, dict[str, Any]], ...] = (
    {"StringEquals": {"kms:EncryptionContext:Stage": "prod"}},
    {"StringNotEquals": {"kms:EncryptionContext:Stage": ["prod", "test"]}},
    {"StringLikeIfExists": {"kms:ViaService": "ec2.*.amazonaws.com"}},
    {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Stage"}},
    {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Stage", "App"]}},
    {"Null": {"kms:EncryptionContextKeys": "false"}},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"NumericLessThan": {"kms:ValidTo": "100"}},
    {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
    {"StringEquals": {"kms:EncryptionContext:user": "${aws:username}"}},
    {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}},
)
CONTEXT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "kms:EncryptionContext:Stage": st.sampled_from(["prod", "test", "dev"]),
    "kms:EncryptionContext:user": st.sampled_from(["alice", "bob"]),
    "kms:EncryptionContextKeys": st.lists(st.sampled_from(["Stage", "App", "user"]), max_size=3).map(tuple),
    "kms:ViaService": st.sampled_from(["ec2.us-west-2.amazonaws.com", "rds.us-west-2.amazonaws.com"]),
    "aws:SecureTransport": st.booleans(),
    "aws:SourceIp": st.sampled_from(["10.1.2.3", "192.0.2.1", "2001:db8::1"]),
    "kms:ValidTo": st.integers(0, 200),
    "aws:CurrentTime": st.sampled_from(["2024-01-01T00:00:00Z", "2031-01-01T00:00:00Z"]),
}


@st.composite
def requests(draw: st.DrawFn, action: st.SearchStrategy[str] = st.sampled_from(ACTIONS)) -> RequestContext:
    principal = draw(st.sampled_from(PRINCIPALS))
    names = draw(st.lists(st.sampled_from(sorted(CONTEXT_VALUES)), unique=True))
    keys = {name: draw(CONTEXT_VALUES[name]) for name in names}
    return RequestContext(principal, principal.split(":")[4], draw(action), draw(st.sampled_from(KEYS)), keys)


@st.composite
def statements(draw: st.DrawFn, effect: str | None = None, principal: bool = True) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect or draw(st.sampled_from(["Allow", "Deny"]))}
    if principal:
        statement["NotPrincipal" if draw(st.integers(0, 5)) == 0 else "Principal"] = draw(
            st.sampled_from(PRINCIPAL_VALUES)
        )
    statement["NotAction" if draw(st.integers(0, 5)) == 0 else "Action"] = draw(
        st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3)
    )
    statement["NotResource" if draw(st.integers(0, 7)) == 0 else "Resource"] = draw(st.sampled_from(RESOURCE_PATTERNS))
    if draw(st.integers(0, 2)) == 0:  # most statements are unconditional, so that many apply
        conditions = draw(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=2))
        statement["Condition"] = {op: body for c in conditions for op, body in c.items()}
    return statement


def policy(statement_list: list[dict[str, Any]]) -> Policy:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": statement_list}))


key_statements = st.lists(statements(), min_size=1, max_size=4)
identity_statements = st.lists(statements(principal=False), min_size=1, max_size=3)
RANK = {Match.NONE: 0, Match.ALLOW_ACCOUNT: 1, Match.ALLOW_PRINCIPAL: 2}
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(key_statements, identity_statements, statements(effect="Deny"), st.booleans(), st.booleans(), requests())
def test_a_deny_never_allows_more(
    key: list[dict[str, Any]],
    identity: list[dict[str, Any]],
    extra: dict[str, Any],
    to_key_policy: bool,
    grant: bool,
    request: RequestContext,
) -> None:
    before = decide(request, policy(key), [policy(identity)], grant_allows=grant)
    if not to_key_policy:
        extra = {k: v for k, v in extra.items() if k not in ("Principal", "NotPrincipal")}
    after_key, after_identity = (key + [extra], identity) if to_key_policy else (key, identity + [extra])
    after = decide(request, policy(after_key), [policy(after_identity)], grant_allows=grant)
    assert before.allowed or not after.allowed
    assert evaluate_key_policy(policy(key + [extra]), request) in (evaluate_key_policy(policy(key), request), Match.DENY)


@FAST
@given(key_statements, identity_statements, statements(effect="Allow"), st.booleans(), st.booleans(), requests())
def test_an_allow_only_widens(
    key: list[dict[str, Any]],
    identity: list[dict[str, Any]],
    extra: dict[str, Any],
    to_key_policy: bool,
    grant: bool,
    request: RequestContext,
) -> None:
    before = decide(request, policy(key), [policy(identity)], grant_allows=grant)
    if not to_key_policy:
        extra = {k: v for k, v in extra.items() if k not in ("Principal", "NotPrincipal")}
    after_key, after_identity = (key + [extra], identity) if to_key_policy else (key, identity + [extra])
    after = decide(request, policy(after_key), [policy(after_identity)], grant_allows=grant)
    assert after.allowed or not before.allowed
    old, new = evaluate_key_policy(policy(key), request), evaluate_key_policy(policy(key + [extra]), request)
    if old is Match.DENY:
        assert new is Match.DENY
    else:
        assert new is not Match.DENY and RANK[new] >= RANK[old]


@FAST
@given(requests())
def test_no_statements_allow_nothing(request: RequestContext) -> None:
    empty = Policy(statements=())
    assert evaluate_key_policy(empty, request) is Match.NONE
    assert evaluate_identity_policies([empty], request) is Match.NONE
    assert not decide(request, empty, [empty]).allowed
    assert not decide(request, empty, []).allowed


@FAST
@given(key_statements, identity_statements, st.booleans(), requests())
def test_an_explicit_deny_beats_grants(
    key: list[dict[str, Any]], identity: list[dict[str, Any]], grant: bool, request: RequestContext
) -> None:
    deny_all = {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}
    assert not decide(request, policy(key + [deny_all]), [policy(identity)], grant_allows=grant).allowed
    deny_all.pop("Principal")
    assert not decide(request, policy(key), [policy(identity + [deny_all])], grant_allows=grant).allowed
    key_match = evaluate_key_policy(policy(key), request)
    identity_match = evaluate_identity_policies([policy(identity)], request)
    if Match.DENY in (key_match, identity_match):
        assert not decide(request, policy(key), [policy(identity)], grant_allows=True).allowed


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, flips + [False] * len(text), strict=False))


@FAST
@given(key_statements, requests(), st.lists(st.booleans(), max_size=40), st.lists(st.booleans(), max_size=40))
def test_action_matching_ignores_case(
    key: list[dict[str, Any]], request: RequestContext, request_flips: list[bool], policy_flips: list[bool]
) -> None:
    recased_request = RequestContext(
        request.principal_arn,
        request.principal_account,
        _recase(request.action, request_flips),
        request.resource,
        request.keys,
    )
    recased_key = [
        {k: ([_recase(a, policy_flips) for a in v] if k in ("Action", "NotAction") else v) for k, v in s.items()}
        for s in key
    ]
    expected = evaluate_key_policy(policy(key), request)
    assert evaluate_key_policy(policy(recased_key), recased_request) is expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["*", "Allow", "kms:*"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["Version", "Statement", "Effect", "Action", "Resource", "Principal", "Condition",
                         "StringEquals", "AWS", "Null", "k:x"]) | st.text(max_size=5),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), json_values.map(json.dumps)))
def test_the_parser_fails_only_with_policy_error(text: str) -> None:
    try:
        parsed = parse_policy(text)
    except PolicyError:
        return
    assert isinstance(parsed, Policy) and parsed.statements


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=8))
def test_string_like_agrees_with_a_reference_matcher(pattern: str, value: str) -> None:
    reference = re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else c for c in pattern), value, re.DOTALL)
    statement = {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringLike": {"k:x": pattern}}}
    request = RequestContext("arn:aws:iam::111122223333:user/a", "111122223333", "kms:Decrypt", KEYS[0], {"k:x": value})
    expected = Match.ALLOW_PRINCIPAL if reference else Match.NONE
    assert evaluate_identity_policies([policy([statement])], request) is expected
