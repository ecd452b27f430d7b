"""Imports point down the layers only (DESIGN.md section 3), checked from the source.

Every module under src/keyhive is parsed with ``ast``; nothing is imported.  A new
top-level module must be given a layer in ``LAYERS`` before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "keyhive"

# Lower numbers sit lower; a module may import its own group or any lower layer.
LAYERS: dict[str, int] = {
    "keyhive.errors": 0,
    "keyhive.limits": 0,
    "keyhive.crypto": 1,
    "keyhive.shamir": 1,
    "keyhive.keystates": 1,
    "keyhive.policy": 1,
    "keyhive.grants": 1,
    "keyhive.keyspecs": 0,
    "keyhive.envelope": 0,  # client side (AWS Encryption SDK over boto3): imports no other Keyhive module
    "keyhive.backup": 3,  # backup files: built on storage
    "keyhive.blob": 2,
    "keyhive.storage": 2,
    "keyhive.barrier": 3,
    "keyhive.lease": 3,  # the scheduler's (and any cluster-wide job's) lease: builds on storage only
    "keyhive.seal": 4,
    "keyhive.keystore": 4,
    "keyhive.iam": 4,
    "keyhive.audit": 4,
    "keyhive.node": 5,
    "keyhive.service": 6,
    "keyhive.scheduler": 7,
    "keyhive.protocol": 8,
    "keyhive.console": 8,
    "keyhive.supervisor": 1,  # worker processes and their channel: imports no other Keyhive module
    "keyhive.siblings": 7,  # a worker's side of that channel, driving its node
    "keyhive.locations": 8,  # storage locations in messages, passwords hidden
    "keyhive.server": 9,
    "keyhive.cli": 10,
}

PURE = ["keyhive.crypto", "keyhive.keyspecs", "keyhive.blob", "keyhive.shamir", "keyhive.keystates", "keyhive.policy", "keyhive.grants"]
IMPURE = {"sqlite3", "socket", "asyncio", "time", "datetime", "threading", "multiprocessing", "subprocess",
          "select", "selectors", "urllib", "http", "random", "logging", "shutil", "tempfile", "pathlib"}
BELOW_PROTOCOL = ["keyhive.service", "keyhive.keystore", "keyhive.barrier", "keyhive.storage", "keyhive.crypto",
                  "keyhive.blob", "keyhive.shamir", "keyhive.keystates", "keyhive.policy", "keyhive.audit",
                  "keyhive.seal", "keyhive.node", "keyhive.iam", "keyhive.grants"]
WEB = {"keyhive.protocol", "keyhive.cli", "keyhive.server", "keyhive.console", "uvicorn", "starlette",
       "httptools", "h11", "http", "urllib"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it (function bodies too), fully qualified.

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` (name may be a submodule).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def within(name: str, roots: set[str] | list[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def group(name: str) -> str:
    return ".".join(name.split(".")[:2])


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {
    name: imports(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    for name, path in SOURCES.items()
}


def test_the_checker_sees_what_it_must() -> None:
    """The checks below are only as good as this parser."""
    src = "import uvicorn\nfrom keyhive import crypto\ndef f():\n    from .protocol import app\n    import time\n"
    found = imports(src, "keyhive.service.keys")
    assert {"uvicorn", "keyhive", "keyhive.crypto", "keyhive.service.protocol.app", "time"} <= found
    assert "keyhive.protocol" in imports("from ..protocol import app", "keyhive.service.keys")
    assert "keyhive.storage.base" in imports("from .base import X", "keyhive.storage", is_package=True)
    assert within("cryptography.hazmat.primitives", ["cryptography.hazmat"])
    assert not within("cryptographyx", ["cryptography"])


def test_the_package_was_found() -> None:
    assert {"keyhive.crypto", "keyhive.blob", "keyhive.barrier", "keyhive.keystore", "keyhive.storage.sqlite"} <= set(
        SOURCES
    )


def test_every_module_has_a_layer() -> None:
    unknown = sorted({group(m) for m in SOURCES if m != "keyhive"} - set(LAYERS))
    assert not unknown, f"give these a layer in tests/unit/test_layers.py LAYERS: {unknown}"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, found in IMPORTS.items():
        if module == "keyhive":
            continue
        mine = group(module)
        for target in found:
            if not within(target, ["keyhive"]) or target == "keyhive":
                continue
            theirs = group(target)
            if theirs == mine or theirs not in LAYERS:  # a name imported from the root, e.g. __version__
                continue
            if LAYERS[theirs] >= LAYERS.get(mine, 99):
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(sorted(upward))


def test_only_crypto_imports_hazmat() -> None:
    """The server's primitives live in keyhive.crypto; the envelope client library, which imports no
    other Keyhive module, keeps its own in one module."""
    users = sorted(m for m, found in IMPORTS.items() if any(within(t, ["cryptography.hazmat"]) for t in found))
    assert users and all(within(m, ["keyhive.crypto", "keyhive.envelope._primitives"]) for m in users), users


@pytest.mark.parametrize("layer", BELOW_PROTOCOL)
def test_lower_layers_know_nothing_of_the_web_or_cli(layer: str) -> None:
    bad = sorted(
        f"{m} imports {t}" for m, found in IMPORTS.items() if within(m, [layer]) for t in found if within(t, WEB)
    )
    assert not bad


def test_protocol_knows_nothing_of_storage() -> None:
    bad = sorted(
        f"{m} imports {t}"
        for m, found in IMPORTS.items()
        if within(m, ["keyhive.protocol"])
        for t in found
        if within(t, ["keyhive.storage", "keyhive.barrier", "sqlite3"])
    )
    assert not bad


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    present = [m for m in SOURCES if within(m, [module])]
    if not present:
        pytest.skip(f"{module} does not exist yet")
    bad = sorted(f"{m} imports {t}" for m in present for t in IMPORTS[m] if within(t, IMPURE))
    assert not bad
    # and they build only on other pure modules (and the error and limit tables)
    allowed = [*PURE, "keyhive.errors", "keyhive.limits"]
    impure_deps = sorted(
        f"{m} imports {t}" for m in present for t in IMPORTS[m]
        if within(t, ["keyhive"]) and t != "keyhive" and not within(t, allowed)
    )
    assert not impure_deps
