"""``keyhive encrypt`` / ``keyhive decrypt`` as a user runs them, and ``aws-encryption-cli`` beside them."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, RunningServer

MiB = 1 << 20
KEYHIVE = [sys.executable, "-m", "keyhive.cli.main"]
ESDK_CLI = shutil.which("aws-encryption-cli", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def cli_env(server: RunningServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    env.update(AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=DEV_SECRET_ACCESS_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", KEYHIVE_ENDPOINT=server.endpoint)
    return env


def keyhive(server: RunningServer, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*KEYHIVE, *args], input=stdin, capture_output=True, env=cli_env(server), timeout=120, check=False)


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def refused(result: subprocess.CompletedProcess[bytes], match: str) -> str:
    """Exit 1, nothing on stdout, one line on stderr that says ``match``."""
    assert result.returncode == 1, result
    message = result.stderr.decode()
    assert message.startswith("keyhive: ") and message.count("\n") == 1, message
    assert match in message, message
    return message


@pytest.fixture
def key(kms) -> str:  # type: ignore[no-untyped-def]
    return str(kms.create_key(Description="envelope cli")["KeyMetadata"]["Arn"])


# -- pipes and files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 300_000])
def test_stdin_to_stdout_round_trip(dev_server: RunningServer, key: str, size: int) -> None:
    data = os.urandom(size)
    message = ok(keyhive(dev_server, "encrypt", "--key", key, "--context", "app=cli", stdin=data))
    assert message[:1] == b"\x02" and (size < 64 or data not in message)
    assert ok(keyhive(dev_server, "decrypt", "--context", "app=cli", stdin=message)) == data


def test_files_and_an_output_directory(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF quarterly numbers")
    out = tmp_path / "out"
    out.mkdir()
    ok(keyhive(dev_server, "encrypt", "--key", key, "-i", str(tmp_path / "report.pdf"), "-o", str(out)))
    sealed = out / "report.pdf.khe"
    assert b"quarterly" not in sealed.read_bytes()
    assert oct(sealed.stat().st_mode & 0o777) == "0o600"
    back = tmp_path / "back"
    back.mkdir()
    ok(keyhive(dev_server, "decrypt", "--key", key, "-i", str(sealed), "-o", str(back)))
    assert (back / "report.pdf").read_bytes() == b"%PDF quarterly numbers"
    ok(keyhive(dev_server, "decrypt", "-i", str(sealed), "-o", str(tmp_path / "named.pdf")))
    assert (tmp_path / "named.pdf").read_bytes() == b"%PDF quarterly numbers"


def test_several_keys_and_the_allowed_keys(dev_server: RunningServer, kms, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first, second, other = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(3))
    message = ok(keyhive(dev_server, "encrypt", "--key", first, "--key", second, stdin=b"two keys"))
    assert ok(keyhive(dev_server, "decrypt", "--key", first, stdin=message)) == b"two keys"
    assert ok(keyhive(dev_server, "decrypt", "--key", second, stdin=message)) == b"two keys"
    refused(keyhive(dev_server, "decrypt", "--key", other, stdin=message), "no allowed KMS key")


def test_context_is_checked(dev_server: RunningServer, key: str) -> None:
    message = ok(keyhive(dev_server, "encrypt", "--key", key, "--context", "tenant=t-7", stdin=b"bound"))
    refused(keyhive(dev_server, "decrypt", "--context", "tenant=t-8", stdin=message), "'tenant' differs")
    refused(keyhive(dev_server, "decrypt", "--context", "stage=prod", stdin=message), "has no 'stage'")
    refused(keyhive(dev_server, "decrypt", "--context", "nonsense", stdin=message), "KEY=VALUE")


def test_recursive_tree(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {"a.txt": b"alpha", "empty": b"", "sub/b.bin": os.urandom(200_000), "sub/deeper/c d.txt": b"spaces"}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "link").symlink_to(src / "a.txt")

    result = keyhive(dev_server, "encrypt", "--key", key, "--recursive", "-i", str(src), "-o", str(tmp_path / "enc"))
    ok(result)
    assert b"skipped" in result.stderr and b"link" in result.stderr
    encrypted = sorted(str(p.relative_to(tmp_path / "enc")) for p in (tmp_path / "enc").rglob("*") if p.is_file())
    assert encrypted == sorted(name + ".khe" for name in files)
    (tmp_path / "enc" / "stray.txt").write_bytes(b"not a message")

    ok(keyhive(dev_server, "decrypt", "--key", key, "-r", "-i", str(tmp_path / "enc"), "-o", str(tmp_path / "dec")))
    decrypted = {str(p.relative_to(tmp_path / "dec")): p.read_bytes() for p in (tmp_path / "dec").rglob("*") if p.is_file()}
    assert decrypted == files

    refused(keyhive(dev_server, "encrypt", "--key", key, "-r", "-i", str(src), "-o", str(src / "inside")), "inside")
    refused(keyhive(dev_server, "encrypt", "--key", key, "-i", str(src), "-o", str(tmp_path / "x")), "--recursive")


# -- failure leaves nothing behind ---------------------------------------------------------------------
def test_a_failed_decryption_leaves_no_plaintext_file(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    ok(keyhive(dev_server, "encrypt", "--key", key, "-i", str(tmp_path / "big.bin"), "-o", str(tmp_path / "big.khe")))
    sealed = (tmp_path / "big.khe").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    cases = {"signature": sealed[:-1] + bytes([sealed[-1] ^ 1]),  # every frame decrypts; the footer fails last
             "truncated": sealed[:-200], "body": sealed[:MiB] + bytes([sealed[MiB] ^ 1]) + sealed[MiB + 1:]}
    for name, bad in cases.items():
        (tmp_path / f"{name}.khe").write_bytes(bad)
        refused(keyhive(dev_server, "decrypt", "-i", str(tmp_path / f"{name}.khe"), "-o", str(out / name)), "corrupt")
    assert list(out.iterdir()) == []  # neither the outputs nor their temporary files

    # A file already at the output path is left exactly as it was.
    (out / "kept").write_bytes(b"previous contents")
    refused(keyhive(dev_server, "decrypt", "-i", str(tmp_path / "signature.khe"), "-o", str(out / "kept")), "corrupt")
    assert (out / "kept").read_bytes() == b"previous contents" and len(list(out.iterdir())) == 1

    # On stdout the plaintext cannot be taken back: the message says so.
    message = refused(keyhive(dev_server, "decrypt", stdin=cases["signature"]), "corrupt")
    assert "discard the output" in message


def test_errors_are_one_line(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    refused(keyhive(dev_server, "decrypt", "-i", str(tmp_path / "missing.khe")), "No such file")
    refused(keyhive(dev_server, "encrypt", "--key", key, "--endpoint", "http://127.0.0.1:9", stdin=b"x"),
            "cannot reach")
    refused(keyhive(dev_server, "decrypt", stdin=b"\x02not a message at all"), "corrupt")


# -- progress ---------------------------------------------------------------------------------------
def test_progress_bar_only_on_a_terminal(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(9 * MiB))
    args = [*KEYHIVE, "encrypt", "--key", key, "-i", str(tmp_path / "big.bin"), "-o", str(tmp_path / "big.khe")]

    quiet = subprocess.run(args, capture_output=True, env=cli_env(dev_server), timeout=60, check=False)
    assert quiet.returncode == 0 and quiet.stderr == b""

    main, tty = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=tty,
                               env=cli_env(dev_server))
    os.close(tty)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0
    assert b"100%" in drawn and b"9/9 MiB" in drawn, drawn

    (tmp_path / "small.bin").write_bytes(os.urandom(MiB))  # under 8 MiB: no bar, even on a terminal
    main, tty = pty.openpty()
    small = subprocess.run([*KEYHIVE, "encrypt", "--key", key, "-i", str(tmp_path / "small.bin"), "-o",
                            str(tmp_path / "small.khe")], stdin=subprocess.DEVNULL, stderr=tty,
                           env=cli_env(dev_server), timeout=60, check=False)
    os.close(tty)
    os.set_blocking(main, False)
    try:
        leftover = os.read(main, 4096)
    except OSError:
        leftover = b""
    os.close(main)
    assert small.returncode == 0 and leftover == b""


# -- aws-encryption-cli ------------------------------------------------------------------------------
needs_esdk_cli = pytest.mark.skipif(ESDK_CLI is None, reason="aws-encryption-cli not installed "
                                    "(pip install aws-encryption-sdk-cli)")


def esdk_cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**cli_env(server), "AWS_ENDPOINT_URL_KMS": server.endpoint}  # its botocore clients find Keyhive here
    return subprocess.run([str(ESDK_CLI), *args, "--commitment-policy", "require-encrypt-require-decrypt", "-S"],
                          capture_output=True, env=env, timeout=120, check=False)


@needs_esdk_cli
def test_aws_encryption_cli_decrypts_what_keyhive_writes(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    data = os.urandom(MiB + 17)
    (tmp_path / "plain").write_bytes(data)
    ok(keyhive(dev_server, "encrypt", "--key", key, "--context", "from=keyhive", "-i", str(tmp_path / "plain"),
               "-o", str(tmp_path / "sealed")))
    for wrapping in (f"key={key}", "discovery=true"):
        result = esdk_cli(dev_server, "--decrypt", "-i", str(tmp_path / "sealed"), "-o", str(tmp_path / "opened"),
                          "--wrapping-keys", wrapping, "--encryption-context", "from=keyhive")
        assert result.returncode == 0, result.stderr.decode()
        assert (tmp_path / "opened").read_bytes() == data
        (tmp_path / "opened").unlink()


@needs_esdk_cli
def test_keyhive_decrypts_what_aws_encryption_cli_writes(dev_server: RunningServer, key: str, tmp_path: Path) -> None:
    data = os.urandom(MiB + 17)
    (tmp_path / "plain").write_bytes(data)
    result = esdk_cli(dev_server, "--encrypt", "-i", str(tmp_path / "plain"), "-o", str(tmp_path / "sealed"),
                      "--wrapping-keys", f"key={key}", "--encryption-context", "from=esdk-cli")
    assert result.returncode == 0, result.stderr.decode()
    ok(keyhive(dev_server, "decrypt", "--key", key, "--context", "from=esdk-cli", "-i", str(tmp_path / "sealed"),
               "-o", str(tmp_path / "opened")))
    assert (tmp_path / "opened").read_bytes() == data
    # and its directory mode, into ours
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_bytes(b"in a tree")
    (tmp_path / "sealed-tree").mkdir()
    result = esdk_cli(dev_server, "--encrypt", "-r", "-i", str(tmp_path / "tree"), "-o", str(tmp_path / "sealed-tree"),
                      "--wrapping-keys", f"key={key}", "--suffix", ".khe")
    assert result.returncode == 0, result.stderr.decode()
    ok(keyhive(dev_server, "decrypt", "-r", "-i", str(tmp_path / "sealed-tree"), "-o", str(tmp_path / "opened-tree")))
    assert (tmp_path / "opened-tree" / "sub" / "f").read_bytes() == b"in a tree"
