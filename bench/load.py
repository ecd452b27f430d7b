"""A small, bounded HTTP/1.1 load generator for signed KMS requests.

Each connection replays pre-signed requests (Signature V4 stays valid for five
minutes) with keep-alive: for a fixed duration (``drive``), cycling through the
requests given, or each request once (``send_each``).  Latencies are recorded
per response.  It stops by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

DRAIN_SECONDS = 30  # past its duration, a run waiting on a silent server fails (TimeoutError)


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    bodies: list[bytes] = field(default_factory=list)  # kept by ``send_each(keep_bodies=True)`` only

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def signed_request(endpoint: str, target: str, body: bytes, akid: str, secret: str, region: str = "us-east-1") -> bytes:
    request = AWSRequest(
        method="POST", url=endpoint + "/", data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{target}"},
    )
    SigV4Auth(Credentials(akid, secret), "kms", region).add_auth(request)
    host = urlsplit(endpoint).netloc
    lines = ["POST / HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, payload: bytes, out: Result, keep_body: bool) -> None:
        """Send one request, read its reply, record it in ``out``."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(payload)
        status_line = await self.reader.readline()
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        out.latencies.append(time.perf_counter() - started)
        out.requests += 1
        if b" 200 " not in status_line:
            out.errors += 1
        if keep_body:
            out.bodies.append(body)
        if close:  # servers without keep-alive (moto's werkzeug): reconnect next time
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _for_duration(host: str, port: int, payloads: Sequence[bytes], first: int, stop_at: float,
                        out: Result) -> None:
    connection, index = _Connection(host, port), first
    try:
        while time.perf_counter() < stop_at:
            await connection.exchange(payloads[index % len(payloads)], out, False)
            index += 1
    finally:
        connection.close()


async def _until_done(host: str, port: int, todo: Iterator[bytes], out: Result, keep_bodies: bool) -> None:
    connection = _Connection(host, port)
    try:
        for payload in todo:  # one shared iterator: each request goes out once, on some connection
            await connection.exchange(payload, out, keep_bodies)
    finally:
        connection.close()


def _address(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _run(endpoint: str, payloads: Sequence[bytes], concurrency: int, seconds: float) -> Result:
    host, port = _address(endpoint)
    out = Result(0, 0, seconds, [])
    stop_at = time.perf_counter() + seconds
    step = max(1, len(payloads) // concurrency)  # connections start spread over the requests
    await asyncio.wait_for(asyncio.gather(*(_for_duration(host, port, payloads, i * step, stop_at, out)
                                            for i in range(concurrency))), seconds + DRAIN_SECONDS)
    return out


def drive(endpoint: str, payload: bytes | Sequence[bytes], concurrency: int, seconds: float) -> Result:
    """``concurrency`` keep-alive connections sending ``payload`` (or cycling through several) for ``seconds``."""
    return asyncio.run(_run(endpoint, [payload] if isinstance(payload, bytes) else payload, concurrency, seconds))


async def _send_each(endpoint: str, payloads: Sequence[bytes], concurrency: int, keep_bodies: bool,
                     timeout: float | None) -> Result:
    host, port = _address(endpoint)
    out = Result(0, 0, 0.0, [])
    started, todo = time.perf_counter(), iter(payloads)
    await asyncio.wait_for(asyncio.gather(*(_until_done(host, port, todo, out, keep_bodies)
                                            for _ in range(concurrency))), timeout)
    out.seconds = time.perf_counter() - started
    return out


def send_each(endpoint: str, payloads: Sequence[bytes], concurrency: int, keep_bodies: bool = False,
              timeout: float | None = None) -> Result:
    """Every request of ``payloads`` sent once over ``concurrency`` keep-alive connections; with
    ``keep_bodies``, the reply bodies in the order they arrived.  TimeoutError past ``timeout`` seconds."""
    return asyncio.run(_send_each(endpoint, payloads, concurrency, keep_bodies, timeout))
