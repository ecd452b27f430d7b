"""Throwaway SoftHSM2 tokens, so that PKCS#11 tests run against a real (software) HSM.

SoftHSM2 reads ``SOFTHSM2_CONF`` each time a process initializes the module, and
sees only the tokens that existed then.  :func:`new_token` therefore writes a
config whose token directory lies in the test's tmp dir, points ``SOFTHSM2_CONF``
at it (through ``monkeypatch``, so it is undone after the test), creates the
token with ``softhsm2-util`` and initializes the module again in this process.
Subprocesses get the same token through :attr:`SoftHsmToken.env`.

SoftHSM2 comes from Debian (``scripts/test`` installs it).  When it is missing
and cannot be installed here (not root, no apt-get), the test is skipped with
the reason, except under CI (``CI=true``), where it fails: CI must run these.
"""

from __future__ import annotations

import functools
import glob
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_GLOBS = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian and Ubuntu (a link to the multiarch one)
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
)


@dataclass(frozen=True)
class SoftHsmToken:
    module_path: str  # the real path of libsofthsm2.so (one name per file: see keyhive.seal.pkcs11)
    label: str
    pin: str
    so_pin: str
    conf: Path  # the SOFTHSM2_CONF file naming this token's directory

    @property
    def tokendir(self) -> Path:
        return self.conf.parent / "tokens"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment, pointing SoftHSM2 at this token, for a subprocess."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (under CI the PKCS#11 tests must run: scripts/test installs SoftHSM2)")
    pytest.skip(reason)


def find_module() -> str | None:
    for pattern in MODULE_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return os.path.realpath(path)
    return None


@functools.cache
def _try_install() -> str:
    """Install Debian's softhsm2 when this is a root shell with apt-get; what went wrong, if anything."""
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "installing it needs root: sudo apt-get install softhsm2"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "softhsm2"]):
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return ""


def require_softhsm() -> str:
    """The path of libsofthsm2.so, installing SoftHSM2 first if it can; skips (fails under CI) otherwise."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        _unavailable("python-pkcs11 is not installed: pip install -e '.[test]'")
    module = find_module()
    if module is None or not shutil.which("softhsm2-util"):
        problem = _try_install()
        module = find_module()
        if module is None or not shutil.which("softhsm2-util"):
            _unavailable(f"SoftHSM2 is not installed and could not be: {problem or 'libsofthsm2.so not found'}")
    assert module is not None
    return module


def new_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str = "keyhive-test") -> SoftHsmToken:
    """A fresh, initialized SoftHSM2 token in ``tmp_path``, visible to this process and its children."""
    module = require_softhsm()
    root = tmp_path / "softhsm"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    token = SoftHsmToken(module, label, pin="pin-" + secrets.token_hex(8), so_pin="so-" + secrets.token_hex(8), conf=conf)
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", token.pin, "--so-pin", token.so_pin],
        env=token.env, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60,
    )
    reload_module(module)
    return token


def reload_module(module: str) -> None:
    """Initialize the module again in this process, so that it reads SOFTHSM2_CONF and its tokens anew."""
    import pkcs11

    pkcs11.lib(module).reinitialize()
