"""The Condition element: operators, their values, and how a condition holds.

Sources (IAM User Guide): "Condition operators", "Creating a condition with multiple
keys or values", "Variables and tags".  The rules, as this module applies them:

* A key absent from the request makes a positive operator false and a negated one
  (``StringNotEquals``, ``NotIpAddress``, ``ArnNotLike`` ...) true; ``...IfExists`` makes
  it true; ``Null`` tests presence itself.  An empty list counts as absent.
* Several values for one key: any of them may match (OR); a negated operator holds when
  none matches.  Several keys in one operator, and several operators: all must hold (AND).
* ``ForAllValues:`` holds when every request value matches (true when there are none);
  ``ForAnyValue:`` when at least one does (false when there are none).
* Key names match case-insensitively; values case-sensitively except for the
  ``IgnoreCase`` operators.  Policy variables are allowed in the values of the String,
  Arn and Bool operators.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from functools import cached_property
from types import MappingProxyType
from typing import Any

from keyhive.policy._dates import epoch_value, finite, parse_date
from keyhive.policy._errors import PolicyError, fragment
from keyhive.policy._template import (
    Rendered,
    Template,
    Var,
    arn_like,
    like,
    literal,
    parse_template,
    render,
    scalar_text,
    static,
    variables_of,
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ConditionValue = Template | Decimal | IpNetwork | bytes | bool


class Qualifier(Enum):
    FOR_ALL_VALUES = "ForAllValues"
    FOR_ANY_VALUE = "ForAnyValue"


class Unresolved(Exception):
    """A policy variable in a condition value had no value in the request."""


@dataclass(frozen=True)
class Condition:
    """One (operator, key, values) triple of a Condition block."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    base: str  # the operator without qualifier or IfExists, e.g. "StringLike"
    qualifier: Qualifier | None
    if_exists: bool
    key: str  # lower case: condition keys match case-insensitively
    values: tuple[ConditionValue, ...]

    @cached_property
    def variables(self) -> frozenset[str]:
        names: set[str] = set()
        for value in self.values:
            if isinstance(value, tuple):
                names |= variables_of(value)
        return frozenset(names)


@dataclass(frozen=True)
class _Operator:
    family: str  # string | numeric | date | bool | binary | ip | arn | null
    negated: bool
    test: Callable[[Any, Any], bool]  # (request value, policy value) -> match


def _string_equals(request: str, policy: Rendered) -> bool:
    return request == literal(policy)


def _string_equals_ignore_case(request: str, policy: Rendered) -> bool:
    return request.lower() == literal(policy).lower()


def _bool_equals(request: bool, policy: Rendered) -> bool:
    return literal(policy).lower() == ("true" if request else "false")


def _ip_in(request: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: IpNetwork) -> bool:
    return request.version == policy.version and request in policy


def _ordered(family: str) -> dict[str, _Operator]:
    prefix = family.capitalize()
    tests: dict[str, Callable[[Decimal, Decimal], bool]] = {
        "Equals": lambda a, b: a == b,
        "LessThan": lambda a, b: a < b,
        "LessThanEquals": lambda a, b: a <= b,
        "GreaterThan": lambda a, b: a > b,
        "GreaterThanEquals": lambda a, b: a >= b,
    }
    table = {prefix + name: _Operator(family, False, test) for name, test in tests.items()}
    table[prefix + "NotEquals"] = _Operator(family, True, tests["Equals"])
    return table


OPERATORS: Mapping[str, _Operator] = MappingProxyType(
    {
        "StringEquals": _Operator("string", False, _string_equals),
        "StringNotEquals": _Operator("string", True, _string_equals),
        "StringEqualsIgnoreCase": _Operator("string", False, _string_equals_ignore_case),
        "StringNotEqualsIgnoreCase": _Operator("string", True, _string_equals_ignore_case),
        "StringLike": _Operator("string", False, lambda r, p: like(p, r)),
        "StringNotLike": _Operator("string", True, lambda r, p: like(p, r)),
        **_ordered("numeric"),
        **_ordered("date"),
        "Bool": _Operator("bool", False, _bool_equals),
        "BinaryEquals": _Operator("binary", False, lambda r, p: r == p),
        "IpAddress": _Operator("ip", False, _ip_in),
        "NotIpAddress": _Operator("ip", True, _ip_in),
        "ArnEquals": _Operator("arn", False, lambda r, p: arn_like(p, r)),
        "ArnLike": _Operator("arn", False, lambda r, p: arn_like(p, r)),
        "ArnNotEquals": _Operator("arn", True, lambda r, p: arn_like(p, r)),
        "ArnNotLike": _Operator("arn", True, lambda r, p: arn_like(p, r)),
        "Null": _Operator("null", False, lambda r, p: r is p),
    }
)
_TEMPLATED = frozenset({"string", "arn", "bool"})
_IF_EXISTS = "IfExists"


# -- parsing -------------------------------------------------------------------------
def parse_conditions(block: object, *, variables: bool) -> tuple[Condition, ...]:
    """Parse a statement's Condition element: ``{operator: {key: value | [values]}}``."""
    if not isinstance(block, dict):
        raise PolicyError("The Condition element must be an object.")
    conditions: list[Condition] = []
    for operator, keys in block.items():
        base, qualifier, if_exists = _split_operator(operator)
        if not isinstance(keys, dict):
            raise PolicyError(f"Condition operator {fragment(operator)} must map condition keys to values.")
        for key, raw in keys.items():
            values = raw if isinstance(raw, list) else [raw]
            if not values:
                raise PolicyError(f"Condition key {fragment(key)} has no values.")
            parsed = tuple(_policy_value(OPERATORS[base].family, v, variables, key) for v in values)
            conditions.append(Condition(operator, base, qualifier, if_exists, key.lower(), parsed))
    return tuple(conditions)


def _split_operator(operator: str) -> tuple[str, Qualifier | None, bool]:
    qualifier = None
    name = operator
    prefix, colon, rest = operator.partition(":")
    if colon:
        qualifier = next((q for q in Qualifier if q.value == prefix), None)
        if qualifier is None:
            raise PolicyError(f"Unknown condition set operator {fragment(prefix)}.")
        name = rest
    if_exists = name.endswith(_IF_EXISTS) and name != _IF_EXISTS
    base = name[: -len(_IF_EXISTS)] if if_exists else name
    if base not in OPERATORS or (base == "Null" and (if_exists or qualifier)):
        raise PolicyError(f"Unknown condition operator {fragment(operator)}.")
    return base, qualifier, if_exists


def _policy_value(family: str, raw: object, variables: bool, key: str) -> ConditionValue:
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, str):  # JSON numbers arrive as str subclasses holding their text
        text = raw
    else:
        raise PolicyError(f"Condition key {fragment(key)} has a value that is not a string, number or Boolean.")
    parsed = _PARSERS[family](text, variables)
    if parsed is None:
        raise PolicyError(f"Condition key {fragment(key)} has an invalid value {fragment(text)}.")
    return parsed


def _parse_bool_template(text: str, variables: bool) -> Template | None:
    template = parse_template(text, variables=variables)
    if any(isinstance(t, Var) for t in template):
        return template
    return template if literal(static(template)).lower() in ("true", "false") else None


def _parse_network(text: str, _variables: bool) -> IpNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _parse_base64(text: str, _variables: bool) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse_null(text: str, _variables: bool) -> bool | None:
    return {"true": True, "false": False}.get(text.strip().lower())


_PARSERS: Mapping[str, Callable[[str, bool], ConditionValue | None]] = MappingProxyType(
    {
        "string": lambda text, v: parse_template(text, variables=v),
        "arn": lambda text, v: parse_template(text, variables=v),
        "bool": _parse_bool_template,
        "numeric": lambda text, _v: finite(text),
        "date": lambda text, _v: parse_date(text),
        "ip": _parse_network,
        "binary": _parse_base64,
        "null": _parse_null,
    }
)


# -- evaluation ----------------------------------------------------------------------
def _request_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get(value.strip().lower()) if isinstance(value, str) else None


def _request_number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return finite(str(value))


def _request_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip()) if isinstance(value, str) else None
    except ValueError:
        return None


def _request_bytes(value: object) -> bytes | None:
    """Binary context values travel as base64 text (a context holds no bytes)."""
    if isinstance(value, bytes):
        return value
    return _parse_base64(value, False) if isinstance(value, str) else None


_COERCE: Mapping[str, Callable[[object], Any]] = MappingProxyType(
    {
        "string": scalar_text,
        "arn": scalar_text,
        "bool": _request_bool,
        "numeric": _request_number,
        "date": epoch_value,
        "ip": _request_address,
        "binary": _request_bytes,
    }
)


def condition_holds(condition: Condition, context: Mapping[str, object]) -> bool:
    """Whether ``condition`` holds for a request whose (lower-case keyed) context is given.

    Raises ``Unresolved`` when a policy variable in a value has no value in the context.
    """
    raw = context.get(condition.key)
    present = list(raw) if isinstance(raw, tuple) else [] if raw is None else [raw]
    if condition.base == "Null":
        return any(value is not bool(present) for value in condition.values)
    operator = OPERATORS[condition.base]
    values = _rendered_values(operator.family, condition.values, context)
    coerce = _COERCE[operator.family]

    def matches(request_value: object) -> bool:
        coerced = coerce(request_value)
        return coerced is not None and any(operator.test(coerced, v) for v in values)

    if not present:
        # ForAllValues over nothing holds; otherwise a missing key satisfies only IfExists
        # and the negated operators.
        return condition.qualifier is Qualifier.FOR_ALL_VALUES or condition.if_exists or (
            operator.negated and condition.qualifier is None
        )
    if condition.qualifier is None:
        return any(matches(v) for v in present) != operator.negated
    per_value = [matches(v) != operator.negated for v in present]
    return all(per_value) if condition.qualifier is Qualifier.FOR_ALL_VALUES else any(per_value)


def _rendered_values(
    family: str, values: tuple[ConditionValue, ...], context: Mapping[str, object]
) -> list[object]:
    if family not in _TEMPLATED:
        return list(values)
    rendered: list[object] = []
    for value in values:
        assert isinstance(value, tuple)
        resolved = render(value, context)
        if resolved is None:
            raise Unresolved(family)
        rendered.append(resolved)
    return rendered
