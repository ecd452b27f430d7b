"""The ceiling: an ASGI app that does nothing but HTTP.

It reads each request's body and answers 200 with a tiny JSON body, the shape of a
KMS reply.  ``bench/run.py`` serves it with uvicorn, uvloop and httptools, as Keyhive
is served, with one and with two workers::

    .venv/bin/python -m uvicorn empty_app:app --app-dir bench --loop uvloop --http httptools \
        --no-access-log --lifespan off --workers 2
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

BODY = b"{}"
HEADERS = [(b"content-type", b"application/x-amz-json-1.1"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Message, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] != "http":  # lifespan, when not turned off: nothing to start or stop
        return
    while (await receive()).get("more_body", False):  # the request body, read and dropped
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
