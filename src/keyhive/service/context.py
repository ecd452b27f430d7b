"""What every KMS operation receives: who is calling, where, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keyhive.keystore import Keystore

if TYPE_CHECKING:
    from keyhive.service.authz import Authorizer


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    region: str  # from the request's signature scope
    principal_arn: str
    access_key_id: str
    user_name: str = ""
    source_ip: str = ""
    secure_transport: bool = False
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    keystore: Keystore
    caller: Caller
    now: float  # epoch seconds; the lifecycle clock, fixed by tests
    authz: "Authorizer"
    keys_used: list[tuple[str, str]] = field(default_factory=list)  # (account, key ARN), for the audit trail

    @property
    def account(self) -> str:
        return self.caller.account

    @property
    def region(self) -> str:
        return self.caller.region
