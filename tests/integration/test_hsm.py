"""The PKCS#11 seal through the real server: SoftHSM2 auto-unseal, restarts, and failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import admin_call, start_server
from tests.softhsm import SoftHsmToken, new_token

PLAINTEXT = b"kept by the HSM"


def hsm_args(token: SoftHsmToken, data: Path, key_label: str = "keyhive-root") -> list[str]:
    return ["--data-dir", str(data), "--seal", "pkcs11", "--pkcs11-module", token.module_path,
            "--pkcs11-token-label", token.label, "--pkcs11-key-label", key_label]


def run_server(tmp: Path, token: SoftHsmToken, data: Path, pin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Start a server expected to fail at once; its output."""
    env = {**token.env, "KEYHIVE_PKCS11_PIN": pin}
    return subprocess.run([sys.executable, "-m", "keyhive.cli.main", "server", *hsm_args(token, data), *extra],
                          env=env, capture_output=True, text=True, timeout=60)


def test_auto_unseal_across_restarts_and_clear_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_token(tmp_path, monkeypatch)
    data = tmp_path / "data"
    env = {"KEYHIVE_PKCS11_PIN": token.pin, "SOFTHSM2_CONF": str(token.conf)}
    server = start_server(tmp_path, *hsm_args(token, data), "--scheduler-interval", "0.2", env=env)
    try:
        code, init = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
        assert code == 200, init
        assert len(init["recovery_shares"]) == 3 and "shares" not in init
        _, status = admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")
        assert (status["initialized"], status["sealed"], status["seal_type"]) == (True, False, "pkcs11")
        kms = server.client(init["access_key_id"], init["secret_access_key"])
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
        code, refused = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": init["recovery_shares"][0]})
        assert code == 200  # already unsealed: nothing to do
    finally:
        server.stop()
    assert token.pin not in server.log()

    # a restart unseals itself, with no share
    server = start_server(tmp_path, *hsm_args(token, data), "--scheduler-interval", "0.2", env=env)
    try:
        _, status = admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")
        assert status["sealed"] is False
        kms = server.client(init["access_key_id"], init["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT

        # the HSM goes away: the node seals itself, crypto fails fast, and it recovers by itself
        moved = token.tokendir.with_name("tokens-away")
        token.tokendir.rename(moved)
        deadline = time.monotonic() + 10
        while admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]["sealed"] is False:
            assert time.monotonic() < deadline, "the node did not notice the HSM was gone"
            time.sleep(0.1)
        with pytest.raises(kms.exceptions.KeyUnavailableException):
            kms.decrypt(CiphertextBlob=blob)
        moved.rename(token.tokendir)
        deadline = time.monotonic() + 10
        while admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]["sealed"] is True:
            assert time.monotonic() < deadline, "the node did not unseal when the HSM came back"
            time.sleep(0.1)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
    finally:
        server.stop()

    wrong = run_server(tmp_path, token, data, "not-the-pin")
    assert wrong.returncode != 0 and "PIN" in wrong.stderr + wrong.stdout and "not-the-pin" not in wrong.stderr
    missing = run_server(tmp_path, token, data, token.pin, "--pkcs11-module", str(tmp_path / "nope.so"))
    assert missing.returncode != 0 and "module" in (missing.stderr + missing.stdout).lower()

    import pkcs11  # delete the root-wrapping key from the token: the server must say so and stop

    lib = pkcs11.lib(token.module_path)
    with lib.get_token(token_label=token.label).open(user_pin=token.pin, rw=True) as session:
        for key in session.get_objects({pkcs11.Attribute.LABEL: "keyhive-root"}):
            key.destroy()
    gone = run_server(tmp_path, token, data, token.pin)
    assert gone.returncode != 0 and "key" in (gone.stderr + gone.stdout).lower()
    assert token.pin not in gone.stderr + gone.stdout


def test_dev_mode_takes_no_hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_token(tmp_path, monkeypatch)
    done = subprocess.run([sys.executable, "-m", "keyhive.cli.main", "server", "--dev", "--seal", "pkcs11"],
                          env={**os.environ, **token.env}, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "takes no --seal pkcs11" in done.stderr


def keyhive(endpoint: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keyhive.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KEYHIVE_ENDPOINT": endpoint})


def test_seal_migration_both_ways_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_token(tmp_path, monkeypatch)
    data = tmp_path / "data"
    env = {"KEYHIVE_PKCS11_PIN": token.pin, "SOFTHSM2_CONF": str(token.conf)}

    server = start_server(tmp_path, "--data-dir", str(data))  # an ordinary Shamir installation
    _, init = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
    shares = init["shares"]
    for share in shares[:2]:
        admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    kms = server.client(init["access_key_id"], init["secret_access_key"])
    blob = kms.encrypt(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    server.stop()

    # Shamir -> PKCS#11: the server starts with the HSM flags, still sealed by the shares
    server = start_server(tmp_path, *hsm_args(token, data), env=env)
    try:
        assert admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]["sealed"] is True
        refused = keyhive(server.endpoint, "operator", "migrate-seal", "--to", "pkcs11", stdin=shares[0] + "\n")
        assert refused.returncode == 1 and "2 distinct shares are needed" in refused.stderr
        moved = keyhive(server.endpoint, "operator", "migrate-seal", "--to", "pkcs11", stdin="\n".join(shares[1:]))
        assert moved.returncode == 0, moved.stderr
        status = admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]
        assert (status["seal_type"], status["sealed"]) == ("pkcs11", False)
        kms = server.client(init["access_key_id"], init["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
    finally:
        server.stop()

    server = start_server(tmp_path, *hsm_args(token, data), env=env)  # unseals itself from now on
    try:
        assert admin_call(server.endpoint, "GET", "/keyhive/v1/sys/status")[1]["sealed"] is False
        # PKCS#11 -> Shamir, with the shares (now recovery shares)
        wrong = keyhive(server.endpoint, "operator", "migrate-seal", "--to", "shamir",
                        stdin=shares[0] + "\n" + shares[0][:-4] + "AAA=\n")
        assert wrong.returncode == 1 and "refused" in wrong.stderr
        back = keyhive(server.endpoint, "operator", "migrate-seal", "--to", "shamir", stdin="\n".join(shares[:2]))
        assert back.returncode == 0, back.stderr
    finally:
        server.stop()

    server = start_server(tmp_path, "--data-dir", str(data))  # no HSM any more: the shares unseal
    try:
        status: dict = {}
        for share in (shares[0], shares[2]):
            _, status = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        assert (status["seal_type"], status["sealed"]) == ("shamir", False)
        kms = server.client(init["access_key_id"], init["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
    finally:
        server.stop()


def test_every_worker_unseals_with_the_hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Init lands on one worker, which hands the root key to the other; a restart's workers each use the HSM."""
    token = new_token(tmp_path, monkeypatch)
    data = tmp_path / "data"
    env = {"KEYHIVE_PKCS11_PIN": token.pin, "SOFTHSM2_CONF": str(token.conf)}
    server = start_server(tmp_path, *hsm_args(token, data), "--workers", "2", env=env)
    try:
        code, init = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2})
        assert code == 200, init
        assert all(admin_call(server.endpoint, "GET", "/keyhive/health")[0] == 200 for _ in range(30))
    finally:
        server.stop()
    server = start_server(tmp_path, *hsm_args(token, data), "--workers", "2", env=env)
    try:
        assert all(admin_call(server.endpoint, "GET", "/keyhive/health")[0] == 200 for _ in range(30))
    finally:
        server.stop()
    assert token.pin not in server.log()
