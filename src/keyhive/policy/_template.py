"""Strings with wildcards and policy variables, and how they match.

A policy string (an action, a resource, a condition value) is parsed once into a
*template*: a tuple of tokens, each a literal ``str``, a ``Wildcard`` (``*`` or ``?``)
or a ``Var`` (``${aws:username}``, ``${aws:userid, 'anonymous'}``).  Sources: IAM User
Guide, "IAM policy elements: Variables and tags" (variables exist only in policies of
Version ``2012-10-17``; ``${*}``, ``${?}`` and ``${$}`` stand for the literal characters;
a default is written ``${key, 'default'}``) and "Condition operators" (ArnLike checks
each of the six colon-delimited parts of an ARN separately).

Rendering a template against a request replaces each variable by its value, which is
always literal: a ``*`` inside a user name or tag is never a wildcard.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class Wildcard(Enum):
    ANY = "*"  # any run of characters, including none
    ONE = "?"  # exactly one character


@dataclass(frozen=True)
class Var:
    """A policy variable: a context key name (lower case, as keys match) and its default."""

    name: str
    default: str | None = None


class Substituted(str):
    """Text a variable resolved to: literal, and never split into ARN parts."""


Token = str | Wildcard | Var
Template = tuple[Token, ...]
Rendered = tuple[str | Wildcard, ...]

_VARIABLE = re.compile(r"\$\{([^{}]*)\}")
_WITH_DEFAULT = re.compile(r"^([^,]+?)\s*,\s*'([^']*)'$")
_ESCAPES = frozenset("*?$")
ARN_PARTS = 6  # arn:partition:service:region:account:resource


def parse_template(text: str, *, variables: bool) -> Template:
    """Split ``text`` into literals, wildcards and (if ``variables``) policy variables."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        match = _VARIABLE.match(text, i) if variables and text.startswith("${", i) else None
        if match is not None:
            tokens.append(_variable(match.group(1).strip()))
            i = match.end()
            continue
        char = text[i]
        tokens.append(Wildcard(char) if char in "*?" else char)
        i += 1
    return _merge(tokens)


def _variable(body: str) -> Token:
    if body in _ESCAPES:
        return body
    with_default = _WITH_DEFAULT.match(body)
    if with_default is not None:
        return Var(with_default.group(1).lower(), with_default.group(2))
    return Var(body.lower())


def _merge(tokens: list[Token]) -> Template:
    merged: list[Token] = []
    for token in tokens:
        if isinstance(token, str) and merged and type(merged[-1]) is str:
            merged[-1] = merged[-1] + token
        else:
            merged.append(token)
    return tuple(merged)


def variables_of(template: Template) -> frozenset[str]:
    """Names of the variables in ``template`` that have no default."""
    return frozenset(t.name for t in template if isinstance(t, Var) and t.default is None)


def render(template: Template, context: Mapping[str, object]) -> Rendered | None:
    """Resolve the variables of ``template``; None if one cannot be resolved."""
    out: list[str | Wildcard] = []
    for token in template:
        if isinstance(token, Var):
            value = scalar_text(context.get(token.name))
            if value is None:
                value = token.default
            if value is None:
                return None
            out.append(Substituted(value))
        else:
            out.append(token)
    return tuple(out)


def static(template: Template) -> Rendered:
    """A template parsed without variables, as it renders (for actions)."""
    return tuple(t for t in template if not isinstance(t, Var))


def scalar_text(value: object) -> str | None:
    """How a single-valued context value reads as a string (None for lists and absent keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def literal(rendered: Rendered) -> str:
    """The text of ``rendered`` with its wildcards taken as plain characters."""
    return "".join(t.value if isinstance(t, Wildcard) else t for t in rendered)


def like(rendered: Rendered, value: str) -> bool:
    """Whole-string match with ``*`` and ``?`` wildcards (StringLike, Action); case-sensitive."""
    return _glob(rendered, value)


def arn_like(rendered: Rendered, value: str) -> bool:
    """ArnLike: each of the six colon-delimited parts matches separately.

    A lone ``*`` matches any value.  A pattern or value without six parts never matches.
    """
    if rendered == (Wildcard.ANY,):
        return True
    parts = value.split(":", ARN_PARTS - 1)
    patterns = _arn_parts(rendered)
    if len(parts) != ARN_PARTS or len(patterns) != ARN_PARTS:
        return False
    return all(_glob(p, v) for p, v in zip(patterns, parts, strict=True))


def _arn_parts(rendered: Rendered) -> list[Rendered]:
    parts: list[list[str | Wildcard]] = [[]]
    for token in rendered:
        if type(token) is str and len(parts) < ARN_PARTS:
            pieces = token.split(":", ARN_PARTS - len(parts))
            parts[-1].append(pieces[0])
            parts.extend([piece] for piece in pieces[1:])
        else:
            parts[-1].append(token)
    return [tuple(p) for p in parts]


@lru_cache(maxsize=4096)
def _items(rendered: Rendered) -> tuple[str | Wildcard, ...]:
    """One item per pattern character: a literal character or a wildcard."""
    return tuple(item for t in rendered for item in ((t,) if isinstance(t, Wildcard) else tuple(t)))


def _glob(rendered: Rendered, text: str) -> bool:
    """Wildcard match in O(len(pattern) * len(text)) time, never exponential.

    Greedy scan that, on a mismatch, retries from the last ``*`` one character later
    (no regular expression, so no catastrophic backtracking on hostile patterns).
    """
    pattern = _items(rendered)
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] is Wildcard.ANY:
            star, resume = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] is Wildcard.ONE or pattern[p] == text[t]):
            p += 1
            t += 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] is Wildcard.ANY:
        p += 1
    return p == len(pattern)
