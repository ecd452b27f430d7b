"""Deciding a request: key policy, identity policies, grants.

Sources: IAM User Guide, "Policy evaluation logic" (an explicit Deny in any policy wins;
otherwise something must Allow; cross-account access needs both the resource-based policy
and the caller's identity-based policies), "Principal" and "NotPrincipal"; AWS KMS
Developer Guide, "Default key policy" (the account principal ``arn:aws:iam::ACCT:root``
in a key policy "allows the account to use IAM policies to delegate the permissions"),
"Allowing users in other accounts to use a KMS key" ("You must also add IAM policies in
the external account ... even when users and roles are specified in the key policy"),
"Creating a key policy" (Resource ``*`` in a key policy means this key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from functools import lru_cache
from types import MappingProxyType

from keyhive.policy._conditions import Unresolved, condition_holds
from keyhive.policy._document import Effect, Policy, Principals, Statement
from keyhive.policy._template import (
    Rendered,
    Template,
    Var,
    arn_like,
    like,
    parse_template,
    render,
    static,
)

ContextValue = str | bool | int | float | tuple[str, ...]
TIME_KEYS = frozenset({"aws:currenttime", "aws:epochtime"})

_ROOT = re.compile(r"arn:[^:]+:iam::(\d{12}):root")
_ACCOUNT = re.compile(r"\d{12}")
_SESSION = re.compile(r"arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/[^/]+")
_USER = re.compile(r"arn:[^:]+:iam::\d{12}:user/(?:.*/)?([^/]+)")
_KEY_ACCOUNT = re.compile(r"arn:[^:]+:kms:[^:]*:(\d{12}):.+")


@dataclass(frozen=True)
class RequestContext:
    """Who asks to do what to which resource, and the condition keys of the request.

    ``keys`` uses AWS's spelling of condition keys (matched case-insensitively); multi-valued
    keys are tuples.  ``aws:PrincipalArn``, ``aws:PrincipalAccount`` and ``aws:username``
    (IAM users) are derived from the principal when absent from ``keys``.
    """

    principal_arn: str
    principal_account: str
    action: str
    resource: str
    keys: Mapping[str, ContextValue] = field(default_factory=lambda: MappingProxyType({}))


class Match(Enum):
    NONE = "none"
    DENY = "deny"
    ALLOW_PRINCIPAL = "allow-principal"  # the caller itself is allowed
    ALLOW_ACCOUNT = "allow-account"  # only the caller's account: its IAM policies decide


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


class _Level(IntEnum):
    """How a Principal element names the caller."""

    NONE = 0
    ACCOUNT = 1  # the caller's account (the caller is not its root)
    PRINCIPAL = 2  # the caller: "*", its ARN, its role, or its account when it is the root


@dataclass(frozen=True)
class _Caller:
    request: RequestContext
    action: str  # lower case: actions match case-insensitively
    context: Mapping[str, object]  # lower-case condition keys, with derived keys
    identities: frozenset[str]  # ARNs that name the caller: its own, its role's
    is_root: bool


def _caller(request: RequestContext) -> _Caller:
    arn, account = request.principal_arn, request.principal_account
    identities = {arn}
    derived: dict[str, object] = {"aws:principalaccount": account, "aws:principalarn": arn}
    session = _SESSION.fullmatch(arn)
    if session is not None:
        partition, session_account, role = session.groups()
        derived["aws:principalarn"] = f"arn:{partition}:iam::{session_account}:role/{role}"
    user = _USER.fullmatch(arn)
    if user is not None:
        derived["aws:username"] = user.group(1)
    context = {**derived, **{k.lower(): v for k, v in request.keys.items()}}
    principal_arn = context.get("aws:principalarn")
    if isinstance(principal_arn, str):
        identities.add(principal_arn)
    identities.add(str(derived["aws:principalarn"]))
    root = _ROOT.fullmatch(arn)
    return _Caller(
        request=request,
        action=request.action.lower(),
        context=MappingProxyType(context),
        identities=frozenset(identities),
        is_root=root is not None and root.group(1) == account,
    )


def _names(principals: Principals, caller: _Caller) -> _Level:
    if principals.everyone:
        return _Level.PRINCIPAL
    level = _Level.NONE
    for name in principals.aws:
        root = _ROOT.fullmatch(name)
        account = root.group(1) if root else name if _ACCOUNT.fullmatch(name) else None
        if account is not None and account == caller.request.principal_account:
            level = max(level, _Level.PRINCIPAL if caller.is_root else _Level.ACCOUNT)
        elif name in caller.identities:
            return _Level.PRINCIPAL
    return level


def _principal_level(statement: Statement, caller: _Caller) -> _Level:
    """How the statement's Principal/NotPrincipal covers the caller (NONE: not at all).

    NotPrincipal exempts only the principals it names exactly (an account exempts only
    its root), as the IAM guide's NotPrincipal examples list user and account together.
    """
    assert statement.principal is not None
    level = _names(statement.principal, caller)
    if statement.not_principal:
        return _Level.NONE if level is _Level.PRINCIPAL else _Level.PRINCIPAL
    return level


def _applies(statement: Statement, caller: _Caller) -> bool:
    """Whether Action, Resource and Condition of ``statement`` all match the request."""
    if statement.resources is None:
        return False
    if any(_scalar(caller.context.get(name)) is None for name in statement.variables):
        return False  # "If AWS cannot resolve a variable ... the entire statement [is] invalid"
    action_hit = any(_action_matches(a, caller.action) for a in statement.actions)
    if action_hit == statement.not_action:
        return False
    resource = caller.request.resource
    resource_hit = False
    for pattern in statement.resources:
        rendered = render(pattern, caller.context)
        if rendered is not None and arn_like(rendered, resource):
            resource_hit = True
            break
    if resource_hit == statement.not_resource:
        return False
    try:
        return all(condition_holds(c, caller.context) for c in statement.conditions)
    except Unresolved:
        return False


def _scalar(value: object) -> object:
    return value if isinstance(value, str | bool | int | float) else None


def _action_matches(pattern: str, action: str) -> bool:
    return like(_action_pattern(pattern), action)


@lru_cache(maxsize=4096)
def _action_pattern(pattern: str) -> Rendered:
    return static(parse_template(pattern.lower(), variables=False))


def _key_policy_match(policy: Policy, caller: _Caller) -> Match:
    best = Match.NONE
    for statement in policy.statements:
        if statement.principal is None:
            continue  # a key policy statement applies only to the principals it names
        level = _principal_level(statement, caller)
        if level is _Level.NONE or not _applies(statement, caller):
            continue
        if statement.effect is Effect.DENY:
            return Match.DENY
        if level is _Level.PRINCIPAL:
            best = Match.ALLOW_PRINCIPAL
        elif best is Match.NONE:
            best = Match.ALLOW_ACCOUNT
    return best


def _identity_match(policies: Iterable[Policy], caller: _Caller) -> Match:
    allowed = False
    for policy in policies:
        for statement in policy.statements:
            # Identity policies have no Principal; one that slipped through applies only to
            # whom it names, never more widely.
            if statement.principal is not None and _principal_level(statement, caller) is _Level.NONE:
                continue
            if not _applies(statement, caller):
                continue
            if statement.effect is Effect.DENY:
                return Match.DENY
            allowed = True
    return Match.ALLOW_PRINCIPAL if allowed else Match.NONE


def evaluate_key_policy(policy: Policy, request: RequestContext) -> Match:
    """Match a request against a key (resource-based) policy: DENY beats ALLOW_PRINCIPAL beats ALLOW_ACCOUNT."""
    return _key_policy_match(policy, _caller(request))


def evaluate_identity_policies(policies: Sequence[Policy], request: RequestContext) -> Match:
    """Match a request against the caller's identity-based policies: DENY, ALLOW_PRINCIPAL or NONE."""
    return _identity_match(policies, _caller(request))


def decide(
    request: RequestContext,
    key_policy: Policy | None,
    identity_policies: Sequence[Policy],
    *,
    grant_allows: bool = False,
) -> Verdict:
    """AWS KMS's decision for a request, with AWS's reason phrase.

    An explicit Deny in the key policy or an identity policy refuses, whatever grants say.
    Without a key (CreateKey, ListKeys ...) identity policies decide (the account root is
    allowed).  With a key: allowed if a grant allows; or the key policy allows the caller
    itself and the caller is in the key's account; or the key policy allows the caller or
    its account and the caller's identity policies allow too (or the caller is its
    account's root).  A key's account is read from ``request.resource``, the key ARN; when
    it cannot be read the request is treated as cross-account.
    """
    caller = _caller(request)
    key_match = _key_policy_match(key_policy, caller) if key_policy is not None else None
    if key_match is Match.DENY:
        return Verdict(False, "with an explicit deny in a resource-based policy")
    identity_match = _identity_match(identity_policies, caller)
    if identity_match is Match.DENY:
        return Verdict(False, "with an explicit deny in an identity-based policy")
    # The account root user needs no identity-based policy in its own account.
    identity_allows = identity_match is Match.ALLOW_PRINCIPAL or caller.is_root
    by_identity = (
        "by an identity-based policy" if identity_match is Match.ALLOW_PRINCIPAL else "as the account root user"
    )
    no_identity = f"because no identity-based policy allows the {request.action} action"
    if key_match is None:
        return Verdict(True, f"allowed {by_identity}") if identity_allows else Verdict(False, no_identity)
    if grant_allows:
        return Verdict(True, "allowed by a grant")
    key_account = _KEY_ACCOUNT.fullmatch(request.resource)
    same_account = key_account is not None and key_account.group(1) == request.principal_account
    if key_match is Match.ALLOW_PRINCIPAL and same_account:
        return Verdict(True, "allowed by the key policy")
    if key_match is Match.NONE:
        return Verdict(False, f"because no resource-based policy allows the {request.action} action")
    if identity_allows:
        return Verdict(True, f"allowed by the key policy and {by_identity}")
    return Verdict(False, no_identity)


def access_denied_message(request: RequestContext, verdict: Verdict) -> str:
    """The AccessDeniedException message AWS KMS gives for a refused request."""
    return (
        f"User: {request.principal_arn} is not authorized to perform: {request.action} "
        f"on resource: {request.resource} {verdict.reason}"
    )


def uses_time(policy: Policy) -> bool:
    """Whether any condition reads aws:CurrentTime or aws:EpochTime (a verdict then ages)."""
    for statement in policy.statements:
        templates: list[Template] = list(statement.resources or ())
        for condition in statement.conditions:
            if condition.key in TIME_KEYS:
                return True
            templates.extend(v for v in condition.values if isinstance(v, tuple))
        if any(isinstance(t, Var) and t.name in TIME_KEYS for template in templates for t in template):
            return True
    return False


def lockout_safe(policy: Policy, request: RequestContext) -> bool:
    """The lockout safety check: may the caller still call PutKeyPolicy under ``policy``?

    KMS guide (CreateKey, PutKeyPolicy): "The key policy must allow the calling principal
    to make a subsequent PutKeyPolicy request on the KMS key."  Allowing the caller's
    account (which delegates to its IAM policies) counts.
    """
    match = evaluate_key_policy(policy, replace(request, action="kms:PutKeyPolicy"))
    return match in (Match.ALLOW_PRINCIPAL, Match.ALLOW_ACCOUNT)
