"""Authorization: may this caller perform this action on this key, now?

Builds the request context AWS documents for KMS (global ``aws:`` keys and the
``kms:`` condition keys), then asks the pure policy engine to decide over the
key policy, the caller's identity policies and the key's grants.  Verdicts are
cached per request context while nothing they depend on changes (the IAM and
keystore epochs are part of the cache key; time-dependent policies are never
cached).
"""

from __future__ import annotations

import datetime
import re
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from keyhive import policy
from keyhive.errors import AccessDeniedException
from keyhive.grants import grant_permits
from keyhive.iam import IdentityStore
from keyhive.keystore import LRU, KeyRecord, Keystore

if TYPE_CHECKING:
    from keyhive.service.context import Caller, Context

VERDICT_CACHE_SIZE = 50_000
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(.+)$")


class _LazyKeys(Mapping[str, Any]):
    """Condition keys, the expensive ones computed only if a policy reads them."""

    def __init__(self, eager: dict[str, Any], lazy: dict[str, Any]) -> None:
        self._eager, self._lazy = eager, lazy

    def __getitem__(self, name: str) -> Any:
        if name in self._eager:
            return self._eager[name]
        compute = self._lazy[name]  # KeyError when absent, as a plain mapping
        self._eager[name] = value = compute()
        return value

    def __iter__(self) -> Iterator[str]:
        yield from self._eager
        yield from (k for k in self._lazy if k not in self._eager)

    def __len__(self) -> int:
        return len(set(self._eager) | set(self._lazy))


class Authorizer:
    def __init__(self, iam: IdentityStore, keystore: Keystore) -> None:
        self._iam = iam
        self._keystore = keystore
        self._verdicts: LRU[tuple[Any, ...], policy.Verdict] = LRU(VERDICT_CACHE_SIZE)

    def identity_policies(self, account: str, user_name: str) -> list[policy.Policy]:
        user = self._iam.user(account, user_name)
        return [policy.parse_policy(doc) for doc in user.policies.values()]

    def principal_exists(self, principal: str) -> bool:
        """Whether a principal named in a key policy is valid here (AWS refuses unknown ones)."""
        match = _IAM_ARN.match(principal)
        if match is None:
            return True  # "*", an account id, a service principal
        resource = match.group(2)
        if resource == "root":
            return True
        return resource.startswith("user/") and self._iam.user_exists(principal)

    def check_identity(self, caller: "Caller", action: str) -> None:
        """Identity policies alone decide actions outside KMS (``cloudtrail:LookupEvents`` ...).

        The global condition keys apply as they do to KMS actions: without them a Deny
        conditioned on the source IP, the transport or the region would never match.
        """
        keys = self._global_keys(caller, time.time())
        request = policy.RequestContext(caller.principal_arn, caller.account, action, "*", keys)
        verdict = policy.decide(request, None, self.identity_policies(caller.account, caller.user_name))
        if not verdict.allowed:
            raise AccessDeniedException(policy.access_denied_message(request, verdict))

    def allows(self, ctx: "Context", operation: str, key: KeyRecord, *,
               conditions: Mapping[str, Any] | None = None) -> bool:
        """Whether the caller could do ``operation`` on ``key`` as it stands (no cache, no grants)."""
        request = self._request(ctx, f"kms:{operation}", key.arn, key, dict(conditions or {}))
        identity = self.identity_policies(ctx.caller.account, ctx.caller.user_name)
        return policy.decide(request, policy.parse_policy(key.policy), identity).allowed

    def check(
        self,
        ctx: "Context",
        operation: str,
        key: KeyRecord | None = None,
        *,
        resource: str | None = None,
        conditions: Mapping[str, Any] | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> None:
        """Raise AccessDeniedException unless ``ctx.caller`` may do ``operation``.

        ``operation`` is the KMS permission name (``Encrypt``, ``ReEncryptFrom`` ...);
        ``conditions`` are the operation's own condition keys.
        """
        caller = ctx.caller
        conditions = dict(conditions or {})
        if encryption_context is not None:
            conditions["kms:EncryptionContextKeys"] = tuple(sorted(encryption_context))
            for k, v in encryption_context.items():
                conditions[f"kms:EncryptionContext:{k}"] = v
        target = resource or (key.arn if key else "*")
        cache_key = (
            caller.principal_arn, operation, target, caller.region, self._iam.epoch, self._keystore.epoch,
            caller.source_ip, caller.secure_transport, tuple(sorted(conditions.items())),
        )
        verdict = self._verdicts.get(cache_key)
        if verdict is None:
            request = self._request(ctx, f"kms:{operation}", target, key, conditions)
            key_policy = policy.parse_policy(key.policy) if key is not None else None
            identity = self.identity_policies(caller.account, caller.user_name)
            grants = self._keystore.grants(key) if key is not None else []
            verdict = policy.decide(
                request, key_policy, identity,
                grant_allows=any(grant_permits(g, caller.principal_arn, operation, encryption_context) for g in grants),
            )
            if not any(policy.uses_time(p) for p in ([key_policy] if key_policy else []) + identity):
                self._verdicts.put(cache_key, verdict)
        if not verdict.allowed:
            request = policy.RequestContext(caller.principal_arn, caller.account, f"kms:{operation}", target, {})
            raise AccessDeniedException(policy.access_denied_message(request, verdict))

    def _global_keys(self, caller: "Caller", now: float) -> dict[str, Any]:
        """The ``aws:`` condition keys of any request by ``caller`` at ``now`` (epoch seconds)."""
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        keys: dict[str, Any] = {
            "aws:PrincipalArn": caller.principal_arn,
            "aws:PrincipalAccount": caller.account,
            "aws:PrincipalType": "User",
            "aws:username": caller.user_name,
            "aws:SourceIp": caller.source_ip,
            "aws:SecureTransport": caller.secure_transport,
            "aws:CurrentTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": int(now),
            "aws:RequestedRegion": caller.region,
        }
        user = self._iam.user(caller.account, caller.user_name)
        keys.update({f"aws:PrincipalTag/{k}": v for k, v in user.tags.items()})
        return keys

    def _request(
        self, ctx: "Context", action: str, resource: str, key: KeyRecord | None, conditions: dict[str, Any]
    ) -> policy.RequestContext:
        caller = ctx.caller
        eager = {**self._global_keys(caller, ctx.now), "kms:CallerAccount": caller.account, **conditions}
        lazy: dict[str, Any] = {}
        if key is not None:
            eager.update({
                "kms:KeySpec": key.key_spec,
                "kms:KeyUsage": key.key_usage,
                "kms:KeyOrigin": key.origin,
                "kms:MultiRegion": False,
            })
            eager.update({f"aws:ResourceTag/{t['TagKey']}": t["TagValue"] for t in key.tags})
            lazy["kms:ResourceAliases"] = lambda: tuple(
                a.name for a in self._keystore.aliases(key.account, key.region) if a.target_key_id == key.key_id
            )
        return policy.RequestContext(caller.principal_arn, caller.account, action, resource, _LazyKeys(eager, lazy))

