"""The ASGI application: AWS JSON 1.1 for KMS, plus Keyhive's admin API.

    POST /                          KMS (X-Amz-Target: TrentService.<Operation>, SigV4)
    GET  /keyhive/health            200 unsealed, 503 sealed, 501 not initialized
    GET  /keyhive/v1/sys/status     seal status (always 200)
    POST /keyhive/v1/sys/init       {"shares", "threshold"} -> shares + first admin, once
    POST /keyhive/v1/sys/unseal     {"share"} -> status
    POST /keyhive/v1/sys/seal       SigV4-signed by an admin

Every failure is an AWS-shaped ``{"__type", "message"}`` body; anything
unexpected becomes KMSInternalException, with its detail in the server log only.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from keyhive import limits
from keyhive.errors import (
    AccessDeniedException,
    InvalidSignatureException,
    KeyhiveError,
    KMSInternalException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
    wire_error,
)
from keyhive.node import AlreadyInitialized, Node, NotInitialized
from keyhive.protocol import sigv4
from keyhive.protocol.shapes import encode_response, parse_request
from keyhive.scheduler import run_forever
from keyhive.seal import SealError
from keyhive.service import OPERATIONS, Caller, Context

log = logging.getLogger("keyhive.protocol")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_11 = b"application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."
ADMIN_PREFIX = "/keyhive/v1/sys/"


class Reply:
    __slots__ = ("status", "body", "content_type")

    def __init__(self, status: int, body: bytes, content_type: bytes = JSON_11) -> None:
        self.status, self.body, self.content_type = status, body, content_type


def _error_reply(exc: KeyhiveError) -> Reply:
    status, body = wire_error(exc)
    return Reply(status, json.dumps(body).encode())


def _json_reply(status: int, doc: dict[str, Any]) -> Reply:
    return Reply(status, json.dumps(doc).encode(), b"application/json")


class KeyhiveApp:
    def __init__(
        self,
        node: Node,
        *,
        clock: Callable[[], float] = time.time,
        regions: frozenset[str] | None = None,
        scheduler_interval: float = 60.0,
    ) -> None:
        self.node = node
        self.clock = clock  # the key life-cycle clock (tests may fix it)
        self.regions = regions  # None: every region
        self.scheduler_interval = scheduler_interval
        self._scheduler: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            body = await _read_body(receive)
            reply = self._route(scope, body)
        except KeyhiveError as exc:
            if exc.log_detail:
                log.error("request %s: %s", request_id, exc.log_detail)
            reply = _error_reply(exc)
        except Exception:
            log.exception("internal error in request %s", request_id)
            reply = _error_reply(KMSInternalException())
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type),
                    (b"content-length", str(len(reply.body)).encode()),
                    (b"x-amzn-requestid", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._scheduler = asyncio.create_task(run_forever(self.node, self.clock, self.scheduler_interval))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._scheduler:
                    self._scheduler.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing --------------------------------------------------------------------
    def _route(self, scope: Scope, body: bytes) -> Reply:
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            return self._kms(scope, body)
        if path == "/keyhive/health" and method in ("GET", "HEAD"):
            status = self.node.status()
            code = 501 if not status["initialized"] else 503 if status["sealed"] else 200
            return _json_reply(code, status)
        if path.startswith(ADMIN_PREFIX):
            return self._admin(scope, path.removeprefix(ADMIN_PREFIX), method, body)
        raise UnknownOperationException()

    def _authenticate(self, scope: Scope, body: bytes) -> Caller:
        def secret_for(access_key_id: str) -> str | None:
            key = self.node.access_key(access_key_id)
            return None if key is None else key.secret_access_key

        signed = sigv4.verify(
            scope["method"],
            scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
            scope.get("query_string", b"").decode("latin-1"),
            scope["headers"],
            body,
            secret_for,
            datetime.datetime.now(datetime.timezone.utc),
        )
        if self.regions is not None and signed.region not in self.regions:
            raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{signed.region}'.")
        key = self.node.access_key(signed.access_key_id)
        assert key is not None  # verify() refuses unknown access keys
        return Caller(key.account, signed.region, key.principal_arn, key.access_key_id)

    def _kms(self, scope: Scope, body: bytes) -> Reply:
        target = _header(scope, b"x-amz-target")
        if not target.startswith(TARGET_PREFIX):
            raise UnknownOperationException()
        name = target.removeprefix(TARGET_PREFIX)
        handler = OPERATIONS.get(name)
        caller = self._authenticate(scope, body)
        request = parse_request(name, body)  # UnknownOperationException if not in the model
        if handler is None:
            raise KMSUnsupported(name)
        ctx = Context(self.node.keystore, caller, self.clock())
        return Reply(200, encode_response(handler(ctx, request)))

    # -- admin API ------------------------------------------------------------------
    def _admin(self, scope: Scope, action: str, method: str, body: bytes) -> Reply:
        if action == "status" and method == "GET":
            return _json_reply(200, self.node.status())
        if method != "POST":
            raise UnknownOperationException()
        doc = _json_object(body)
        if action == "init":
            return self._init(doc)
        if action == "unseal":
            share = doc.get("share")
            if not isinstance(share, str):
                raise ValidationException("'share' must be a string")
            try:
                self.node.submit_share(share)
            except NotInitialized:
                raise ValidationException("Keyhive is not initialized; run 'keyhive operator init' first.") from None
            except SealError as exc:
                raise ValidationException(f"Unseal failed: {exc}; progress was reset.") from None
            return _json_reply(200, self.node.status())
        if action == "seal":
            caller = self._authenticate(scope, body)
            key = self.node.access_key(caller.access_key_id)
            if key is None or not key.admin:
                raise AccessDeniedException(f"User: {caller.principal_arn} is not authorized to seal Keyhive")
            self.node.seal()
            return _json_reply(200, self.node.status())
        raise UnknownOperationException()

    def _init(self, doc: dict[str, Any]) -> Reply:
        shares, threshold = doc.get("shares", 5), doc.get("threshold", 3)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shares, threshold)):
            raise ValidationException("'shares' and 'threshold' must be integers")
        if not (shares == threshold == 1 or 2 <= threshold <= shares <= 255):
            raise ValidationException("Need 2 <= threshold <= shares <= 255 (or 1 of 1)")
        try:
            result = self.node.initialize(shares, threshold)
        except AlreadyInitialized:
            raise ValidationException("Keyhive is already initialized") from None
        return _json_reply(
            200,
            {
                "shares": result.shares,
                "threshold": result.threshold,
                "access_key_id": result.access_key.access_key_id,
                "secret_access_key": result.access_key.secret_access_key,
            },
        )


class KMSUnsupported(KeyhiveError):
    """A KMS operation of the AWS model that this server does not implement yet."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"{operation} is not supported by this Keyhive server.")

    @property
    def wire_type(self) -> str:
        return "UnsupportedOperationException"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        raise SerializationException("Malformed JSON in the request body") from None
    if not isinstance(doc, dict):
        raise SerializationException("The request body must be a JSON object")
    return doc


async def _read_body(receive: Receive) -> bytes:
    """The whole body, or ValidationException once it passes the limit.

    An oversize body is still drained (and dropped) so the client gets an answer
    instead of a reset connection.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limits.MAX_REQUEST_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limits.MAX_REQUEST_BODY_BYTES:
        raise ValidationException(f"Request body exceeds {limits.MAX_REQUEST_BODY_BYTES} bytes")
    return b"".join(chunks)
