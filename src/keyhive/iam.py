"""Principals: users, their access keys, identity policies and tags, under the barrier.

Paths (sealed by the barrier)::

    iam/users/{account}/{name}    user: ARN, id, admin flag, inline policies, tags
    iam/access-keys/{id}          access key: secret, owner, status

Everything is loaded into memory at unseal (a node authenticates every request
from memory) and written through to storage before a change is acknowledged.
``epoch`` grows with every change so that cached authorization verdicts expire.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from keyhive.errors import (
    DeleteConflictException,
    EntityAlreadyExistsException,
    LimitExceededException,
    NoSuchEntityException,
)
from keyhive.storage import Conflict

USER_PREFIX = "iam/users/"
ACCESS_KEY_PREFIX = "iam/access-keys/"
MAX_ACCESS_KEYS_PER_USER = 2  # IAM quota: "Access keys assigned to an IAM user: 2"
ADMINISTRATOR_ACCESS = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


class SealedRecords(Protocol):
    """The part of the barrier this module needs."""

    def get(self, path: str) -> bytes | None: ...

    def scan(self, prefix: str) -> list[tuple[str, bytes]]: ...

    def commit(self, puts: dict[str, bytes] = ..., deletes: list[str] = ..., *, must_be_absent: list[str] = ...) -> None: ...


@dataclass(frozen=True)
class User:
    account: str
    name: str
    user_id: str
    created: float
    admin: bool = False
    policies: dict[str, str] = field(default_factory=dict)  # inline identity policies: name -> document
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/{self.name}"


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    account: str
    user_name: str
    created: float
    status: str = "Active"  # Active | Inactive

    def __repr__(self) -> str:
        return f"AccessKey({self.access_key_id!r}, user={self.user_name!r}, status={self.status!r}, secret='**********')"


def _user_path(account: str, name: str) -> str:
    return f"{USER_PREFIX}{account}/{name}"


def new_access_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def new_secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


def new_user_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AIDA" + "".join(secrets.choice(alphabet) for _ in range(17))


def user_record(user: User) -> tuple[str, bytes]:
    return _user_path(user.account, user.name), json.dumps(asdict(user)).encode()


def access_key_record(key: AccessKey) -> tuple[str, bytes]:
    return ACCESS_KEY_PREFIX + key.access_key_id, json.dumps(asdict(key)).encode()


class IdentityStore:
    def __init__(self, records: SealedRecords) -> None:
        self._records = records
        self._users: dict[tuple[str, str], User] = {}
        self._keys: dict[str, AccessKey] = {}
        self.epoch = 0

    def __repr__(self) -> str:
        return f"IdentityStore(users={len(self._users)}, access_keys={len(self._keys)})"

    def load(self) -> None:
        """Read every user and access key; memory changes only once both reads succeed."""
        users = {(user.account, user.name): user
                 for user in (User(**json.loads(raw)) for _, raw in self._records.scan(USER_PREFIX))}
        keys = {key.access_key_id: key
                for key in (AccessKey(**json.loads(raw)) for _, raw in self._records.scan(ACCESS_KEY_PREFIX))}
        self._users, self._keys = users, keys
        self.epoch += 1

    def forget(self) -> None:
        self._users, self._keys = {}, {}
        self.epoch += 1

    def invalidate(self, path: str) -> None:
        """Another process or node changed the record at ``path``: drop it; the next use reads storage."""
        if path.startswith(USER_PREFIX):
            account, _, name = path.removeprefix(USER_PREFIX).partition("/")
            self._users.pop((account, name), None)
        elif path.startswith(ACCESS_KEY_PREFIX):
            self._keys.pop(path.removeprefix(ACCESS_KEY_PREFIX), None)
        else:
            return
        self.epoch += 1

    # -- lookups (hot path) -----------------------------------------------------------
    # Memory caches users and keys (all of them from unseal on); another worker's or node's
    # change drops the entry within the change feed's bound.  A miss reads storage, so what
    # another process just created works at once; read-modify-write updates and listings
    # start from storage too, so they lose no one's change.
    def active_key(self, access_key_id: str) -> AccessKey | None:
        key = self._keys.get(access_key_id)
        if key is None:
            key = self._read_key(access_key_id)
        return key if key is not None and key.status == "Active" else None

    def user(self, account: str, name: str, *, fresh: bool = False) -> User:
        user = None if fresh else self._users.get((account, name))
        if user is None:
            raw = self._records.get(_user_path(account, name))
            if raw is None:
                raise NoSuchEntityException(f"The user with name {name} cannot be found.")
            user = self._cache_user(User(**json.loads(raw)))
        return user

    def _read_key(self, access_key_id: str) -> AccessKey | None:
        raw = self._records.get(ACCESS_KEY_PREFIX + access_key_id)
        if raw is None:
            self._keys.pop(access_key_id, None)
            return None
        key = self._keys[access_key_id] = AccessKey(**json.loads(raw))
        self.epoch += 1
        return key

    def user_exists(self, arn: str) -> bool:
        if any(u.arn == arn for u in self._users.values()):
            return True
        account, _, name = arn.removeprefix("arn:aws:iam::").partition(":user/")
        if not (account and name and arn.startswith("arn:aws:iam::")):
            return False
        try:
            return self.user(account, name).arn == arn
        except NoSuchEntityException:
            return False

    # -- users --------------------------------------------------------------------------
    @staticmethod
    def administrator(user: User) -> User:
        """An admin: may use the admin API, and holds an allow-everything identity policy."""
        return replace(user, admin=True, policies={**user.policies, "AdministratorAccess": ADMINISTRATOR_ACCESS})

    def create_user(self, account: str, name: str, now: float, *, admin: bool = False) -> User:
        user = User(account, name, new_user_id(), now)
        if admin:
            user = self.administrator(user)
        path, raw = user_record(user)
        try:
            self._records.commit({path: raw}, must_be_absent=[path])
        except Conflict:
            raise EntityAlreadyExistsException(f"User with name {name} already exists.") from None
        return self._cache_user(user)

    def delete_user(self, account: str, name: str) -> None:
        user = self.user(account, name, fresh=True)
        if self.access_keys(account, name):
            raise DeleteConflictException("Cannot delete entity, must delete access keys first.")
        if user.policies:
            raise DeleteConflictException("Cannot delete entity, must delete policies first.")
        self._records.commit(deletes=[_user_path(account, name)])
        del self._users[(account, name)]
        self.epoch += 1

    def users(self, account: str) -> list[User]:
        """From storage: memory holds only what was used, or loaded at unseal."""
        return [User(**json.loads(raw)) for _, raw in self._records.scan(f"{USER_PREFIX}{account}/")]

    def _save_user(self, user: User) -> User:
        path, raw = user_record(user)
        self._records.commit({path: raw})
        return self._cache_user(user)

    def _cache_user(self, user: User) -> User:
        self._users[(user.account, user.name)] = user
        self.epoch += 1
        return user

    # -- inline policies and tags ---------------------------------------------------------
    def put_user_policy(self, account: str, name: str, policy_name: str, document: str) -> None:
        user = self.user(account, name, fresh=True)
        self._save_user(replace(user, policies={**user.policies, policy_name: document}))

    def delete_user_policy(self, account: str, name: str, policy_name: str) -> None:
        user = self.user(account, name, fresh=True)
        if policy_name not in user.policies:
            raise NoSuchEntityException(f"The user policy with name {policy_name} cannot be found.")
        self._save_user(replace(user, policies={k: v for k, v in user.policies.items() if k != policy_name}))

    def tag_user(self, account: str, name: str, tags: dict[str, str]) -> None:
        user = self.user(account, name, fresh=True)
        self._save_user(replace(user, tags={**user.tags, **tags}))

    def untag_user(self, account: str, name: str, keys: list[str]) -> None:
        user = self.user(account, name, fresh=True)
        self._save_user(replace(user, tags={k: v for k, v in user.tags.items() if k not in keys}))

    # -- access keys --------------------------------------------------------------------
    def create_access_key(self, account: str, name: str, now: float, *,
                          access_key_id: str | None = None, secret: str | None = None) -> AccessKey:
        self.user(account, name)
        if len(self.access_keys(account, name)) >= MAX_ACCESS_KEYS_PER_USER:
            raise LimitExceededException(f"Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}")
        key = AccessKey(access_key_id or new_access_key_id(), secret or new_secret_access_key(), account, name, now)
        path, raw = access_key_record(key)
        try:
            self._records.commit({path: raw}, must_be_absent=[path])
        except Conflict:
            raise EntityAlreadyExistsException(f"Access key {key.access_key_id} already exists.") from None
        self._keys[key.access_key_id] = key
        self.epoch += 1
        return key

    def access_keys(self, account: str, name: str) -> list[AccessKey]:
        """From storage, oldest first (management calls only: this reads every access key)."""
        keys = (AccessKey(**json.loads(raw)) for _, raw in self._records.scan(ACCESS_KEY_PREFIX))
        return sorted((k for k in keys if (k.account, k.user_name) == (account, name)), key=lambda k: k.created)

    def _owned_key(self, account: str, access_key_id: str) -> AccessKey:
        key = self._read_key(access_key_id)
        if key is None or key.account != account:
            raise NoSuchEntityException(f"The Access Key with id {access_key_id} cannot be found.")
        return key

    def update_access_key(self, account: str, access_key_id: str, status: str) -> None:
        key = replace(self._owned_key(account, access_key_id), status=status)
        path, raw = access_key_record(key)
        self._records.commit({path: raw})
        self._keys[access_key_id] = key
        self.epoch += 1

    def delete_access_key(self, account: str, access_key_id: str) -> None:
        self._owned_key(account, access_key_id)
        self._records.commit(deletes=[ACCESS_KEY_PREFIX + access_key_id])
        del self._keys[access_key_id]
        self.epoch += 1


def describe_user(user: User) -> dict[str, Any]:
    return {"UserName": user.name, "UserId": user.user_id, "Arn": user.arn, "AccountId": user.account,
            "CreateDate": user.created, "Admin": user.admin, "Tags": [{"Key": k, "Value": v} for k, v in user.tags.items()]}
