"""Benchmark: Keyhive against moto's KMS server, same signed load, same run.

    .venv/bin/python bench/run.py [--seconds 5] [--concurrency 32]

Prints requests/s, p50 and p99 latency for Encrypt, Decrypt and GenerateDataKey
on each server and Keyhive's ratio over moto.  This machine is shared and noisy:
read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

sys.path.insert(0, os.path.dirname(__file__))
from load import Result, drive, signed_request  # noqa: E402

AKID, SECRET = "AKIABENCH00000000001", "bench-secret-access-key-000000000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start: {argv}")


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


def payloads(endpoint: str, name: str) -> dict[str, bytes]:
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x" * 32)["CiphertextBlob"]
    plaintext = base64.b64encode(b"x" * 32).decode()
    bodies = {
        "Encrypt": {"KeyId": key_id, "Plaintext": plaintext},
        "Decrypt": {"CiphertextBlob": base64.b64encode(blob).decode()},
        "GenerateDataKey": {"KeyId": key_id, "KeySpec": "AES_256"},
    }
    if name == "keyhive":  # authorization cost: the same Encrypt under a ten-statement key policy
        policy_key = kms.create_key(Policy=ten_statement_policy("111122223333"), BypassPolicyLockoutSafetyCheck=True)
        bodies["Encrypt (10-statement policy)"] = {"KeyId": policy_key["KeyMetadata"]["KeyId"], "Plaintext": plaintext}
    target = {op: op.split(" ")[0] for op in bodies}
    return {op: signed_request(endpoint, target[op], json.dumps(body).encode(), AKID, SECRET)
            for op, body in bodies.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    keyhive_env = {"KEYHIVE_DEV_ACCESS_KEY_ID": AKID, "KEYHIVE_DEV_SECRET_ACCESS_KEY": SECRET}
    ports = {name: free_port() for name in ("keyhive", "keyhive-relaxed", "moto")}

    def keyhive(port: int, *extra: str) -> list[str]:
        return [sys.executable, "-m", "keyhive.cli.main", "server", "--dev", "--port", str(port),
                "--log-level", "warning", "--workers", "1", *extra]  # one worker, as moto has one process

    commands = {
        "keyhive": (keyhive(ports["keyhive"]), "/keyhive/health", keyhive_env),
        # the same build with the audit trail's durability relaxed: what the fail-closed trail costs
        "keyhive-relaxed": (keyhive(ports["keyhive-relaxed"], "--audit-durability", "relaxed"), "/keyhive/health",
                            keyhive_env),
        "moto": ([sys.executable, "-m", "moto.server", "-p", str(ports["moto"])], "/", {}),
    }
    results: dict[tuple[str, str], Result] = {}
    for name, (argv, probe, env) in commands.items():  # one server at a time: each gets the machine
        endpoint = f"http://127.0.0.1:{ports[name]}"
        process = start(argv, endpoint + probe, env)
        try:
            for op, payload in payloads(endpoint, name).items():
                if name == "keyhive-relaxed" and op != "Encrypt":
                    continue
                results[(name, op)] = drive(endpoint, payload, args.concurrency, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, commit {commit}, "
          f"{args.concurrency} connections, {args.seconds:.0f} s per cell, 32-byte plaintext, one server process")
    print(f"{'server':<16} {'operation':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for (name, op), r in results.items():
        print(f"{name:<16} {op:<30} {r.rate:>8.0f} {r.percentile(50):>8.2f} {r.percentile(99):>8.2f} {r.errors:>7}")
    for op in ("Encrypt", "Decrypt", "GenerateDataKey"):
        ratio = results[("keyhive", op)].rate / max(results[("moto", op)].rate, 1e-9)
        print(f"keyhive/moto {op}: {ratio:.1f}x")
    policy_cost = results[("keyhive", "Encrypt (10-statement policy)")].rate / results[("keyhive", "Encrypt")].rate
    print(f"keyhive Encrypt, ten-statement policy / default policy: {policy_cost:.2f}")
    audit_cost = results[("keyhive", "Encrypt")].rate / results[("keyhive-relaxed", "Encrypt")].rate
    print(f"keyhive Encrypt, durable audit trail / relaxed trail: {audit_cost:.2f}")


if __name__ == "__main__":
    main()
