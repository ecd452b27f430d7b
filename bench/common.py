"""What the benchmarks share: CPU and memory read from /proc, the machine and commit, servers
started and stopped, and the Python load generators' process body.

Every server is a context manager that stops it (TERM, then KILL) when the block ends, also on
error; each yields the pid of the process tree to account CPU to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from load import Result, drive

AKID, SECRET = "AKIABENCH00000000001", "bench-secret-access-key-000000000000001"
KEYHIVE_ENV = {"KEYHIVE_DEV_ACCESS_KEY_ID": AKID, "KEYHIVE_DEV_SECRET_ACCESS_KEY": SECRET}
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30
START_DELAY_SECONDS = 0.3  # Python generators sleep until a common start instant
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


# -- CPU and memory from /proc ---------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 1 = ppid, 11..14 = u/s/cu/cs time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants, alive or reaped (utime+stime+cutime+cstime)."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        total += sum(int(v) for v in stats[pid][11:15])
        todo += children.get(pid, [])
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """CPU seconds all cores spent busy since boot: user, nice, system, irq, softirq (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in
                                                         Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def sample(groups: list[list[int]]) -> list[float]:
    """[wall seconds, machine CPU seconds, then the CPU seconds of each group of process trees]."""
    return [time.monotonic(), machine_cpu_seconds(), *(tree_cpu_seconds(g) for g in groups)]


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    return sorted(int(p) for p in os.listdir("/proc")
                  if p.isdigit() and (s := _stat(int(p))) is not None and int(s[1]) == pid)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


# -- the machine and the commit ----------------------------------------------------------
def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def commit() -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                         cwd=REPO)
    return git.stdout.strip() or "unknown"


def machine_line() -> str:
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}; "
            f"commit {commit()}")


# -- servers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def status(url: str) -> int:
    """The HTTP status of a GET of ``url`` (the body is not read)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(url: str, statuses: tuple[int, ...], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError):
            if status(url) in statuses:
                return
        time.sleep(0.1)
    raise SystemExit(f"server did not come up ({url}); its log ends:\n{log.read_text(errors='replace')[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL after ``STOP_TIMEOUT_SECONDS``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def server(argv: list[str], probe: str, statuses: tuple[int, ...], log: Path,
           env: dict[str, str] | None = None) -> Iterator[int]:
    """``argv`` running until the block ends, once ``probe`` answers one of ``statuses``; its pid."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   env={**os.environ, **(env or {})}, cwd=REPO)
    try:
        wait_for(probe, statuses, process, log)
        yield process.pid
    finally:
        stop(process)


@contextlib.contextmanager
def keyhive(port: int, workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """A ``keyhive server`` on ``port`` until the block ends (TERM, then KILL); its pid (the supervisor)."""
    argv = [sys.executable, "-m", "keyhive.cli.main", "server", "--port", str(port), "--log-level", "warning", *args]
    with server(argv, f"http://127.0.0.1:{port}/keyhive/health", (200, 501, 503),
                workdir / f"keyhive-{port}.log", env) as pid:
        yield pid


def start(argv: list[str], url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server process, returned once ``url`` answers at all (any HTTP status); the caller stops it."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    for _ in range(START_TIMEOUT_SECONDS * 10):
        try:
            urllib.request.urlopen(url, timeout=1)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start: {argv}")


# -- the Python load generators (a process body) -----------------------------------------
@dataclass
class GeneratorRun:
    result: Result
    cpu_seconds: float


def generate(endpoint: str, payload: bytes | Sequence[bytes], connections: int, seconds: float,
             start_at: float) -> GeneratorRun:
    """In a generator process: wait for the common start, then drive ``endpoint`` for ``seconds``."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the generator's own CPU cost, lower
    except ImportError:
        pass
    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    result = drive(endpoint, payload, connections, seconds)
    return GeneratorRun(result, time.process_time() - cpu)


# -- load generators: wrk, or Python processes -------------------------------------------
@dataclass
class Measured:
    """One load run: what the generator saw, and the CPU seconds of the trees it was asked to watch."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    generator_cpu: float  # CPU seconds the generator itself spent
    usage: list[float]  # deltas of ``sample``: wall, machine busy, then each watched group

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_TIMEOUT = "10s"  # a reply later than this counts as an error (moto's p99 is a few hundred ms)
WRK_GRACE_SECONDS = 30  # past its duration, a wrk run is killed


def _lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (decimal escapes for anything but printable ASCII)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in data) + '"'


def wrk_script(requests: Sequence[bytes]) -> str:
    """A wrk script sending ``requests``, pre-signed raw HTTP/1.1 requests: one request is sent as wrk's
    static request (method, headers and body; wrk formats it once), several are cycled through by
    ``request()``, each thread starting at its own offset.  ``done`` prints one machine-readable line."""
    if len(requests) == 1:
        head, _, body = requests[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ", 2)
        headers = [line.split(b": ", 1) for line in lines[1:] if not line.lower().startswith(b"content-length:")]
        script = [f"wrk.method = {_lua_string(method)}", f"wrk.path = {_lua_string(path)}",
                  f"wrk.body = {_lua_string(body)}", "wrk.headers = {}"]
        script += [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers]
    else:
        script = ["local raw = {"] + [f"  {_lua_string(r)}," for r in requests] + ["}", """
local threads, i = 0, 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
function init(args)
  i = (first or 0) * 7919 % #raw
end
function request()
  i = i % #raw + 1
  return raw[i]
end"""]
    script.append("""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK-RESULT %d %d %d %.1f %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end""")
    return "\n".join(script) + "\n"


class Wrk:
    """wrk (C, epoll) with a Lua script of pre-signed requests; its CPU from the kernel's rusage."""

    def __init__(self, binary: str, threads: int, connections: int, workdir: Path) -> None:
        self.binary, self.threads, self.connections, self.workdir = binary, threads, connections, workdir
        self.name = f"wrk, {threads} thread{'s' if threads > 1 else ''}"

    def run(self, endpoint: str, requests: Sequence[bytes], seconds: float, watch: list[list[int]]) -> Measured:
        script, output = self.workdir / "requests.lua", self.workdir / "wrk.out"
        script.write_text(wrk_script(requests))
        duration = max(1, round(seconds))  # wrk takes whole seconds
        argv = [self.binary, "-t", str(self.threads), "-c", str(self.connections), "-d", f"{duration}s",
                "--timeout", WRK_TIMEOUT, "-s", str(script), endpoint + "/"]
        before = sample(watch)
        with output.open("wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        waited: tuple[int, Any] | None = None  # (wait status, rusage) once reaped
        try:
            deadline = time.monotonic() + duration + WRK_GRACE_SECONDS
            while waited is None:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    waited = status, usage
                elif time.monotonic() > deadline:
                    raise RuntimeError(f"wrk did not stop within {duration + WRK_GRACE_SECONDS} s")
                else:
                    time.sleep(0.02)
        finally:
            if waited is None:  # an error, or Ctrl-C: wrk goes too
                process.kill()
                process.wait()
        process.returncode = os.waitstatus_to_exitcode(waited[0])
        after = sample(watch)
        text = output.read_text(errors="replace")
        line = next((line for line in text.splitlines() if line.startswith("WRK-RESULT ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed (exit {process.returncode}): {text[-500:]}")
        count, micros, errors, p50, p99 = line.split()[1:]
        usage = waited[1]
        return Measured(int(count), int(errors), int(micros) / 1e6, float(p50) / 1000, float(p99) / 1000,
                        usage.ru_utime + usage.ru_stime, [b - a for a, b in zip(before, after)])


class PythonGenerators:
    """``processes`` Python processes running ``load.drive`` (uvloop when available), the connections split."""

    def __init__(self, pool: Executor, processes: int, connections: int) -> None:
        self.pool, self.processes, self.connections = pool, processes, connections
        self.name = f"Python asyncio, {processes} processes"

    def run(self, endpoint: str, requests: Sequence[bytes], seconds: float, watch: list[list[int]]) -> Measured:
        start_at = time.time() + START_DELAY_SECONDS
        share = max(1, self.connections // self.processes)
        futures = [self.pool.submit(generate, endpoint, list(requests[i::self.processes]) or list(requests),
                                    share, seconds, start_at) for i in range(self.processes)]
        time.sleep(max(0.0, start_at - time.time()))
        before = sample(watch)
        runs = [f.result() for f in futures]
        after = sample(watch)
        merged = Result(sum(r.result.requests for r in runs), sum(r.result.errors for r in runs), seconds,
                        [lat for r in runs for lat in r.result.latencies])
        return Measured(merged.requests, merged.errors, seconds, merged.percentile(50), merged.percentile(99),
                        sum(r.cpu_seconds for r in runs), [b - a for a, b in zip(before, after)])


def find_wrk(install: bool) -> str | None:
    """The wrk binary; with ``install`` and as root, Debian's package installed first if missing."""
    if (found := shutil.which("wrk")) or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("# wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "install", "-y", "-qq", "wrk"], ["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "wrk"]):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(step, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=300, check=False)
        if found := shutil.which("wrk"):
            return found
    return None
