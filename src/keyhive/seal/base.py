"""The seal interface."""

from __future__ import annotations

from typing import Protocol


class SealError(Exception):
    """The seal could not unwrap the root key (wrong shares, wrong HSM key ...)."""


class Seal(Protocol):
    kind: str

    def wrap_root(self, root_key: bytes) -> bytes:
        """The root key encrypted for storage at ``core/root``."""

    def unwrap_root(self, wrapped: bytes) -> bytes:
        """The root key from what :meth:`wrap_root` returned; raises SealError."""
