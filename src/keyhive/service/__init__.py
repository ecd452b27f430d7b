"""The service layer: one function per KMS operation, knowing nothing of HTTP.

Each handler takes a :class:`Context` and the parsed request members and returns
the response members: authorize, load the key, do the crypto, reply.
"""

from keyhive.service import (  # noqa: F401  (each module registers its operations)
    aliases,
    asymmetric,
    cryptoops,
    grants,
    imports,
    keys,
    policies,
    rotation,
    tags,
)
from keyhive.service.context import Caller, Context
from keyhive.service.registry import OPERATIONS

__all__ = ["Caller", "Context", "OPERATIONS"]
