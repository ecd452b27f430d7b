"""The ASGI application: AWS JSON 1.1 for KMS, plus Keyhive's admin API.

    POST /                  KMS (X-Amz-Target: TrentService.<Operation>, SigV4)
    GET  /keyhive/health    200 unsealed, 503 sealed, 501 not initialized
    /keyhive/v1/...         the admin API (keyhive.protocol.admin)

Every failure is an AWS-shaped ``{"__type", "message"}`` body; anything
unexpected becomes KMSInternalException, with its detail in the server log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from keyhive import limits
from keyhive.audit import unit_of_work
from keyhive.errors import (
    KeyhiveError,
    KMSInternalException,
    UnknownOperationException,
    UnsupportedOperationException,
    ValidationException,
    wire_error,
)
from keyhive.grants import parse_grant_token
from keyhive.node import Node
from keyhive.protocol.admin import handle_admin
from keyhive.protocol.audit_events import Exchange, build_event
from keyhive.protocol.auth import authenticate
from keyhive.protocol.shapes import encode_response, parse_request
from keyhive.scheduler import run_forever
from keyhive.service import OPERATIONS, Context
from keyhive.service.authz import Authorizer

log = logging.getLogger("keyhive.protocol")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_11 = b"application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."
ADMIN_PREFIX = "/keyhive/v1/"


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
        on_start: list[Callable[[], None]] = [],
    ) -> None:
        self.node = node
        self.clock = clock  # the key life-cycle clock (tests may fix it)
        self.regions = regions  # None: every region
        self.scheduler_interval = scheduler_interval
        self.authz = Authorizer(node.iam, node.keystore)
        self._scheduler: asyncio.Task[None] | None = None
        self._on_start = on_start  # called on the event loop once it runs (a worker joins its siblings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        exchange = Exchange(request_id=str(uuid.uuid4()))
        with unit_of_work() as work:
            try:
                body = await _read_body(receive)
                reply = self._route(scope, body, exchange)
            except Exception as exc:
                reply = self._fail(exchange, exc)
        if exchange.event_name:  # every request but health and status probes is audited
            try:
                await self.node.audit.record(build_event(exchange, scope), work)
            except Exception as exc:  # fail closed: no durable event, no success
                reply = self._fail(exchange, exc)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type),
                    (b"content-length", str(len(reply.body)).encode()),
                    (b"x-amzn-requestid", exchange.request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    @staticmethod
    def _fail(exchange: Exchange, exc: Exception) -> Reply:
        if not isinstance(exc, KeyhiveError):
            log.error("internal error in request %s", exchange.request_id, exc_info=exc)
            exc = KMSInternalException()
        elif exc.log_detail:
            log.error("request %s: %s", exchange.request_id, exc.log_detail)
        exchange.error, exchange.response = exc, None
        return _error_reply(exc)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for start in self._on_start:
                    start()
                # Other processes' changes are applied on the loop, between requests: a request
                # never sees a cache half invalidated.
                loop = asyncio.get_running_loop()
                self.node.start_watching(lambda paths: loop.call_soon_threadsafe(self.node.apply_changes, paths))
                self._scheduler = asyncio.create_task(run_forever(self.node, self.clock, self.scheduler_interval))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._scheduler:
                    self._scheduler.cancel()  # it gives up the cluster's scheduler lease on its way out
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._scheduler
                self.node.stop_watching()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing --------------------------------------------------------------------
    def _route(self, scope: Scope, body: bytes, exchange: Exchange) -> Reply:
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            return self._kms(scope, body, exchange)
        if path == "/keyhive/health" and method in ("GET", "HEAD"):
            status = self.node.status()
            code = 501 if not status["initialized"] else 503 if status["sealed"] else 200
            return _json_reply(code, status)
        if path.startswith(ADMIN_PREFIX):
            status, doc = handle_admin(self.node, scope, body, self.regions, exchange, self.authz)
            if isinstance(doc, bytes):
                return Reply(status, doc, b"application/octet-stream")
            return _json_reply(status, doc)
        raise UnknownOperationException()

    def _kms(self, scope: Scope, body: bytes, exchange: Exchange) -> Reply:
        target = _header(scope, b"x-amz-target")
        exchange.event_name = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else ""
        exchange.event_name = exchange.event_name or "UnknownOperation"
        if not target.startswith(TARGET_PREFIX):
            raise UnknownOperationException()
        name = exchange.event_name
        handler = OPERATIONS.get(name)
        exchange.caller = authenticate(self.node, scope, body, self.regions, must_sign=("x-amz-target",))
        exchange.request = parse_request(name, body)  # UnknownOperationException if not in the model
        for token in exchange.request.get("GrantTokens", ()):
            parse_grant_token(token)  # InvalidGrantTokenException; grants themselves apply at once
        if handler is None:
            raise UnsupportedOperationException(f"{name} is not supported by this Keyhive server.")
        ctx = Context(self.node.keystore, exchange.caller, self.clock(), self.authz, exchange.keys_used)
        exchange.response = handler(ctx, exchange.request)
        return Reply(200, encode_response(exchange.response))



def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


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
