"""The seal conformance suite, run unchanged against every seal (Shamir key seal, PKCS#11).

``exercise_seal(seal)`` checks each promise of :class:`keyhive.seal.base.Seal` that does
not depend on how the seal keeps its key.
"""

from __future__ import annotations

from keyhive import crypto
from keyhive.seal.base import Seal, SealError


def exercise_seal(seal: Seal) -> None:
    root_key = crypto.new_key()
    wrapped = seal.wrap_root(root_key)
    assert seal.unwrap_root(wrapped) == root_key
    assert root_key not in wrapped
    again = seal.wrap_root(root_key)
    assert again != wrapped, "wrapping must be randomized"
    assert seal.unwrap_root(again) == root_key
    assert seal.unwrap_root(seal.wrap_root(bytes(32))) == bytes(32)
    for i in range(len(wrapped)):  # every flipped byte is refused
        bad = bytearray(wrapped)
        bad[i] ^= 0x01
        _refused(seal, bytes(bad))
    for cut in (b"", wrapped[:1], wrapped[:-1], wrapped + b"\x00", wrapped[:1] + wrapped):
        _refused(seal, cut)


def _refused(seal: Seal, wrapped: bytes) -> None:
    try:
        seal.unwrap_root(wrapped)
    except SealError:
        return
    raise AssertionError("a damaged wrapped root key was accepted")
