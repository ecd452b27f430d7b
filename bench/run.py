"""The issue-8 suite: Keyhive against its ceiling and against moto, same signed load, one run.

    .venv/bin/python bench/run.py [--seconds 5] [--connections 64] [--keys 100000] [--quick]

One server at a time has the machine; each cell is a warm-up, then ``--seconds`` of
load on ``--connections`` keep-alive connections, every request pre-signed with
Signature V4 (32-byte plaintext; AES_256 data keys):

    empty app 1|2 workers    bench/empty_app.py on uvicorn + uvloop + httptools: the ceiling
    keyhive 1 worker         keyhive server --dev --workers 1: Encrypt, Decrypt, GenerateDataKey,
                             Encrypt under a ten-statement key policy, CreateKey (SQLite, durable);
                             then --keys keys stored: Encrypt on 1 key and over 1,000 keys, and the
                             memory per key (RSS of restarted workers: 2 keys, --keys keys,
                             after using --memory-keys of them)
    keyhive 2 workers        Encrypt, GenerateDataKey
    keyhive relaxed          --audit-durability relaxed, 1 worker: Encrypt
    moto                     python -m moto.server: Encrypt, Decrypt, GenerateDataKey

The load comes from wrk (installed from Debian when missing and run as root) with a Lua
script of the pre-signed requests, else from Python asyncio processes (``--generator``).
Each cell reports requests/s, p50, p99, errors, the server's CPU per request (its
process tree, from /proc), and the cores used by the server, the generator and the
rest of the machine.  Then the ratios issue 8 sets targets for, each PASS or FAIL.
Servers stop at the end, also on error.  Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    AKID,
    BENCH,
    KEYHIVE_ENV,
    SECRET,
    Measured,
    PythonGenerators,
    Wrk,
    children,
    find_wrk,
    free_port,
    keyhive,
    machine_line,
    rss_bytes,
    server,
    start,
    status,
    tree_cpu_seconds,
)
from load import send_each, signed_request

__all__ = ["AKID", "SECRET", "free_port", "start"]  # bench/sign.py imports these from here

# Targets, from issue 8 ("Targets (each as a ratio measured in the same run)").
KEYHIVE_OVER_MOTO = 40.0  # "at least 40x moto's throughput at 64 concurrent clients"
KEYHIVE_OVER_EMPTY_APP = 0.60  # "at least 60% of the empty ASGI app's throughput on the same worker count"
P99_OVER_EMPTY_APP = 2.0  # "p99 latency at 64 concurrent clients no more than twice the empty app's p99"
TWO_WORKERS_OVER_ONE = 1.6  # "two workers give at least 1.6x one worker on this 2-core machine"
CREATE_KEYS_PER_SECOND = 1000.0  # "CreateKey at least 1,000/s on SQLite (durable)"
MANY_KEYS_OVER_ONE = 0.90  # "unchanged (within noise)": cells of one run differ by up to ~10% here

DISTURBED_CORES = 0.3  # a cell in which other processes took more is measured again (``--retries``)

SPREAD_KEYS = 1000  # distinct keys the "many keys" Encrypt cycles through
MEMORY_STEPS = 4  # used keys are touched in steps; the slope of the later ones is the cost per key
CREATE_CHUNK = 10_000  # CreateKey requests signed at once (a signature is valid 5 minutes)
CHUNK_TIMEOUT_SECONDS = 280  # a chunk must finish while its signature is valid
PLAINTEXT = base64.b64encode(b"x" * 32).decode()
OPERATIONS = ("Encrypt", "Decrypt", "GenerateDataKey")
CEILING = "Encrypt (any reply 200)"  # the empty app's cell


def kms_client(endpoint: str) -> object:
    return boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=AKID, aws_secret_access_key=SECRET)


def sign(endpoint: str, operation: str, body: dict[str, object]) -> bytes:
    return signed_request(endpoint, operation, json.dumps(body).encode(), AKID, SECRET)


def encrypt_body(key_id: str) -> dict[str, object]:
    return {"KeyId": key_id, "Plaintext": PLAINTEXT}


def ten_statement_policy(account: str) -> str:
    """A key policy of ten statements whose only match for the caller is the last one."""
    statements = [
        {"Sid": f"Other{i}", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{444455556660 + i}:root"},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringEquals": {f"kms:EncryptionContext:app{i}": "x"}}}
        for i in range(9)
    ]
    statements.append({"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                       "Action": "kms:*", "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def crypto_bodies(endpoint: str) -> tuple[str, dict[str, dict[str, object]]]:
    """A new key and the bodies of Encrypt, Decrypt (of its ciphertext) and GenerateDataKey on it."""
    kms = kms_client(endpoint)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x" * 32)["CiphertextBlob"]  # type: ignore[attr-defined]
    return key_id, {
        "Encrypt": encrypt_body(key_id),
        "Decrypt": {"CiphertextBlob": base64.b64encode(blob).decode()},
        "GenerateDataKey": {"KeyId": key_id, "KeySpec": "AES_256"},
    }


# -- cells -------------------------------------------------------------------------------
@dataclass
class Cell:
    server: str
    workers: int
    operation: str
    m: Measured
    failure: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.failure or self.m.errors or not self.m.requests)

    @property
    def other_cores(self) -> float:
        """Cores that neither the server nor the generator used: other users of the machine, the kernel."""
        if len(self.m.usage) < 3:
            return 0.0
        wall, busy, srv = self.m.usage[:3]
        return (busy - srv - self.m.generator_cpu) / wall

    def row(self) -> str:
        m, n = self.m, max(self.m.requests, 1)
        wall, srv = (m.usage[0], m.usage[2]) if len(m.usage) >= 3 else (1.0, 0.0)
        text = (f"| {self.server:<15} | {self.workers:>1} | {self.operation:<36} | {m.rate:>6.0f} | {m.p50_ms:>6.2f} "
                f"| {m.p99_ms:>7.2f} | {m.errors:>6} | {srv / n * 1000:>10.3f} | {srv / wall:>9.2f} "
                f"| {m.generator_cpu / wall:>9.2f} | {self.other_cores:>11.2f} |")
        return text + (f" FAILED: {self.failure}" if self.failure else "")


HEADER = (f"| {'server':<15} | w | {'operation':<36} | {'req/s':>6} | {'p50 ms':>6} | {'p99 ms':>7} | {'errors':>6} "
          f"| {'srv ms/req':>10} | {'srv cores':>9} | {'gen cores':>9} | {'other cores':>11} |\n"
          f"|{'-' * 17}|---|{'-' * 38}|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|{'-' * 7}:|{'-' * 11}:|{'-' * 10}:"
          f"|{'-' * 10}:|{'-' * 12}:|")


class Generator(Protocol):
    """What a cell needs of a load generator (``common.Wrk``, ``common.PythonGenerators``)."""

    name: str

    def run(self, endpoint: str, requests: Sequence[bytes], seconds: float, watch: list[list[int]]) -> Measured:
        """Drive ``endpoint`` for ``seconds``; the CPU of each group of process trees in ``watch`` too."""


@dataclass
class Bench:
    generator: Generator
    seconds: float
    warmup: float
    retries: int
    cells: list[Cell] = field(default_factory=list)

    def cell(self, server_name: str, workers: int, operation: str, endpoint: str,
             requests: Callable[[], Sequence[bytes]], pid: int) -> Cell:
        """Warm up, then measure ``requests`` (signed afresh for each run) against the tree of ``pid``; again,
        up to ``retries`` times, while other processes took more than ``DISTURBED_CORES``: the least disturbed."""
        attempts: list[Cell] = []
        for _ in range(1 + self.retries):
            try:
                if self.warmup > 0:
                    self.generator.run(endpoint, requests(), self.warmup, [])
                measured = self.generator.run(endpoint, requests(), self.seconds, [[pid]])
                attempts.append(Cell(server_name, workers, operation, measured))
            except (OSError, EOFError, ValueError, RuntimeError, TimeoutError) as exc:  # refused, reset, dead
                measured = Measured(0, 0, self.seconds, float("nan"), float("nan"), 0.0, [])
                attempts.append(Cell(server_name, workers, operation, measured, f"{type(exc).__name__}: {exc}"))
                break
            if attempts[-1].other_cores <= DISTURBED_CORES:
                break
            print(f"# {server_name} {workers} {operation}: other processes took {attempts[-1].other_cores:.2f} "
                  "cores, measuring again", flush=True)
        cell = min(attempts, key=lambda c: (bool(c.failure), c.other_cores))
        self.cells.append(cell)
        print(cell.row(), flush=True)
        return cell

    def find(self, server_name: str, workers: int, operation: str) -> Cell | None:
        return next((c for c in self.cells if (c.server, c.workers, c.operation) == (server_name, workers, operation)
                     and c.m.requests), None)


# -- servers -----------------------------------------------------------------------------
@contextlib.contextmanager
def empty_app(port: int, workers: int, workdir: Path) -> Iterator[int]:
    argv = [sys.executable, "-m", "uvicorn", "empty_app:app", "--app-dir", str(BENCH), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--lifespan", "off", "--log-level", "warning"]
    with server(argv, f"http://127.0.0.1:{port}/", (200,), workdir / f"empty-{port}.log") as pid:
        yield pid


@contextlib.contextmanager
def moto(port: int, workdir: Path) -> Iterator[int]:
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with server(argv, f"http://127.0.0.1:{port}/moto-api/", (200,), workdir / f"moto-{port}.log") as pid:
        yield pid


def keyhive_setup(workdir: Path, name: str, workers: int, *extra: str) -> tuple[int, contextlib.AbstractContextManager[int]]:
    port, data = free_port(), workdir / name
    data.mkdir()
    return port, keyhive(port, workdir, "--dev", "--data-dir", str(data), "--workers", str(workers), *extra,
                         env=KEYHIVE_ENV)


def restart_worker(supervisor: int, endpoint: str) -> int:
    """TERM the only worker of ``supervisor``; the supervisor forks a new one (unsealed, caches empty). Its pid."""
    (old,) = children(supervisor)
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = [p for p in children(supervisor) if p != old]
        if new:
            with contextlib.suppress(OSError):
                if status(endpoint + "/keyhive/health") == 200:
                    return new[0]
        time.sleep(0.1)
    raise RuntimeError("the worker did not come back after SIGTERM")


# -- the Keyhive parts -------------------------------------------------------------------
@dataclass
class KeyCount:
    """The key-count part: keys stored, how long creating them took, and worker RSS figures."""

    stored: int = 0
    created: int = 0
    create_seconds: float = 0.0
    create_errors: int = 0
    rss_empty: int = 0  # a restarted worker's RSS, 2 keys stored
    rss_stored: int = 0  # a restarted worker's RSS, ``stored`` keys stored (its scheduler pass read them all)
    rss_steps: list[int] = field(default_factory=list)  # a restarted worker, then after each step of used keys
    step_keys: int = 0
    memory_stored: int = 0  # keys stored when the used keys' memory was measured
    notes: list[str] = field(default_factory=list)

    @property
    def per_stored_key(self) -> float | None:
        if not (self.rss_empty and self.rss_stored and self.stored > 2):
            return None
        return (self.rss_stored - self.rss_empty) / (self.stored - 2)

    @property
    def per_used_key(self) -> float | None:
        """The slope over the second half of the steps: the first steps fill memory the allocator already holds."""
        if len(self.rss_steps) != MEMORY_STEPS + 1 or not self.step_keys:
            return None
        half = MEMORY_STEPS // 2
        return (self.rss_steps[-1] - self.rss_steps[half]) / (self.step_keys * (MEMORY_STEPS - half))


def create_keys(endpoint: str, count: int, connections: int, keep: int, out: KeyCount) -> list[str]:
    """``count`` CreateKey requests, signed afresh every ``CREATE_CHUNK``; the ids of the first ``keep`` keys."""
    ids: list[str] = []
    started, remaining = time.monotonic(), count
    while remaining > 0:
        chunk = min(CREATE_CHUNK, remaining)
        result = send_each(endpoint, [sign(endpoint, "CreateKey", {})] * chunk, connections,
                           keep_bodies=len(ids) < keep, timeout=CHUNK_TIMEOUT_SECONDS)
        for body in result.bodies:
            with contextlib.suppress(ValueError, KeyError):
                ids.append(json.loads(body)["KeyMetadata"]["KeyId"])
        out.stored += result.requests - result.errors
        out.created += result.requests - result.errors
        out.create_errors += result.errors
        remaining -= chunk
        if result.errors:
            out.notes.append(f"{result.errors} CreateKey requests failed; stopped creating")
            break
    out.create_seconds += time.monotonic() - started
    return ids[:keep]


def restarted_rss(endpoint: str, supervisor: int, key_id: str, connections: int) -> tuple[int, int]:
    """Restart the worker, let its first scheduler pass end (it reads every stored key), warm it
    (DescribeKey + Encrypt on ``key_id``, 4,000 requests); (its pid, its RSS)."""
    worker = restart_worker(supervisor, endpoint)
    wait_idle(worker)
    warm = [sign(endpoint, "DescribeKey", {"KeyId": key_id}), sign(endpoint, "Encrypt", encrypt_body(key_id))]
    send_each(endpoint, warm * 2000, connections, timeout=CHUNK_TIMEOUT_SECONDS)  # the runtime's own growth
    wait_idle(worker)
    return worker, rss_bytes(worker)


def wait_idle(pid: int, timeout: float = 120.0) -> None:
    """Until ``pid`` uses under 5% of a core over half a second (a new worker's first pass has ended)."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds([pid])
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds([pid])
        if now - before < 0.025:
            return
        before = now


def used_key_memory(endpoint: str, supervisor: int, ids: list[str], connections: int, out: KeyCount) -> None:
    """On a restarted worker, DescribeKey + Encrypt on ``ids[1:]`` in ``MEMORY_STEPS`` steps; RSS after each."""
    worker, rss = restarted_rss(endpoint, supervisor, ids[0], connections)
    out.rss_steps, out.step_keys, out.memory_stored = [rss], (len(ids) - 1) // MEMORY_STEPS, out.stored
    for step in range(MEMORY_STEPS):
        keys = ids[1 + step * out.step_keys:1 + (step + 1) * out.step_keys]
        requests = [r for k in keys for r in (sign(endpoint, "DescribeKey", {"KeyId": k}),
                                              sign(endpoint, "Encrypt", encrypt_body(k)))]
        result = send_each(endpoint, requests, connections, timeout=CHUNK_TIMEOUT_SECONDS)
        out.rss_steps.append(rss_bytes(worker))
        if result.errors:
            out.notes.append(f"{result.errors} of the memory probe's requests failed")


def keyhive_one_worker(bench: Bench, workdir: Path, keys: int, memory_keys: int, connections: int) -> KeyCount:
    """Encrypt, Decrypt, GenerateDataKey and the ten-statement policy with 2 keys stored; the memory of used
    keys (``memory_keys`` stored); then ``keys`` stored (CreateKey through the server): Encrypt on 1 key, the
    memory of stored keys, Encrypt over ``SPREAD_KEYS`` keys; last the CreateKey cell."""
    port, running = keyhive_setup(workdir, "keyhive-1", 1)
    endpoint = f"http://127.0.0.1:{port}"
    count = KeyCount(stored=2)
    with running as pid:
        key_id, bodies = crypto_bodies(endpoint)
        policy_key = kms_client(endpoint).create_key(  # type: ignore[attr-defined]
            Policy=ten_statement_policy("111122223333"), BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["KeyId"]
        for op, body in bodies.items():
            bench.cell("keyhive", 1, op, endpoint, lambda op=op, body=body: [sign(endpoint, op, body)], pid)
        bench.cell("keyhive", 1, "Encrypt (10-statement policy)", endpoint,
                   lambda: [sign(endpoint, "Encrypt", encrypt_body(policy_key))], pid)

        print(f"# creating keys up to {keys:,} through CreateKey on {connections} connections ...", flush=True)
        try:
            count.rss_empty = restarted_rss(endpoint, pid, key_id, connections)[1]
            ids = create_keys(endpoint, memory_keys + 1, connections, memory_keys + 1, count)
            used_key_memory(endpoint, pid, ids, connections, count)
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            count.notes.append(f"memory of used keys not measured: {type(exc).__name__}: {exc}")
            ids = []
        if not count.create_errors:
            create_keys(endpoint, keys - count.stored, connections, 0, count)
        print(f"# {count.stored:,} keys stored: {count.created:,} created in {count.create_seconds:.0f} s "
              f"({count.created / max(count.create_seconds, 1e-9):.0f}/s)", flush=True)
        label = f"{count.stored // 1000}k keys stored"
        bench.cell("keyhive", 1, f"Encrypt 1 key, {label}", endpoint,
                   lambda: [sign(endpoint, "Encrypt", encrypt_body(key_id))], pid)
        try:
            count.rss_stored = restarted_rss(endpoint, pid, key_id, connections)[1]
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            count.notes.append(f"memory of stored keys not measured: {type(exc).__name__}: {exc}")
        if len(ids) >= SPREAD_KEYS:
            spread = ids[:SPREAD_KEYS]
            bench.cell("keyhive", 1, f"Encrypt {SPREAD_KEYS:,} keys, {label}", endpoint,
                       lambda: [sign(endpoint, "Encrypt", encrypt_body(k)) for k in spread], pid)
        bench.cell("keyhive", 1, "CreateKey", endpoint, lambda: [sign(endpoint, "CreateKey", {})], pid)
    return count


def keyhive_two_workers(bench: Bench, workdir: Path) -> None:
    port, running = keyhive_setup(workdir, "keyhive-2", 2)
    endpoint = f"http://127.0.0.1:{port}"
    with running as pid:
        _, bodies = crypto_bodies(endpoint)
        for op in ("Encrypt", "GenerateDataKey"):
            bench.cell("keyhive", 2, op, endpoint, lambda op=op: [sign(endpoint, op, bodies[op])], pid)


def keyhive_relaxed(bench: Bench, workdir: Path) -> None:
    port, running = keyhive_setup(workdir, "keyhive-relaxed", 1, "--audit-durability", "relaxed")
    endpoint = f"http://127.0.0.1:{port}"
    with running as pid:
        _, bodies = crypto_bodies(endpoint)
        bench.cell("keyhive relaxed", 1, "Encrypt", endpoint, lambda: [sign(endpoint, "Encrypt", bodies["Encrypt"])],
                   pid)


def ceiling(bench: Bench, workdir: Path, workers: int) -> None:
    """The empty app, answering the same signed Encrypt request (any body would do)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with empty_app(port, workers, workdir) as pid:
        bench.cell("empty app", workers, CEILING, endpoint,
                   lambda: [sign(endpoint, "Encrypt", encrypt_body("1234abcd-12ab-34cd-56ef-1234567890ab"))], pid)


def moto_cells(bench: Bench, workdir: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with moto(port, workdir) as pid:
        _, bodies = crypto_bodies(endpoint)
        for op in OPERATIONS:
            bench.cell("moto", 1, op, endpoint, lambda op=op: [sign(endpoint, op, bodies[op])], pid)


# -- the report --------------------------------------------------------------------------
def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ratios(bench: Bench, count: KeyCount) -> list[str]:
    lines: list[str] = []

    def rate(server_name: str, workers: int, op: str) -> float | None:
        cell = bench.find(server_name, workers, op)
        return cell.m.rate if cell else None

    def line(label: str, value: float | None, target: str, ok: Callable[[float], bool], unit: str = "") -> None:
        if value is None:
            lines.append(f"- {label}: not measured (target {target}) FAIL")
        else:
            lines.append(f"- {label}: {value:.2f}{unit} (target {target}) {verdict(ok(value))}")

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for op in OPERATIONS:
        line(f"Keyhive / moto, {op}", over(rate("keyhive", 1, op), rate("moto", 1, op)),
             f">= {KEYHIVE_OVER_MOTO:.0f}x", lambda v: v >= KEYHIVE_OVER_MOTO, "x")
    for workers, ops in ((1, OPERATIONS), (2, ("Encrypt", "GenerateDataKey"))):
        for op in ops:
            line(f"Keyhive / empty app, {plural(workers, 'worker')}, {op}",
                 over(rate("keyhive", workers, op), rate("empty app", workers, CEILING)),
                 f">= {KEYHIVE_OVER_EMPTY_APP:.2f}", lambda v: v >= KEYHIVE_OVER_EMPTY_APP)
    for workers, ops in ((1, OPERATIONS), (2, ("Encrypt", "GenerateDataKey"))):
        for op in ops:
            kh, empty = bench.find("keyhive", workers, op), bench.find("empty app", workers, CEILING)
            line(f"Keyhive p99 / empty app p99, {plural(workers, 'worker')}, {op}",
                 over(kh.m.p99_ms, empty.m.p99_ms) if kh and empty else None,
                 f"<= {P99_OVER_EMPTY_APP:.0f}", lambda v: v <= P99_OVER_EMPTY_APP)
    for op in ("Encrypt", "GenerateDataKey"):
        line(f"Keyhive 2 workers / 1 worker, {op}", over(rate("keyhive", 2, op), rate("keyhive", 1, op)),
             f">= {TWO_WORKERS_OVER_ONE}", lambda v: v >= TWO_WORKERS_OVER_ONE)
    one, two = bench.find("keyhive", 1, "Encrypt"), bench.find("keyhive", 2, "Encrypt")
    if one and two and one.m.usage and two.m.usage:
        lines.append(f"  (accounted for: Encrypt with 1 worker used {one.m.usage[2] / one.m.usage[0]:.2f} server cores, "
                     f"with 2 workers {two.m.usage[2] / two.m.usage[0]:.2f}; the generator took "
                     f"{two.m.generator_cpu / two.m.usage[0]:.2f} cores of the {os.cpu_count()} beside them; "
                     f"server CPU per request {one.m.usage[2] / one.m.requests * 1000:.3f} ms -> "
                     f"{two.m.usage[2] / two.m.requests * 1000:.3f} ms)")
    line("CreateKey/s, 1 worker, SQLite durable", rate("keyhive", 1, "CreateKey"), f">= {CREATE_KEYS_PER_SECOND:.0f}",
         lambda v: v >= CREATE_KEYS_PER_SECOND, "/s")
    label = f"{count.stored // 1000}k keys stored"
    many = bench.find("keyhive", 1, f"Encrypt {SPREAD_KEYS:,} keys, {label}")
    one_key = bench.find("keyhive", 1, f"Encrypt 1 key, {label}")
    line(f"Encrypt over {SPREAD_KEYS:,} keys with {count.stored:,} stored / Encrypt on 1 key with 2 stored",
         over(many.m.rate if many else None, rate("keyhive", 1, "Encrypt")), f">= {MANY_KEYS_OVER_ONE:.2f} (~1.0)",
         lambda v: v >= MANY_KEYS_OVER_ONE)
    if one_key and (base := rate("keyhive", 1, "Encrypt")):
        lines.append(f"  (Encrypt on 1 key with {count.stored:,} stored / with 2 stored: {one_key.m.rate / base:.2f})")
    mib = [f"{r / 2**20:.1f}" for r in count.rss_steps]
    if (stored := count.per_stored_key) is not None:
        lines.append(f"- memory per stored key: {stored:,.0f} bytes (RSS of a restarted worker, whose scheduler pass "
                     f"reads and caches every key's metadata: {count.rss_empty / 2**20:.1f} MiB with 2 keys, "
                     f"{count.rss_stored / 2**20:.1f} MiB with {count.stored:,}) (measured; no target)")
    if (used := count.per_used_key) is not None:
        lines.append(f"- memory per used key: {used:,.0f} bytes (material and authorization caches: DescribeKey + "
                     f"Encrypt on {count.step_keys * MEMORY_STEPS:,} keys in {MEMORY_STEPS} steps on a restarted worker, "
                     f"{count.memory_stored:,} stored, RSS {' -> '.join(mib)} MiB; slope of the last "
                     f"{MEMORY_STEPS - MEMORY_STEPS // 2} steps) (measured; no target)")
    if stored is not None and used is not None:
        lines.append(f"- memory per cached key, both: {stored + used:,.0f} bytes; "
                     f"{(stored + used) * count.stored / 2**20:,.0f} MiB per worker for {count.stored:,} keys")
    lines += [f"- note: {note}" for note in count.notes]
    policy, default = rate("keyhive", 1, "Encrypt (10-statement policy)"), rate("keyhive", 1, "Encrypt")
    relaxed = rate("keyhive relaxed", 1, "Encrypt")
    if policy and default:
        lines.append(f"- Encrypt, ten-statement key policy / default policy: {policy / default:.2f} (no target)")
    if relaxed and default:
        lines.append(f"- Encrypt, durable audit trail / relaxed trail: {default / relaxed:.2f} (no target)")
    return lines


def generator_report(bench: Bench) -> str:
    ceiling = max((c for c in bench.cells if c.server == "empty app" and c.m.requests), key=lambda c: c.m.rate,
                  default=None)
    served = [c for c in bench.cells if c.server != "empty app" and c.m.requests and c.m.usage]
    if ceiling is None:
        return f"generator ({bench.generator.name}): no ceiling measured"
    per_request = ceiling.m.generator_cpu / ceiling.m.requests * 1e6
    most = max((c.m.generator_cpu / c.m.usage[0] for c in served), default=0.0)
    return (f"generator ({bench.generator.name}): {ceiling.m.rate:,.0f} req/s against the empty app "
            f"({ceiling.workers} workers) at {per_request:.1f} us of its CPU per request, "
            f"{ceiling.m.generator_cpu / ceiling.m.usage[0]:.2f} cores; at most {most:.2f} cores in the other cells")


# -- the run -----------------------------------------------------------------------------
@contextlib.contextmanager
def load_generator(kind: str, connections: int, threads: int, processes: int, workdir: Path) -> Iterator[Generator]:
    binary = find_wrk(install=True) if kind in ("auto", "wrk") else None
    if binary:
        yield Wrk(binary, threads, connections, workdir)
        return
    if kind == "wrk":
        raise SystemExit("wrk is not installed and could not be installed (apt-get install wrk, as root)")
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        yield PythonGenerators(pool, processes, connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell (default 1)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--keys", type=int, default=100_000, help="keys stored for the key-count cells (default 100000)")
    parser.add_argument("--memory-keys", type=int, default=10_000, help="keys touched to measure memory (default 10000)")
    parser.add_argument("--quick", action="store_true", help="2 s cells, 10,000 keys, 2,000 for memory")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk (installed if missing, as root), Python processes, or wrk when available (default)")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"measure a cell again when other processes took more than {DISTURBED_CORES} cores "
                             "(default 2 more times at most; the least disturbed attempt is kept)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--generators", type=int, default=2, help="Python generator processes (default 2)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.keys, args.memory_keys = 2.0, 10_000, 2_000
    memory_keys = max(args.memory_keys, SPREAD_KEYS)

    started = time.monotonic()
    print(f"# {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="keyhive-bench-") as tmp, \
            load_generator(args.generator, args.connections, args.threads, args.generators, Path(tmp)) as generator:
        workdir = Path(tmp)
        print(f"# load: {generator.name}, {args.connections} keep-alive connections, pre-signed SigV4 requests; "
              f"{args.seconds:g} s per cell after {args.warmup:g} s warm-up; 32-byte plaintext; one server at a time")
        print("# srv ms/req: CPU of the server's process tree per request; cores: CPU seconds per second of the "
              f"server, the generator and everything else (of {os.cpu_count()})")
        print(HEADER, flush=True)
        bench = Bench(generator, args.seconds, args.warmup, args.retries)
        for workers in (1, 2):
            ceiling(bench, workdir, workers)
        count = keyhive_one_worker(bench, workdir, args.keys, memory_keys, args.connections)
        keyhive_two_workers(bench, workdir)
        keyhive_relaxed(bench, workdir)
        moto_cells(bench, workdir)
    print()
    print("\n".join(ratios(bench, count)))
    print(generator_report(bench))
    print(f"# {time.monotonic() - started:.0f} s in all")
    failed = [c for c in bench.cells if c.failed]
    if failed or count.create_errors:
        print(f"NOT ALL REQUESTS SUCCEEDED: {', '.join(f'{c.server} {c.workers} {c.operation}' for c in failed)}"
              + (f"; {count.create_errors} CreateKey" if count.create_errors else ""))
        raise SystemExit(1)
    print("every request succeeded")


if __name__ == "__main__":
    main()
