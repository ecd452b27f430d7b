"""Keyhive's admin API: seal status, init, unseal, seal, and IAM administration.

    GET  /keyhive/v1/sys/status     seal status (always 200)
    POST /keyhive/v1/sys/init       {"shares", "threshold"} -> shares + first admin, once
    POST /keyhive/v1/sys/unseal     {"share"} -> status
    POST /keyhive/v1/sys/seal       admin, SigV4-signed
    POST /keyhive/v1/sys/backup     admin: a consistent snapshot, still sealed by the barrier (a file)
    POST /keyhive/v1/sys/rotate, /rewrap, /keyring   admin: barrier key terms
    POST /keyhive/v1/sys/rekey      {"old_shares", "shares", "threshold"}: the old quorum is the credential
    POST /keyhive/v1/iam/{Action}   admin, SigV4-signed; Action as in AWS IAM (CreateUser ...)
    POST /keyhive/v1/audit/{Action} LookupEvents, Export; SigV4-signed by a principal whose identity
                                    policy allows cloudtrail:{Action}

Init and unseal are unauthenticated, as in Vault: the shares are the credential.
"""

from __future__ import annotations

import json
import time
from typing import Any

from keyhive import backup
from keyhive.audit import reader
from keyhive.errors import (
    AccessDeniedException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from keyhive.node import AlreadyInitialized, Node, NotInitialized
from keyhive.protocol import sigv4
from keyhive.protocol.audit_events import IAM_SOURCE, KEYHIVE_SOURCE, Exchange
from keyhive.protocol.audit_query import AUDIT_OPERATIONS
from keyhive.protocol.auth import authenticate
from keyhive.seal import SealError
from keyhive.service import Caller
from keyhive.service.authz import Authorizer
from keyhive.service.identity import IAM_OPERATIONS

SYS_PREFIX = "/keyhive/v1/sys/"
IAM_PREFIX = "/keyhive/v1/iam/"
AUDIT_PREFIX = "/keyhive/v1/audit/"


def handle_admin(node: Node, scope: dict[str, Any], body: bytes, regions: frozenset[str] | None,
                 exchange: Exchange, authz: Authorizer) -> tuple[int, dict[str, Any] | bytes]:
    """(status, JSON reply or file bytes) for one admin API request; ``exchange`` gathers its audit event."""
    path, method = scope["path"], scope["method"]
    if path == SYS_PREFIX + "status" and method == "GET":
        return 200, node.status()  # a probe: not audited
    exchange.source, exchange.event_name = KEYHIVE_SOURCE, path.rsplit("/", 1)[-1][:64] or "Unknown"
    if method != "POST":
        raise UnknownOperationException()
    doc = _json_object(body)
    exchange.request = doc
    if path == SYS_PREFIX + "init":
        exchange.event_name = "Init"
        return 200, _init(node, doc)
    if path == SYS_PREFIX + "unseal":
        exchange.event_name, exchange.request = "Unseal", {}
        return 200, _unseal(node, doc)
    if path == SYS_PREFIX + "seal":
        exchange.event_name = "Seal"
        exchange.caller = _require_admin(node, authenticate(node, scope, body, regions), server_wide=True)
        node.seal()
        sigv4.forget_signing_keys()
        return 200, node.status()
    if path == SYS_PREFIX + "backup":
        exchange.event_name = "Backup"
        exchange.caller = _require_admin(node, authenticate(node, scope, body, regions), server_wide=True)
        return 200, backup.pack(node.storage.snapshot())
    if path == SYS_PREFIX + "migrate-seal":
        exchange.event_name = "MigrateSeal"
        exchange.request = {"to": doc.get("to")}  # never the shares
        return 200, _migrate(node, doc)
    if path == SYS_PREFIX + "rekey":
        exchange.event_name = "Rekey"
        exchange.request = {k: doc.get(k) for k in ("shares", "threshold")}  # never the old shares
        return 200, _rekey(node, doc)
    if path in (SYS_PREFIX + "rotate", SYS_PREFIX + "rewrap", SYS_PREFIX + "keyring"):
        exchange.event_name = {"rotate": "RotateBarrierKey", "rewrap": "RewrapBarrierRecords",
                               "keyring": "DescribeKeyring"}[path.rsplit("/", 1)[1]]
        exchange.caller = _require_admin(node, authenticate(node, scope, body, regions), server_wide=True)
        return 200, _keyring(node, path.rsplit("/", 1)[1])
    if path.startswith(IAM_PREFIX):
        exchange.source = IAM_SOURCE
        handler = IAM_OPERATIONS.get(exchange.event_name)
        if handler is None:
            raise UnknownOperationException()
        caller = authenticate(node, scope, body, regions)
        # An account's admins manage that account; another account's only server-wide admins may.
        other_account = doc.get("AccountId", caller.account) != caller.account
        exchange.caller = _require_admin(node, caller, server_wide=other_account)
        exchange.response = handler(node.iam, exchange.caller, doc, time.time())
        return 200, exchange.response
    if path.startswith(AUDIT_PREFIX):
        handler = AUDIT_OPERATIONS.get(exchange.event_name)
        if handler is None:
            raise UnknownOperationException()
        caller = exchange.caller = authenticate(node, scope, body, regions)
        authz.check_identity(caller, f"cloudtrail:{exchange.event_name}")
        if exchange.event_name == "Export":  # the whole trail, every account: verification needs all of it
            _require_admin(node, caller, server_wide=True)
            return 200, handler(reader.load(node.storage), doc)
        trail = reader.load(node.storage)
        if not _server_wide_admin(node, caller):  # an account sees its own events only, as in CloudTrail
            trail = reader.of_account(trail, caller.account)
        return 200, handler(trail, doc)
    raise UnknownOperationException()


def _server_wide_admin(node: Node, caller: Caller) -> bool:
    """Admins of the server's own account (``--account-id``) administer the whole server."""
    return caller.account == node.account_id and node.iam.user(caller.account, caller.user_name).admin


def _require_admin(node: Node, caller: Caller, *, server_wide: bool = False) -> Caller:
    admin = _server_wide_admin(node, caller) if server_wide else node.iam.user(caller.account, caller.user_name).admin
    if not admin:
        scope = "a server-wide Keyhive administrator" if server_wide else "a Keyhive administrator"
        raise AccessDeniedException(f"User: {caller.principal_arn} is not {scope}")
    return caller


def _init(node: Node, doc: dict[str, Any]) -> dict[str, Any]:
    shares, threshold = doc.get("shares", 5), doc.get("threshold", 3)
    _check_shares(shares, threshold)
    try:
        result = node.initialize(shares, threshold)
    except AlreadyInitialized:
        raise ValidationException("Keyhive is already initialized") from None
    return {
        # With an HSM seal the shares only recover (authorize operator actions): they are named so.
        ("recovery_shares" if node.hsm is not None else "shares"): result.shares,
        "threshold": result.threshold,
        "access_key_id": result.access_key.access_key_id,
        "secret_access_key": result.access_key.secret_access_key,
    }


def _keyring(node: Node, action: str) -> dict[str, Any]:
    """rotate: a new barrier term; rewrap: re-wrap every old-term record, then retire unused terms."""
    if action == "rotate":
        term = node.rotate_barrier()  # active once durable, with this request's event
        return {"active_term": term, "oldest_term": node.barrier.terms[1], "rewrapped": 0, "retired_terms": [],
                "encryptions_under_active_term": 0}
    retired: list[int] = []
    rewrapped = 0
    if action == "rewrap":
        while True:
            done, gone = node.rewrap_and_retire()
            rewrapped, retired = rewrapped + done, retired + gone
            if not done:
                break
    active, oldest = node.barrier.terms
    return {"active_term": active, "oldest_term": oldest, "rewrapped": rewrapped, "retired_terms": retired,
            "encryptions_under_active_term": node.barrier.encryptions}


def _migrate(node: Node, doc: dict[str, Any]) -> dict[str, Any]:
    to, shares = doc.get("to"), doc.get("shares")
    if to not in ("shamir", "pkcs11"):
        raise ValidationException("'to' must be shamir or pkcs11")
    if not isinstance(shares, list) or not all(isinstance(s, str) for s in shares):
        raise ValidationException("'shares' must be a list of strings")
    try:
        node.migrate_seal(to, shares)
    except NotInitialized:
        raise ValidationException("Keyhive is not initialized.") from None
    except SealError as exc:
        raise ValidationException(f"Seal migration refused: {exc}") from None
    return {"seal_type": to}


def _rekey(node: Node, doc: dict[str, Any]) -> dict[str, Any]:
    old, shares, threshold = doc.get("old_shares"), doc.get("shares"), doc.get("threshold")
    if not isinstance(old, list) or not all(isinstance(s, str) for s in old):
        raise ValidationException("'old_shares' must be a list of strings")
    _check_shares(shares, threshold)
    try:
        new = node.rekey(old, shares, threshold)
    except NotInitialized:
        raise ValidationException("Keyhive is not initialized.") from None
    except SealError as exc:
        raise ValidationException(f"Rekey refused: {exc}") from None
    return {"shares": new, "threshold": threshold}


def _check_shares(shares: Any, threshold: Any) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shares, threshold)):
        raise ValidationException("'shares' and 'threshold' must be integers")
    if not (shares == threshold == 1 or 2 <= threshold <= shares <= 255):
        raise ValidationException("Need 2 <= threshold <= shares <= 255 (or 1 of 1)")


def _unseal(node: Node, doc: dict[str, Any]) -> dict[str, Any]:
    share = doc.get("share")
    if not isinstance(share, str):
        raise ValidationException("'share' must be a string")
    try:
        node.submit_share(share)
    except NotInitialized:
        raise ValidationException("Keyhive is not initialized; run 'keyhive operator init' first.") from None
    except SealError as exc:
        raise ValidationException(f"Unseal failed: {exc}; progress was reset.") from None
    return node.status()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise SerializationException("Malformed JSON in the request body") from None
    if not isinstance(doc, dict):
        raise SerializationException("The request body must be a JSON object")
    return doc
