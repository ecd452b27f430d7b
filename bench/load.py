"""A small, bounded HTTP/1.1 load generator for signed KMS requests.

Each connection replays one pre-signed request (Signature V4 stays valid for
five minutes) with keep-alive, for a fixed duration; latencies are recorded per
response.  It stops by itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

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


async def _connection(host: str, port: int, payload: bytes, stop_at: float, out: Result) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(payload)
            status_line = await reader.readline()
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            out.latencies.append(time.perf_counter() - started)
            out.requests += 1
            if b" 200 " not in status_line:
                out.errors += 1
            if close:  # servers without keep-alive (moto's werkzeug): reconnect
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _run(endpoint: str, payload: bytes, concurrency: int, seconds: float) -> Result:
    parts = urlsplit(endpoint)
    out = Result(0, 0, seconds, [])
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_connection(parts.hostname or "127.0.0.1", parts.port or 80, payload, stop_at, out)
                           for _ in range(concurrency)))
    return out


def drive(endpoint: str, payload: bytes, concurrency: int, seconds: float) -> Result:
    return asyncio.run(_run(endpoint, payload, concurrency, seconds))
