"""Benchmark: does Keyhive scale out?  Workers on SQLite, nodes on PostgreSQL, one run.

    .venv/bin/python bench/scale.py [--seconds 5] [--connections 64] [--generators 2]

Drives, one setup at a time, Encrypt (32-byte plaintext) and GenerateDataKey (AES_256):

    sqlite 1 worker     keyhive server --dev --workers 1
    sqlite 2 workers    keyhive server --dev --workers 2   (one port, SO_REUSEPORT)
    postgres 1 node     keyhive server --storage postgresql://... --workers 1
    postgres 2 nodes    two such servers on two ports, same database; the load split evenly

The PostgreSQL server is a throwaway one (``tests/postgres.py``: initdb + pg_ctl on a
free port); the first node is initialized through the admin API (one share) and each
node unsealed on its own.  The load comes from ``--generators`` processes running
``bench/load.py`` (pre-signed SigV4 requests, keep-alive), the connections split
evenly over them; with two nodes, half of the generators drive each node.

Besides requests/s, p50 and p99, each cell reports the CPU it cost, read from
``/proc``: the Keyhive processes' (supervisors and workers) and PostgreSQL's CPU
milliseconds per request, the generators' own CPU (in cores, from
``time.process_time``) and how busy the whole machine was.  A first cell drives a
trivial HTTP server instead of Keyhive: the generators' ceiling on this machine.
The generators share the cores with the servers: on a small machine they compete
with the workers, and the table says by how much.  Everything stops by itself; the
servers and PostgreSQL are stopped at the end, also on error.  Exit status 1 when
any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import pwd
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from common import (
    AKID,
    SECRET,
    START_DELAY_SECONDS,
    STOP_TIMEOUT_SECONDS,
    GeneratorRun,
    commit,
    cpu_model,
    free_port,
    http,
    keyhive,
)
from common import generate as _generate
from common import sample as _sample
from load import Result, signed_request

from tests.postgres import PgCluster, find_bindir

OPERATIONS = ("Encrypt", "GenerateDataKey")


@dataclass
class Cell:
    setup: str
    operation: str
    result: Result
    server_cpu: float  # CPU seconds of the Keyhive processes (or the trivial server)
    db_cpu: float | None  # CPU seconds of PostgreSQL
    generator_cpu: float  # CPU seconds of the generator processes
    busy: float  # CPU seconds the whole machine spent (all cores)
    wall: float  # seconds the measurement lasted
    failure: str = ""

    def row(self) -> str:
        r, n = self.result, max(self.result.requests, 1)
        db = f"{self.db_cpu / n * 1000:.3f}" if self.db_cpu is not None else "-"
        other = self.busy - self.server_cpu - (self.db_cpu or 0.0) - self.generator_cpu
        text = (f"{self.setup:<18} {self.operation:<16} {r.rate:>7.0f} {r.percentile(50):>7.2f} "
                f"{r.percentile(99):>7.2f} {r.errors:>6} {self.server_cpu / n * 1000:>10.3f} {db:>9} "
                f"{self.generator_cpu / self.wall:>9.2f} {other / self.wall:>11.2f} {self.busy / self.wall:>10.2f}")
        return text + (f"  FAILED: {self.failure}" if self.failure else "")


HEADER = (f"{'setup':<18} {'operation':<16} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'srv ms/req':>10} {'db ms/req':>9} {'gen cores':>9} {'other cores':>11} {'busy cores':>10}")


@dataclass
class Bench:
    pool: ProcessPoolExecutor
    generators: int
    connections: int
    seconds: float
    warmup: float
    cells: list[Cell] = field(default_factory=list)

    def _run_generators(self, payloads: dict[str, bytes], seconds: float,
                        measure: list[list[int]] | None = None) -> tuple[list[GeneratorRun], list[float]]:
        """``self.generators`` processes, each on one endpoint in turn, the connections split evenly;
        with ``measure``, the CPU seconds of those process trees (and the machine's) over the run."""
        endpoints = list(payloads)
        start_at = time.time() + START_DELAY_SECONDS
        futures = [self.pool.submit(_generate, endpoints[i % len(endpoints)], payloads[endpoints[i % len(endpoints)]],
                                    self.connections // self.generators, seconds, start_at)
                   for i in range(self.generators)]
        time.sleep(max(0.0, start_at - time.time()))
        before = _sample(measure or [])
        runs = [f.result() for f in futures]
        return runs, [b - a for a, b in zip(before, _sample(measure or []))]

    def cell(self, setup: str, operation: str, payloads: dict[str, bytes], servers: list[int],
             db: int | None = None) -> Cell:
        """Warm up, then measure: the generators' merged result and the CPU each party spent."""
        failure = ""
        try:
            if self.warmup > 0:
                self._run_generators(payloads, self.warmup)
            runs, (wall, busy, server, db_cpu) = self._run_generators(payloads, self.seconds, [servers, [db] if db else []])
        except (OSError, EOFError, ValueError, RuntimeError) as exc:  # reset, refused, dead: say so, go on
            failure = f"{type(exc).__name__}: {exc}"
            runs, (wall, busy, server, db_cpu) = [], (1.0, 0.0, 0.0, 0.0)
        merged = Result(sum(r.result.requests for r in runs), sum(r.result.errors for r in runs), self.seconds,
                        [lat for r in runs for lat in r.result.latencies])
        cell = Cell(setup, operation, merged, server, db_cpu if db else None,
                    sum(r.cpu_seconds for r in runs), busy, wall, failure)
        self.cells.append(cell)
        print(cell.row(), flush=True)
        return cell


# -- servers -----------------------------------------------------------------------------
def _trivial_server(port: int) -> None:
    """A process answering every keep-alive HTTP request with a canned 200: the generators' ceiling."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}"

    class Canned(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length:]
                self.transport.write(reply)  # type: ignore[attr-defined]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve())


@contextlib.contextmanager
def trivial_server(port: int) -> Iterator[int]:
    process = multiprocessing.get_context("fork").Process(target=_trivial_server, args=(port,), daemon=True)
    process.start()
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        assert process.pid is not None
        yield process.pid
    finally:
        process.terminate()
        process.join(STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def postgres() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server (as the ``postgres`` user when we are root), removed at the end."""
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL's server is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="keyhive-bench-pg-"))
    run_as = None
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = "postgres"
    cluster = PgCluster(bindir, root, free_port(), run_as)
    try:
        problem = cluster.start()
        if problem:
            raise SystemExit(f"could not start PostgreSQL: {problem}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def postmaster_pid(cluster: PgCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


# -- requests ----------------------------------------------------------------------------
def create_key(endpoint: str, akid: str, secret: str) -> str:
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id=akid, aws_secret_access_key=secret)
    return str(kms.create_key()["KeyMetadata"]["KeyId"])


def bodies(key_id: str) -> dict[str, bytes]:
    return {
        "Encrypt": json.dumps({"KeyId": key_id, "Plaintext": base64.b64encode(b"x" * 32).decode()}).encode(),
        "GenerateDataKey": json.dumps({"KeyId": key_id, "KeySpec": "AES_256"}).encode(),
    }


def signed(ports: list[int], operation: str, body: bytes, akid: str, secret: str) -> dict[str, bytes]:
    """The request pre-signed for each endpoint (the signature covers the Host header); valid 5 minutes."""
    endpoints = [f"http://127.0.0.1:{port}" for port in ports]
    return {e: signed_request(e, operation, body, akid, secret) for e in endpoints}


def run_setup(bench: Bench, setup: str, ports: list[int], key_id: str, akid: str, secret: str,
              servers: list[int], db: int | None = None) -> None:
    for operation, body in bodies(key_id).items():
        bench.cell(setup, operation, signed(ports, operation, body, akid, secret), servers, db)


# -- the run -----------------------------------------------------------------------------
def sqlite_setups(bench: Bench, workdir: Path) -> None:
    env = {"KEYHIVE_DEV_ACCESS_KEY_ID": AKID, "KEYHIVE_DEV_SECRET_ACCESS_KEY": SECRET}
    for workers in (1, 2):
        port, data = free_port(), workdir / f"sqlite-{workers}"
        data.mkdir()
        with keyhive(port, workdir, "--dev", "--data-dir", str(data), "--workers", str(workers), env=env) as pid:
            key_id = create_key(f"http://127.0.0.1:{port}", AKID, SECRET)
            run_setup(bench, f"sqlite {workers} worker{'s' if workers > 1 else ''}", [port], key_id, AKID, SECRET,
                      [pid])


def postgres_setups(bench: Bench, workdir: Path) -> None:
    with postgres() as cluster:
        cluster.admin("CREATE DATABASE keyhive_bench")
        storage = ["--storage", cluster.url("keyhive_bench"), "--workers", "1"]
        db = postmaster_pid(cluster)
        first, second = free_port(), free_port()
        with keyhive(first, workdir, *storage) as pid1:
            code, init = http(f"http://127.0.0.1:{first}/keyhive/v1/sys/init", {"shares": 1, "threshold": 1})
            if code != 200:
                raise SystemExit(f"init failed: HTTP {code}")
            share, akid, secret = init["shares"][0], str(init["access_key_id"]), str(init["secret_access_key"])  # type: ignore[index]

            def unseal(port: int) -> None:
                code, status = http(f"http://127.0.0.1:{port}/keyhive/v1/sys/unseal", {"share": share})
                if code != 200 or status.get("sealed"):
                    raise SystemExit(f"unseal of the node on port {port} failed: HTTP {code} {status}")

            unseal(first)
            key_id = create_key(f"http://127.0.0.1:{first}", akid, secret)
            run_setup(bench, "postgres 1 node", [first], key_id, akid, secret, [pid1], db)
            with keyhive(second, workdir, *storage) as pid2:
                unseal(second)
                run_setup(bench, "postgres 2 nodes", [first, second], key_id, akid, secret, [pid1, pid2], db)


def ratio(bench: Bench, setup: str, base: str, operation: str) -> float:
    rates = {(c.setup, c.operation): c.result.rate for c in bench.cells}
    return rates[(setup, operation)] / max(rates[(base, operation)], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in all (default 64)")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes (default 2, even)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell (default 1)")
    args = parser.parse_args()
    if args.generators < 2 or args.generators % 2 or args.connections % args.generators:
        parser.error("--generators must be even (two nodes share them) and divide --connections")

    print(f"# {platform.node()}: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}; "
          f"commit {commit()}")
    print(f"# {args.connections} keep-alive connections from {args.generators} generator processes, "
          f"{args.seconds:g} s per cell after {args.warmup:g} s warm-up; 32-byte plaintext; "
          "PostgreSQL nodes run 1 worker each")
    print("# srv/db ms/req: CPU ms per request of the Keyhive processes / of PostgreSQL; gen cores: the "
          "generators' CPU; other cores: everything else (other users of the machine, the kernel); busy cores: "
          f"the whole machine, of {os.cpu_count()}")
    print(HEADER, flush=True)
    started = time.monotonic()
    with ProcessPoolExecutor(args.generators, mp_context=multiprocessing.get_context("fork")) as pool, \
            tempfile.TemporaryDirectory(prefix="keyhive-bench-scale-") as tmp:
        bench = Bench(pool, args.generators, args.connections, args.seconds, args.warmup)
        port = free_port()
        with trivial_server(port) as pid:
            bench.cell("trivial server", "(canned 200)", {f"http://127.0.0.1:{port}": signed_request(
                f"http://127.0.0.1:{port}", "Encrypt", b"{}", AKID, SECRET)}, [pid])
        sqlite_setups(bench, Path(tmp))
        postgres_setups(bench, Path(tmp))

    for operation in OPERATIONS:
        print(f"{operation}: sqlite 2 workers / 1 worker {ratio(bench, 'sqlite 2 workers', 'sqlite 1 worker', operation):.2f}; "
              f"postgres 2 nodes / 1 node {ratio(bench, 'postgres 2 nodes', 'postgres 1 node', operation):.2f}")
    trivial, served = bench.cells[0], [c for c in bench.cells[1:] if c.result.requests]
    if trivial.result.requests and served:
        print(f"generators: {trivial.generator_cpu / trivial.result.requests * 1e6:.0f} us CPU per request, "
              f"{trivial.result.rate:.0f} req/s against a trivial server; against Keyhive they used at most "
              f"{max(c.generator_cpu / c.wall for c in served):.2f} cores")
    print(f"# {time.monotonic() - started:.0f} s in all")
    failed = [c for c in bench.cells if c.failure or c.result.errors or not c.result.requests]
    if failed:
        print(f"NOT ALL REQUESTS SUCCEEDED: {', '.join(f'{c.setup} {c.operation}' for c in failed)}")
        raise SystemExit(1)
    print("every request succeeded")


if __name__ == "__main__":
    main()
