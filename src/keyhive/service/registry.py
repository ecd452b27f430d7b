"""The table of KMS operations: wire name -> handler."""

from __future__ import annotations

from typing import Any, Callable

from keyhive.service.context import Context

Handler = Callable[[Context, dict[str, Any]], dict[str, Any]]

OPERATIONS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of the KMS operation ``name``."""

    def register(fn: Handler) -> Handler:
        assert name not in OPERATIONS, name
        OPERATIONS[name] = fn
        return fn

    return register
