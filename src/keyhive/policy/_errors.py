"""The one error a malformed policy document raises."""

from __future__ import annotations

_FRAGMENT_CHARS = 40


class PolicyError(ValueError):
    """A malformed policy document (MalformedPolicyDocumentException on the wire).

    Messages name the element at fault and quote at most a short fragment of the input.
    """


def fragment(value: object) -> str:
    """A short, printable quotation of part of a document, for an error message."""
    text = value if isinstance(value, str) else type(value).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= _FRAGMENT_CHARS else text[: _FRAGMENT_CHARS - 3] + "...")
