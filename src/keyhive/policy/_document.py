"""Policy documents: the grammar, parsed once into frozen values.

Sources: IAM User Guide, "Grammar of the IAM JSON policy language" and the element pages
(Principal, NotPrincipal, Action/NotAction, Resource/NotResource, Condition); AWS KMS
Developer Guide, "Creating a key policy" (key policy elements and format).

``parse_policy`` checks what holds for every policy: JSON object, known elements each at
most once, Version ``2012-10-17`` or ``2008-10-17`` (policy variables only in the former),
at least one statement, Effect ``Allow`` or ``Deny``, exactly one of Action/NotAction, at
most one of Resource/NotResource and of Principal/NotPrincipal, known condition operators
with well-formed values.  What depends on where a policy is attached is checked by
``validate_identity_policy`` and ``validate_key_policy``.

A statement without Resource is accepted and never applies: "If the required Resource
element is missing from a key policy statement, the policy statement has no effect ...
CreateKey and PutKeyPolicy APIs succeed" (KMS guide, "Creating a key policy").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import cached_property, lru_cache

from keyhive.policy._conditions import Condition, Qualifier, parse_conditions
from keyhive.policy._errors import PolicyError, fragment
from keyhive.policy._template import Template, parse_template, variables_of

VERSIONS = ("2012-10-17", "2008-10-17")
_VARIABLES_VERSION = "2012-10-17"  # "Variables were introduced in version 2012-10-17"
# Far above AWS's largest policy (a key policy: 32,768 bytes), so that parsing stays
# bounded even if a caller forgets its own size check.
MAX_POLICY_CHARS = 131_072
# Parsed policies are cached by text; only texts up to a key policy's size are kept, so the
# cache holds at most _PARSE_CACHE_SIZE * 32 KiB of text.
_CACHED_CHARS = 32_768
_PARSE_CACHE_SIZE = 512
_TOP_LEVEL = frozenset({"Version", "Id", "Statement"})
_STATEMENT = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
_IAM_SID = re.compile(r"[A-Za-z0-9]*")
# "OverlyPermissiveCondition" (KMS guide, "AWS KMS condition keys", set operators).
_SINGLE_VALUED_PREFIXES = ("kms:encryptioncontext:", "aws:requesttag/")


class Effect(Enum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True)
class Principals:
    """A Principal or NotPrincipal element.  ``everyone`` for ``"*"`` or ``{"AWS": "*"}``."""

    everyone: bool = False
    aws: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    federated: tuple[str, ...] = ()
    canonical_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Statement:
    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[Template, ...] | None  # None: no Resource element, never applies
    sid: str | None = None
    principal: Principals | None = None  # None: no Principal/NotPrincipal element
    not_principal: bool = False
    not_action: bool = False
    not_resource: bool = False
    conditions: tuple[Condition, ...] = ()

    @cached_property
    def variables(self) -> frozenset[str]:
        """Policy variables (without defaults) this statement needs the request to supply."""
        names: set[str] = set()
        for resource in self.resources or ():
            names |= variables_of(resource)
        for condition in self.conditions:
            names |= condition.variables
        return frozenset(names)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    version: str | None = None
    id: str | None = None

    def principals(self) -> frozenset[str]:
        """Every AWS principal (account id, account ARN, user or role ARN) the policy names."""
        return frozenset(p for s in self.statements if s.principal for p in s.principal.aws)


class _Number(str):
    """A JSON number, kept as its source text so that "10" and 10 read alike."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyError(f"The element {fragment(key)} appears more than once.")
        result[key] = value
    return result


def _no_constants(name: str) -> object:
    raise PolicyError(f"{name} is not a valid JSON value in a policy.")


def parse_policy(text: str) -> Policy:
    """Parse and check a JSON policy document.  Raises PolicyError when it is malformed.

    The same text is parsed once (a bounded cache); the result is immutable.
    """
    if not isinstance(text, str):
        raise PolicyError("The policy document must be a string.")
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError("The policy document is too large.")
    return _parse_cached(text) if len(text) <= _CACHED_CHARS else _parse(text)


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _parse_cached(text: str) -> Policy:
    return _parse(text)


def _parse(text: str) -> Policy:
    try:
        document = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_no_constants,
        )
    except PolicyError:
        raise
    except (ValueError, RecursionError):
        raise PolicyError("The policy document is not valid JSON.") from None
    return _policy(document)


def _policy(document: object) -> Policy:
    if not isinstance(document, dict):
        raise PolicyError("The policy document must be a JSON object.")
    _only(document, _TOP_LEVEL, "policy")
    version = document.get("Version")
    if version is not None and version not in VERSIONS:
        raise PolicyError(f"The policy Version {fragment(version)} is not 2012-10-17 or 2008-10-17.")
    policy_id = document.get("Id")
    if policy_id is not None and (not isinstance(policy_id, str) or isinstance(policy_id, _Number)):
        raise PolicyError("The policy Id must be a string.")
    raw = document.get("Statement")
    raw_statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("The policy must contain at least one Statement.")
    variables = version == _VARIABLES_VERSION
    statements = tuple(_statement(s, variables) for s in raw_statements)
    return Policy(statements, version if isinstance(version, str) else None, policy_id)


def _only(element: dict[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(element) - allowed)
    if unknown:
        raise PolicyError(f"Unknown element {fragment(unknown[0])} in the {where}.")


def _one_of(element: dict[str, object], name: str, negated: str, *, required: bool) -> tuple[object, bool]:
    if name in element and negated in element:
        raise PolicyError(f"A statement cannot have both {name} and {negated}.")
    if required and name not in element and negated not in element:
        raise PolicyError(f"A statement must have {name} or {negated}.")
    return (element[negated], True) if negated in element else (element.get(name), False)


def _statement(raw: object, variables: bool) -> Statement:
    if not isinstance(raw, dict):
        raise PolicyError("Each Statement must be a JSON object.")
    _only(raw, _STATEMENT, "statement")
    sid = raw.get("Sid")
    if sid is not None and (not isinstance(sid, str) or isinstance(sid, _Number)):
        raise PolicyError("The statement Sid must be a string.")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"The statement Effect {fragment(effect)} is not Allow or Deny.")
    actions, not_action = _one_of(raw, "Action", "NotAction", required=True)
    resources, not_resource = _one_of(raw, "Resource", "NotResource", required=False)
    principal, not_principal = _one_of(raw, "Principal", "NotPrincipal", required=False)
    return Statement(
        effect=Effect(effect),
        actions=tuple(_action(a) for a in _strings(actions, "Action")),
        resources=None
        if resources is None
        else tuple(parse_template(r, variables=variables) for r in _strings(resources, "Resource")),
        sid=sid,
        principal=None if principal is None else _principals(principal),
        not_principal=not_principal,
        not_action=not_action,
        not_resource=not_resource,
        conditions=parse_conditions(raw["Condition"], variables=variables) if "Condition" in raw else (),
    )


def _strings(value: object, element: str) -> list[str]:
    items: list[object] = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError(f"The {element} element is empty.")
    strings: list[str] = []
    for item in items:
        if not isinstance(item, str) or isinstance(item, _Number) or not item:
            raise PolicyError(f"Each {element} must be a non-empty string.")
        strings.append(item)
    return strings


def _action(action: str) -> str:
    service, colon, name = action.partition(":")
    if action != "*" and not (colon and service and name):
        raise PolicyError(f"The action {fragment(action)} is not of the form service:action.")
    return action


def _principals(raw: object) -> Principals:
    if raw == "*":
        return Principals(everyone=True)
    if not isinstance(raw, dict) or not raw:
        raise PolicyError('A Principal must be "*" or an object such as {"AWS": ...}.')
    _only(raw, frozenset(_PRINCIPAL_TYPES), "Principal")
    entries = {kind: tuple(_strings(raw[kind], f"Principal {kind}")) for kind in _PRINCIPAL_TYPES if kind in raw}
    aws = entries.get("AWS", ())
    for name in aws:
        if "*" in name and name != "*":
            raise PolicyError(f"The principal {fragment(name)} uses a wildcard in part of a name.")
    return Principals(
        everyone="*" in aws,
        aws=tuple(a for a in aws if a != "*"),
        services=entries.get("Service", ()),
        federated=entries.get("Federated", ()),
        canonical_users=entries.get("CanonicalUser", ()),
    )


def validate_identity_policy(policy: Policy) -> None:
    """Raise PolicyError unless ``policy`` may be attached to an IAM identity.

    Identity-based policies name no Principal/NotPrincipal, every statement has Resource or
    NotResource, and a Sid has only A-Z, a-z and 0-9 (IAM guide, grammar notes).
    """
    for statement in policy.statements:
        if statement.principal is not None:
            raise PolicyError("An identity-based policy cannot contain a Principal or NotPrincipal element.")
        if statement.resources is None:
            raise PolicyError("Each statement of an identity-based policy must contain Resource or NotResource.")
        if statement.sid is not None and not _IAM_SID.fullmatch(statement.sid):
            raise PolicyError(f"The Sid {fragment(statement.sid)} may contain only letters and digits.")


def validate_key_policy(policy: Policy) -> None:
    """Raise PolicyError unless ``policy`` is a valid key policy.

    Each statement names a principal (Principal or NotPrincipal), and no condition uses
    ``ForAllValues`` with a single-valued key that KMS refuses it for
    (``kms:EncryptionContext:*``, ``aws:RequestTag/*``).
    """
    for statement in policy.statements:
        if statement.principal is None:
            raise PolicyError("Each statement of a key policy must contain a Principal or NotPrincipal element.")
        for condition in statement.conditions:
            if condition.qualifier is Qualifier.FOR_ALL_VALUES and condition.key.startswith(_SINGLE_VALUED_PREFIXES):
                raise PolicyError(
                    "OverlyPermissiveCondition: Using the ForAllValues set operator with a single-valued "
                    "condition key matches requests without the specified encryption context or tag. "
                    "To fix, remove ForAllValues."
                )

