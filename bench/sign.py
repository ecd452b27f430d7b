"""Benchmark: Sign and Verify through Keyhive next to the same operation done directly.

    .venv/bin/python bench/sign.py [--seconds 3] [--concurrency 16]

For RSA_2048, ECC_NIST_P256 and ML_DSA_65, prints requests/s through the server
(Signature V4, authorization, audit trail, one process) and operations/s with
``cryptography`` in this process on one core, so the service's overhead shows.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import time

import boto3

sys.path.insert(0, os.path.dirname(__file__))
from load import drive, signed_request  # noqa: E402
from run import AKID, SECRET, free_port, start  # noqa: E402

from keyhive.crypto import asymmetric  # noqa: E402

CASES = [("RSA_2048", "RSASSA_PSS_SHA_256", {"rsa_bits": 2048}),
         ("ECC_NIST_P256", "ECDSA_SHA_256", {"curve": "secp256r1"}),
         ("ML_DSA_65", "ML_DSA_SHAKE_256", {})]
MESSAGE = b"x" * 32


def direct_rate(spec: str, algorithm: str, options: dict[str, object], seconds: float, verify: bool) -> float:
    key = asymmetric.generate(spec, **options)  # type: ignore[arg-type]
    signature = asymmetric.sign(key, algorithm, MESSAGE, "RAW")
    count, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        if verify:
            asymmetric.verify(key, algorithm, MESSAGE, "RAW", signature)
        else:
            asymmetric.sign(key, algorithm, MESSAGE, "RAW")
        count += 1
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = start([sys.executable, "-m", "keyhive.cli.main", "server", "--dev", "--port", str(port),
                     "--log-level", "warning", "--workers", "1"], endpoint + "/keyhive/health",
                    {"KEYHIVE_DEV_ACCESS_KEY_ID": AKID, "KEYHIVE_DEV_SECRET_ACCESS_KEY": SECRET})
    rows = []
    try:
        kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=AKID, aws_secret_access_key=SECRET)
        for spec, algorithm, options in CASES:
            key_id = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
            signature = kms.sign(KeyId=key_id, Message=MESSAGE, SigningAlgorithm=algorithm)["Signature"]
            common = {"KeyId": key_id, "Message": base64.b64encode(MESSAGE).decode(), "SigningAlgorithm": algorithm}
            requests = {
                "Sign": common,
                "Verify": {**common, "Signature": base64.b64encode(signature).decode()},
            }
            for op, body in requests.items():
                payload = signed_request(endpoint, op, json.dumps(body).encode(), AKID, SECRET)
                served = drive(endpoint, payload, args.concurrency, args.seconds)
                direct = direct_rate(spec, algorithm, options, args.seconds, verify=op == "Verify")
                rows.append((spec, op, served.rate, served.percentile(99), served.errors, direct))
    finally:
        process.terminate()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, commit {commit}, "
          f"{args.concurrency} connections, {args.seconds:.0f} s per cell, one server process")
    print(f"{'key spec':<14} {'op':<7} {'server req/s':>13} {'p99 ms':>8} {'errors':>7} {'direct op/s':>12} {'server/direct':>14}")
    for spec, op, rate, p99, errors, direct in rows:
        print(f"{spec:<14} {op:<7} {rate:>13.0f} {p99:>8.2f} {errors:>7} {direct:>12.0f} {rate / direct:>14.2f}")


if __name__ == "__main__":
    main()
