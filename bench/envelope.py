"""Benchmark: ``keyhive encrypt``/``decrypt`` against ``aws-encryption-cli`` on one file, same run.

    .venv/bin/python bench/envelope.py [--size-mib 1024] [--dir /tmp]

Starts a Keyhive dev server, writes a file of random bytes, then times each command
encrypting and decrypting it (a fresh process each, as a user runs them), with the
peak RSS of that process, and checks every round trip by SHA-256. References from the
same run: ``sha256sum`` over the file, ``openssl enc -aes-256-ctr`` over it and back
(``-d``: decrypting writes the plaintext, as a decrypt command does), and ``openssl speed
-evp aes-256-gcm`` (AES-GCM in memory, the ceiling). Each keyhive operation is compared
with OpenSSL's same operation, and also with OpenSSL's encryption.

``keyhive`` and ``aws-encryption-cli`` each run with both key-committing suites: the
default, signed with ECDSA P-384 (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384``), and
the unsigned one (``keyhive encrypt --unsigned``, ``aws-encryption-cli --algorithm
AES_256_GCM_HKDF_SHA512_COMMIT_KEY``); each suite is compared with the same suite. Every
Python command first runs once untimed, so that all of them run from byte-compiled
modules (in a cache under the work directory), as an installed package does.
The machine is shared and noisy: compare within one run. Results: docs/envelope.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import boto3

sys.path.insert(0, os.path.dirname(__file__))
from common import AKID, KEYHIVE_ENV, SECRET, free_port, start  # noqa: E402

MiB = 1 << 20
KEYHIVE, KEYHIVE_UNSIGNED = "keyhive", "keyhive --unsigned"
ESDK, ESDK_UNSIGNED = "aws-encryption-cli", "aws-encryption-cli (unsigned)"
OPERATIONS = ("encrypt", "decrypt", "encrypt >null", "decrypt >null")


@dataclass
class Timing:
    seconds: float
    peak_rss: int  # bytes


def start_server(port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "keyhive.cli.main", "server", "--dev", "--port", str(port), "--log-level", "warning",
            "--workers", "1"]
    return start(argv, f"http://127.0.0.1:{port}/keyhive/health", KEYHIVE_ENV)


def timed(argv: list[str], env: dict[str, str]) -> Timing:
    """Run ``argv`` to completion and flush what it wrote to disk; that wall time, and the
    peak RSS of that one process.

    The flush (``sync``) is timed because ``keyhive`` fsyncs its output before renaming it
    into place and the others do not: every command is timed until its output is on disk.
    The peak comes from GNU time (``/usr/bin/time -f %M``), which forks the command from
    its own small process: a child forked from this Python process would count this
    process's memory too, since Linux carries the pre-exec high-water mark across exec.
    """
    os.sync()  # no earlier command's writeback running under this one
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r") as report:
        wrapped = [gnu_time, "-q", "-f", "%M", "-o", report.name, *argv] if gnu_time else argv
        started = time.perf_counter()
        process = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert process.stderr is not None
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        os.sync()
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({process.returncode}): {errors.decode(errors='replace')[-2000:]}")
        peak_kib = int(report.read().split()[-1]) if gnu_time else usage.ru_maxrss
    return Timing(elapsed, peak_kib * 1024)


def fill(argv: list[str], source: Path, target: Path) -> list[str]:
    return [a.replace("{in}", str(source)).replace("{out}", str(target)) for a in argv]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def openssl_gcm_ceiling() -> float | None:
    """MB/s of ``openssl speed -evp aes-256-gcm`` on 16 KiB blocks (its largest default size)."""
    if not shutil.which("openssl"):
        return None
    out = subprocess.run(["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", "2"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.lower().startswith("aes-256-gcm"):
            return float(line.split()[-1].rstrip("k")) * 1000 / 1e6  # kB/s (1000s of bytes) -> MB/s
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib * MiB

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_server(port)
    work = Path(tempfile.mkdtemp(prefix="keyhive-bench-", dir=args.dir))
    try:
        kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=AKID, aws_secret_access_key=SECRET)
        key = kms.create_key(Description="envelope bench")["KeyMetadata"]["Arn"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
        env.update(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                   AWS_EC2_METADATA_DISABLED="true", KEYHIVE_ENDPOINT=endpoint, AWS_ENDPOINT_URL_KMS=endpoint)

        # Byte-compiled modules for every Python command, in a cache of this run's own: an
        # installed package has them, and PYTHONDONTWRITEBYTECODE would make each run compile.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

        plain = work / "plain.bin"
        expected = write_random(plain, size)
        rows: list[tuple[str, str, Timing]] = []

        rows.append(("sha256sum", "hash", timed(["sha256sum", str(plain)], env)))  # also warms the page cache
        if shutil.which("openssl"):
            ctr = ["openssl", "enc", "-aes-256-ctr", "-K", "11" * 32, "-iv", "22" * 16]
            sealed_ctr, opened_ctr = work / "ctr", work / "ctr.opened"
            rows.append(("openssl aes-256-ctr", "encrypt", timed([*ctr, "-in", str(plain), "-out", str(sealed_ctr)],
                                                                  env)))
            rows.append(("openssl aes-256-ctr", "encrypt >null", timed([*ctr, "-in", str(plain), "-out", os.devnull],
                                                                        env)))
            # decrypting writes the plaintext back, as a decrypt command does
            rows.append(("openssl aes-256-ctr", "decrypt", timed([*ctr, "-d", "-in", str(sealed_ctr), "-out",
                                                                  str(opened_ctr)], env)))
            rows.append(("openssl aes-256-ctr", "decrypt >null", timed([*ctr, "-d", "-in", str(sealed_ctr), "-out",
                                                                        os.devnull], env)))
            if sha256(opened_ctr) != expected:
                raise SystemExit("openssl: the round trip changed the data")
            sealed_ctr.unlink()
            opened_ctr.unlink()

        keyhive = [sys.executable, "-m", "keyhive.cli.main"]
        esdk = shutil.which("aws-encryption-cli", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        esdk_common = ["--commitment-policy", "require-encrypt-require-decrypt", "-S", "--wrapping-keys", f"key={key}"]
        tools = {KEYHIVE: ([*keyhive, "encrypt", "--key", key, "-i", "{in}", "-o", "{out}"],
                           [*keyhive, "decrypt", "--key", key, "-i", "{in}", "-o", "{out}"]),
                 KEYHIVE_UNSIGNED: ([*keyhive, "encrypt", "--unsigned", "--key", key, "-i", "{in}", "-o", "{out}"],
                                    [*keyhive, "decrypt", "--key", key, "-i", "{in}", "-o", "{out}"])}
        if esdk:
            tools[ESDK] = ([esdk, "--encrypt", "-i", "{in}", "-o", "{out}", *esdk_common],
                           [esdk, "--decrypt", "-i", "{in}", "-o", "{out}", *esdk_common])
            tools[ESDK_UNSIGNED] = ([esdk, "--encrypt", "-i", "{in}", "-o", "{out}", *esdk_common,
                                     "--algorithm", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"],
                                    [esdk, "--decrypt", "-i", "{in}", "-o", "{out}", *esdk_common])
        small = work / "small.bin"
        small.write_bytes(os.urandom(MiB))
        for encrypt, decrypt in tools.values():  # untimed: byte-compile, warm the page cache
            timed(fill(encrypt, small, work / "small.sealed"), env)
            timed(fill(decrypt, work / "small.sealed", work / "small.opened"), env)
        for name, (encrypt, decrypt) in tools.items():
            sealed, opened = work / "sealed", work / "opened"
            rows.append((name, "encrypt", timed(fill(encrypt, plain, sealed), env)))
            rows.append((name, "decrypt", timed(fill(decrypt, sealed, opened), env)))
            if sha256(opened) != expected:
                raise SystemExit(f"{name}: the round trip changed the data")
            opened.unlink()
            # the same work with nothing written to disk: stdout ("-") goes to /dev/null
            rows.append((name, "encrypt >null", timed(fill(encrypt, plain, Path("-")), env)))
            rows.append((name, "decrypt >null", timed(fill(decrypt, sealed, Path("-")), env)))
            sealed.unlink()
        ceiling = openssl_gcm_ceiling()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    import aws_encryption_sdk

    print(f"# {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"aws-encryption-sdk {aws_encryption_sdk.__version__}, {args.size_mib} MiB file of random bytes, "
          f"page cache warm, one process per command, timed until its output is on disk")
    print(f"{'command':<30} {'operation':<14} {'seconds':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    rate = {}
    for name, op, t in rows:
        rate[(name, op)] = size / t.seconds / 1e6
        print(f"{name:<30} {op:<14} {t.seconds:>8.2f} {rate[(name, op)]:>8.0f} {t.peak_rss / MiB:>13.1f}")
    if ceiling:
        print(f"{'openssl speed':<30} {'aes-256-gcm':<14} {'':>8} {ceiling:>8.0f} {'':>13}  (16 KiB blocks in memory)")
    print()
    for ours, theirs in ((KEYHIVE, ESDK), (KEYHIVE_UNSIGNED, ESDK_UNSIGNED)):
        for op in OPERATIONS:
            line = [f"{ours} {op}: {rate[(ours, op)] / rate[('sha256sum', 'hash')]:.0%} of sha256sum"]
            if (theirs, op) in rate:
                line.append(f"{rate[(ours, op)] / rate[(theirs, op)]:.1f}x aws-encryption-cli (same suite)")
            for reference in dict.fromkeys((op, op.replace("decrypt", "encrypt"))):  # the same operation, then encrypt
                if ("openssl aes-256-ctr", reference) in rate:
                    share = rate[(ours, op)] / rate[("openssl aes-256-ctr", reference)]
                    line.append(f"{share:.0%} of openssl aes-256-ctr {reference}")
            print(", ".join(line))
    print()
    for ours, theirs in ((KEYHIVE, ESDK), (KEYHIVE_UNSIGNED, ESDK_UNSIGNED)):
        for op in OPERATIONS:
            verdicts = []
            if (theirs, op) in rate:
                held = rate[(ours, op)] >= 3 * rate[(theirs, op)]
                verdicts.append(f">= 3x aws-encryption-cli: {'yes' if held else 'no'}")
            if ("openssl aes-256-ctr", op) in rate:
                held = rate[(ours, op)] >= 0.7 * rate[("openssl aes-256-ctr", op)]
                verdicts.append(f">= 70% of openssl {op}: {'yes' if held else 'no'}")
            print(f"target, {ours} {op}: {', '.join(verdicts)}")


if __name__ == "__main__":
    main()
