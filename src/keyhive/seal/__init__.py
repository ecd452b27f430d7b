"""Seals: what turns operator-held secrets into the root key.

A seal wraps the root key at init and unwraps it at unseal; nothing else.
"""

from keyhive.seal.base import Seal, SealError
from keyhive.seal.shamir import KeySeal, ShareCollector

__all__ = ["KeySeal", "Seal", "SealError", "ShareCollector"]
