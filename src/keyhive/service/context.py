"""What every KMS operation receives: who is calling, where, and when."""

from __future__ import annotations

from dataclasses import dataclass

from keyhive.keystore import Keystore


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    region: str  # from the request's signature scope
    principal_arn: str
    access_key_id: str


@dataclass(frozen=True, slots=True)
class Context:
    keystore: Keystore
    caller: Caller
    now: float  # epoch seconds; the lifecycle clock, fixed by tests

    @property
    def account(self) -> str:
        return self.caller.account

    @property
    def region(self) -> str:
        return self.caller.region
