"""Grants: records that let a grantee principal perform listed operations on one key.

Pure: the record, grant tokens, and the rule deciding whether a grant permits a
request.  Storage lives in the keystore.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from keyhive.errors import InvalidGrantTokenException

# Grant operations AWS accepts for a symmetric encryption key (CreateGrant, "Operations").
SYMMETRIC_GRANT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "CreateGrant", "RetireGrant", "DescribeKey", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
})
# Operations that take an encryption context: the only ones a constraint may accompany.
CONTEXT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
})
TOKEN_VERSION = 1


@dataclass(frozen=True)
class Grant:
    grant_id: str
    key_id: str
    key_arn: str
    name: str
    created: float
    grantee_principal: str
    retiring_principal: str | None
    issuing_account: str
    operations: tuple[str, ...]
    constraints: dict[str, dict[str, str]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """A GrantListEntry as ListGrants returns it."""
        entry: dict[str, Any] = {
            "KeyId": self.key_arn,
            "GrantId": self.grant_id,
            "Name": self.name,
            "CreationDate": self.created,
            "GranteePrincipal": self.grantee_principal,
            "RetiringPrincipal": self.retiring_principal,
            "IssuingAccount": self.issuing_account,
            "Operations": list(self.operations),
        }
        if self.constraints:
            entry["Constraints"] = self.constraints
        return entry

    def to_json(self) -> bytes:
        doc = {k: getattr(self, k) for k in self.__dataclass_fields__}
        doc["operations"] = list(self.operations)
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Grant:
        doc = json.loads(raw)
        doc["operations"] = tuple(doc["operations"])
        return cls(**doc)


def _folded(pairs: Mapping[str, str]) -> dict[str, str]:
    """"In a grant constraint, the key in each key-value pair is not case sensitive, but the
    value is case sensitive" (API reference, GrantConstraints)."""
    return {k.lower(): v for k, v in pairs.items()}


def grant_permits(grant: Grant, principal_arn: str, operation: str, context: Mapping[str, str] | None) -> bool:
    """Whether ``grant`` lets ``principal_arn`` perform ``operation`` with this encryption context."""
    if grant.grantee_principal != principal_arn or operation not in grant.operations:
        return False
    if operation not in CONTEXT_OPERATIONS or not grant.constraints:
        return True
    folded = _folded(context or {})
    equals = grant.constraints.get("EncryptionContextEquals")
    if equals is not None and folded != _folded(equals):
        return False
    subset = grant.constraints.get("EncryptionContextSubset")
    if subset is not None and any(folded.get(k) != v for k, v in _folded(subset).items()):
        return False
    return True


def may_create_child(parent: Grant, principal_arn: str, operations: list[str],
                     constraints: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether ``parent`` lets its grantee create a grant for ``operations`` under ``constraints``.

    A grantee with CreateGrant from a grant "can only create grants that allow some or all
    of the operations in the parent grant", with constraints "equally strict or stricter"
    (Developer Guide, "Granting CreateGrant permission"; CreateGrant, Constraints).
    """
    if not grant_permits(parent, principal_arn, "CreateGrant", None) or not set(operations) <= set(parent.operations):
        return False
    equals, subset = constraints.get("EncryptionContextEquals"), constraints.get("EncryptionContextSubset")
    parent_equals = parent.constraints.get("EncryptionContextEquals")
    if parent_equals is not None and (equals is None or _folded(equals) != _folded(parent_equals)):
        return False
    parent_subset = parent.constraints.get("EncryptionContextSubset")
    if parent_subset is not None:
        required = _folded(equals if equals is not None else subset or {})
        if any(required.get(k) != v for k, v in _folded(parent_subset).items()):
            return False
    return True


def grant_token(grant: Grant) -> str:
    """An opaque token naming the grant: usable at once, as AWS's tokens are."""
    doc = json.dumps({"v": TOKEN_VERSION, "k": grant.key_arn, "g": grant.grant_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(doc.encode()).decode().rstrip("=")


def parse_grant_token(token: str) -> tuple[str, str]:
    """(key ARN, grant id) from a token; InvalidGrantTokenException if it is not one of ours."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if doc["v"] != TOKEN_VERSION or not isinstance(doc["k"], str) or not isinstance(doc["g"], str):
            raise ValueError
        return doc["k"], doc["g"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidGrantTokenException("The grant token is not valid.") from None
