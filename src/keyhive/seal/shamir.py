"""The Shamir seal: a seal key split into shares held by people.

The shares rebuild a 256-bit *seal key*, which unwraps the stored root key.  The
root key itself is never split, so rekeying (new shares) leaves every record as
it is.  The dev seal is the 1-of-1 case whose only share never leaves memory.
"""

from __future__ import annotations

import base64
import binascii

from keyhive import crypto, shamir
from keyhive.barrier import open_with_key, seal_with_key
from keyhive.seal.base import SealError

ROOT_PATH = "core/root"


class KeySeal:
    """Wraps the root key with a seal key held in memory (AES-256-GCM)."""

    kind = "shamir"

    def __init__(self, seal_key: bytes) -> None:
        self._seal_key = seal_key

    def __repr__(self) -> str:
        return "KeySeal(seal_key='**********')"

    def wrap_root(self, root_key: bytes) -> bytes:
        return seal_with_key(self._seal_key, ROOT_PATH, root_key)

    def unwrap_root(self, wrapped: bytes) -> bytes:
        try:
            return open_with_key(self._seal_key, ROOT_PATH, wrapped)
        except crypto.DecryptionFailed:
            raise SealError("the key shares do not unseal this server") from None


def new_shares(shares: int, threshold: int) -> tuple[KeySeal, list[str]]:
    """A fresh seal key, and its shares as printable base64 strings."""
    seal_key = crypto.new_key()
    parts = shamir.split(seal_key, shares, threshold)
    return KeySeal(seal_key), [base64.b64encode(p).decode() for p in parts]


class ShareCollector:
    """Gathers unseal shares until the threshold is reached."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def __repr__(self) -> str:
        return f"ShareCollector(progress={self.progress})"

    @property
    def progress(self) -> int:
        return len(self._parts)

    def reset(self) -> None:
        self._parts = []

    def add(self, share: str, threshold: int) -> KeySeal | None:
        """Add one share; returns the seal once ``threshold`` distinct shares are in.

        A malformed share raises SealError and drops the shares gathered so far.
        """
        try:
            part = _decode_share(share)
        except SealError:
            self.reset()
            raise
        if part not in self._parts:
            self._parts.append(part)
        if len(self._parts) < threshold:
            return None
        parts, self._parts = self._parts, []
        try:
            return KeySeal(shamir.combine(parts))
        except shamir.ShamirError:
            raise SealError("the key shares do not combine") from None


def _decode_share(share: str) -> bytes:
    try:
        part = base64.b64decode(share.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealError("the key share is not valid base64") from None
    if len(part) != crypto.KEY_BYTES + 1:
        raise SealError("the key share has the wrong length")
    return part
