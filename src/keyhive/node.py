"""One Keyhive node: storage, the seal state, the barrier and what lives under it.

Storage layout outside the barrier (nothing here is secret by itself)::

    core/seal-config   JSON: seal kind, shares, threshold
    core/root          the root key, wrapped by the seal
    core/keyring       barrier keys, sealed by the root key

Access keys live under the barrier at ``iam/access-keys/{id}``: while the node
is sealed it cannot authenticate anyone, so only status, init and unseal work.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from keyhive import crypto
from keyhive.audit.trail import AuditTrail, signing_key_records
from keyhive.barrier import KEYRING_PATH, Barrier
from keyhive.crypto import asymmetric
from keyhive.errors import SealedException
from keyhive.iam import (
    AccessKey,
    IdentityStore,
    User,
    access_key_record,
    new_access_key_id,
    new_secret_access_key,
    user_record,
)
from keyhive.keystore import Keystore
from keyhive.seal import KeySeal, Seal, SealError, ShareCollector
from keyhive.seal.shamir import new_shares
from keyhive.storage import Conflict, Storage
from keyhive.storage.base import CHANGE_DELAY_SECONDS, ChangeHandler, Watch
from keyhive.storage.work import commit_or_stage, current_work

SEAL_CONFIG_PATH = "core/seal-config"
ROOT_PATH = "core/root"
RECOVERY_CHECK_PATH = "core/recovery"  # with an HSM seal: proves a quorum of recovery shares
RECOVERY_CHECK = b"keyhive-recovery-check-v1".ljust(32, b"\0")
ADMIN_USER = "admin"

log = logging.getLogger("keyhive.node")


class AlreadyInitialized(Exception):
    pass


class NotInitialized(Exception):
    pass


@dataclass(frozen=True)
class InitResult:
    shares: list[str]
    threshold: int
    access_key: AccessKey

    def __repr__(self) -> str:
        return f"InitResult(shares=<{len(self.shares)} hidden>, threshold={self.threshold}, access_key={self.access_key!r})"


class Siblings(Protocol):
    """The other worker processes of this server, told of every seal change (keyhive.siblings)."""

    def unsealed(self, root_key: bytes) -> None: ...

    def sealed(self) -> None: ...

    def share_added(self, share: str) -> None: ...

    def shares_reset(self) -> None: ...


class NoSiblings:
    """A process with no siblings (a single-process server, a tool, a test)."""

    def unsealed(self, root_key: bytes) -> None:
        pass

    def sealed(self) -> None:
        pass

    def share_added(self, share: str) -> None:
        pass

    def shares_reset(self) -> None:
        pass


class Node:
    def __init__(self, storage: Storage, *, account_id: str, hsm: Seal | None = None) -> None:
        self.storage = storage
        self.account_id = account_id
        self.barrier = Barrier(storage)
        self.keystore = Keystore(self.barrier)
        self.iam = IdentityStore(self.barrier)
        self.hsm = hsm  # an auto-unseal seal (PKCS#11): wraps the root key; shares only recover
        self.barrier_rotation_interval = 0.0  # seconds; 0: rotate only by encryption count
        self.audit = AuditTrail(storage, self.barrier, on_failure=self._reload)
        self._shares = ShareCollector()
        self._watch: Watch | None = None
        self.siblings: Siblings = NoSiblings()
        self.process_id = crypto.random_bytes(8).hex()  # names this process in storage leases (not a secret)

    def __repr__(self) -> str:
        return f"Node(sealed={self.sealed})"

    # -- status -------------------------------------------------------------------
    def _seal_config(self) -> dict[str, Any] | None:
        raw = self.storage.get(SEAL_CONFIG_PATH)
        return None if raw is None else json.loads(raw)

    @property
    def sealed(self) -> bool:
        return self.barrier.sealed

    def status(self) -> dict[str, Any]:
        config = self._seal_config()
        return {
            "initialized": config is not None,
            "sealed": self.sealed,
            "seal_type": config["type"] if config else None,
            "shares": config["shares"] if config else None,
            "threshold": config["threshold"] if config else None,
            "progress": self._shares.progress,
        }

    # -- init, unseal, seal -----------------------------------------------------------
    def initialize(
        self,
        shares: int,
        threshold: int,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> InitResult:
        """Create the root key, its seal and the first admin; the node stays sealed."""
        if self._seal_config() is not None:  # cheap refusal; the commit below settles races
            raise AlreadyInitialized()
        recovery_records: dict[str, bytes] = {}
        if self.hsm is not None:
            # The HSM wraps the root key; the shares rebuild a recovery key that authorizes
            # operator actions and decrypts nothing.
            self.hsm.ensure_key()  # type: ignore[attr-defined]
            seal: Seal = self.hsm
            recovery, printable = new_shares(shares, threshold)
            recovery_records[RECOVERY_CHECK_PATH] = recovery.wrap_root(RECOVERY_CHECK)
        else:
            seal, printable = new_shares(shares, threshold)
        root_key = crypto.new_key()
        now = time.time()
        admin = User(self.account_id, ADMIN_USER, "AIDAKEYHIVEADMIN00001", now, admin=True)
        admin = IdentityStore.administrator(admin)
        key = AccessKey(access_key_id or new_access_key_id(), secret_access_key or new_secret_access_key(),
                        self.account_id, ADMIN_USER, now)
        records = {
            SEAL_CONFIG_PATH: json.dumps({"type": seal.kind, "shares": shares, "threshold": threshold}).encode(),
            ROOT_PATH: seal.wrap_root(root_key),
            **self.barrier.create_keyring(root_key),
            **recovery_records,
        }
        # The admin's records must go under the barrier: open it briefly with the new root.
        staging = Barrier(_Overlay(self.storage, records))  # type: ignore[arg-type]
        staging.unseal(root_key)
        for path, raw in (user_record(admin), access_key_record(key)):
            records[path] = staging.encrypt(path, raw)
        records.update(signing_key_records(staging))
        staging.seal()
        try:  # with the Init request's audit event, when there is one; an HSM node then unseals itself
            commit_or_stage(self.storage, records, must_be_absent=[SEAL_CONFIG_PATH],
                            then=self.auto_unseal if self.hsm is not None else None)
        except Conflict:
            raise AlreadyInitialized() from None
        return InitResult(printable, threshold, key)

    # -- barrier keys and shares --------------------------------------------------------
    def rotate_barrier(self) -> int:
        """A new barrier key term for new writes; older terms keep decrypting until re-wrapped."""
        try:
            return self.barrier.rotate()
        except Conflict:  # another worker or node rotated at the same moment: build on its keyring
            return self.barrier.rotate()

    def rewrap_and_retire(self, batch: int = 500) -> tuple[int, list[int]]:
        """One pass: re-wrap up to ``batch`` old-term records; retire terms nothing uses any more."""
        done = self.barrier.rewrap(batch)
        active, oldest = self.barrier.terms
        if done or oldest == active:
            return done, []
        # Other workers and nodes hear of a rotation within the change feed's bound; until then
        # they may still write under the old term, so it is not retired before that.
        young = self.barrier.active_since + 2 * CHANGE_DELAY_SECONDS - time.time()
        if young > 0:
            time.sleep(young)
        with self.audit.quiet() as idle:  # a staged write under an old term may still be on its way
            return done, self.barrier.retire_unused_terms() if idle else []

    def rekey(self, old_shares: list[str], shares: int, threshold: int) -> list[str]:
        """New Shamir shares from a quorum of the old ones; the root key, and so every record, stays."""
        config = self._seal_config()
        if config is None:
            raise NotInitialized()
        if config["type"] != "shamir":
            raise SealError(f"rekey applies to the Shamir seal, not {config['type']}")
        try:
            seal = self._quorum(old_shares, config["threshold"])
        except SealError:
            raise SealError(f"rekey needs {config['threshold']} distinct current shares") from None
        wrapped = self.storage.get(ROOT_PATH)
        assert wrapped is not None
        root_key = seal.unwrap_root(wrapped)  # SealError unless the old shares are genuine
        new_seal, printable = new_shares(shares, threshold)
        commit_or_stage(  # durable with the Rekey event, or not at all: shares are never lost halfway
            self.storage,
            {SEAL_CONFIG_PATH: json.dumps({**config, "shares": shares, "threshold": threshold}).encode(),
             ROOT_PATH: new_seal.wrap_root(root_key)},
            expect={ROOT_PATH: wrapped},
            then=self._shares.reset,
        )
        return printable

    def migrate_seal(self, to: str, shares: list[str]) -> None:
        """Move the root key between the Shamir seal and the HSM, authorized by a quorum of shares.

        To the HSM: the unseal shares unwrap the root key, the HSM wraps it, and the same
        shares become recovery shares (they decrypt nothing any more).  Back to Shamir: the
        recovery shares are checked, and become unseal shares again.  The root key, and so
        every record, stays as it is.
        """
        config = self._seal_config()
        if config is None:
            raise NotInitialized()
        if self.hsm is None:
            raise SealError("start the server with --seal pkcs11 and its token flags to migrate to or from the HSM")
        if config["type"] == to:
            raise SealError(f"the seal is already {to}")
        quorum = self._quorum(shares, config["threshold"])
        wrapped = self.storage.get(ROOT_PATH)
        assert wrapped is not None
        if to == "pkcs11":
            root_key = quorum.unwrap_root(wrapped)
            self.hsm.ensure_key()  # type: ignore[attr-defined]
            puts = {ROOT_PATH: self.hsm.wrap_root(root_key), RECOVERY_CHECK_PATH: quorum.wrap_root(RECOVERY_CHECK)}
            deletes: list[str] = []
        else:
            check = self.storage.get(RECOVERY_CHECK_PATH)
            if check is None or quorum.unwrap_root(check) != RECOVERY_CHECK:
                raise SealError("the recovery shares do not match this server")
            root_key = self.hsm.unwrap_root(wrapped)
            puts, deletes = {ROOT_PATH: quorum.wrap_root(root_key)}, [RECOVERY_CHECK_PATH]
        puts[SEAL_CONFIG_PATH] = json.dumps({**config, "type": to}).encode()
        work = current_work()
        if work is None:
            self.storage.commit(puts, deletes, expect={ROOT_PATH: wrapped})
            self.auto_unseal()
        else:
            work.stage(self.storage, puts, deletes, (), {ROOT_PATH: wrapped})
            work.after_commit.append(self.auto_unseal)

    def _quorum(self, shares: list[str], threshold: int) -> KeySeal:
        collector = ShareCollector()
        seal = None
        for share in shares:
            seal = collector.add(share, threshold) or seal
        if seal is None:
            raise SealError(f"{threshold} distinct shares are needed")
        return seal

    def submit_share(self, share: str) -> bool:
        """Add one unseal share; True once the node is unsealed. Raises SealError."""
        config = self._seal_config()
        if config is None:
            raise NotInitialized()
        if not self.sealed:
            return True
        if config["type"] != "shamir":
            raise SealError(f"this server unseals with its {config['type']} seal, not with key shares")
        try:
            seal = self._shares.add(share, config["threshold"])
            if seal is None:
                self.siblings.share_added(share)  # an unseal call of the same quorum may land on another worker
                return False
            self.unseal_with(seal)
        except SealError:
            self.reset_shares()
            self.siblings.shares_reset()
            raise
        return True

    def reset_shares(self) -> None:
        self._shares.reset()

    def add_sibling_share(self, share: str) -> None:
        """A share another worker took: count it here too; a quorum here unseals this worker only."""
        config = self._seal_config()
        if config is None or not self.sealed or config["type"] != "shamir":
            return
        try:
            seal = self._shares.add(share, config["threshold"])
            if seal is not None:
                self.unseal_with_root(seal.unwrap_root(self._wrapped_root()))
        except SealError as exc:  # the worker that took the share has answered its caller
            log.info("a share passed on by another worker was refused: %s", exc)

    def auto_unseal(self) -> None:
        """Unseal with the HSM, if this node has one and is initialized and sealed. Raises SealError."""
        config = self._seal_config()
        if self.hsm is not None and self.sealed and config is not None and config["type"] == self.hsm.kind:
            self.unseal_with(self.hsm)

    def unseal_with(self, seal: Seal) -> None:
        """Unseal this node with ``seal``, then every sibling worker with the same root key."""
        root_key = seal.unwrap_root(self._wrapped_root())
        self.unseal_with_root(root_key)
        self.siblings.unsealed(root_key)

    def unseal_with_root(self, root_key: bytes) -> None:
        """Unseal with the root key itself (a sibling worker's, handed over in memory)."""
        try:
            self.barrier.unseal(root_key)
        except crypto.DecryptionFailed:
            raise SealError("the root key does not open the keyring") from None
        self.iam.load()
        self.audit.unsealed()
        self._shares.reset()

    def _wrapped_root(self) -> bytes:
        wrapped = self.storage.get(ROOT_PATH)
        if wrapped is None:
            raise NotInitialized()
        return wrapped

    def seal(self, *, announce: bool = True) -> None:
        """Forget the root key, the barrier keys and every cached secret; with ``announce``, so do the siblings."""
        self.barrier.seal()
        self.keystore.forget()
        asymmetric.forget()
        self.iam.forget()
        self.audit.sealed()
        self._shares.reset()
        if announce:
            self.siblings.sealed()

    def _reload(self) -> None:
        """After a failed commit: drop what memory may hold that storage does not (read again when used)."""
        self.apply_changes(None)

    def start_watching(self, on_change: ChangeHandler) -> None:
        """Hear what other workers and nodes commit (``on_change`` runs on a watcher thread)."""
        self.stop_watching()
        self._watch = self.storage.watch(on_change)

    def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def apply_changes(self, paths: list[str] | None) -> None:
        """Another worker or node committed ``paths`` (None: unknown which): drop what they make stale.

        No I/O here (it runs on the event loop, maybe while storage is unreachable): what is
        dropped is read again when next used.
        """
        if paths is None:
            self.keystore.forget()
            self.iam.forget()
            self.barrier.keyring_changed()
            return
        for path in paths:
            self.keystore.invalidate(path)
            self.iam.invalidate(path)
        if KEYRING_PATH in paths:
            self.barrier.keyring_changed()

    # -- authentication -------------------------------------------------------------
    def access_key(self, access_key_id: str) -> AccessKey | None:
        """The active access key with this id; a sealed node knows no one."""
        if self.sealed:
            raise SealedException()
        return self.iam.active_key(access_key_id)


class _Overlay:
    """Reads ``pending`` records before they are committed (init only)."""

    def __init__(self, storage: Storage, pending: dict[str, bytes]) -> None:
        self._storage, self._pending = storage, pending

    def get(self, path: str) -> bytes | None:
        return self._pending.get(path, self._storage.get(path))


def dev_unseal(node: Node, *, access_key_id: str | None, secret_access_key: str | None) -> InitResult:
    """Initialize a fresh dev node with a 1-of-1 share kept only in memory, and unseal it."""
    result = node.initialize(1, 1, access_key_id=access_key_id, secret_access_key=secret_access_key)
    if not node.submit_share(result.shares[0]):
        raise SealError("dev unseal failed")
    return result


__all__ = ["AlreadyInitialized", "InitResult", "KeySeal", "Node", "NotInitialized", "dev_unseal"]
