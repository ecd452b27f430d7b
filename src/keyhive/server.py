"""Running a Keyhive server: storage, node, seal, then uvicorn."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from keyhive.locations import describe_location
from keyhive.node import AlreadyInitialized, Node, NoSiblings, dev_unseal
from keyhive.protocol.app import KeyhiveApp
from keyhive.seal import SealError
from keyhive.seal.pkcs11 import PIN_ENV, Pkcs11Seal, read_pin
from keyhive.siblings import Siblings
from keyhive.storage import StorageUnavailable, open_storage
from keyhive.storage.base import is_postgres_url
from keyhive.supervisor import Supervisor, listening_sockets

log = logging.getLogger("keyhive.server")

DEFAULT_PORT = 8300
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "111122223333"
PR_SET_PDEATHSIG = 1  # prctl(2)
# The cores this process may run on (a container or taskset may allow fewer than the machine has).
DEFAULT_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path | None = None
    storage: str | None = None  # a postgresql:// URL: shared PostgreSQL storage instead of --data-dir
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    regions: frozenset[str] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dev: bool = False
    log_level: str = "info"
    scheduler_interval: float = 60.0
    audit_durable: bool = True
    barrier_rotation_days: float = 0.0
    seal: str = "shamir"  # or "pkcs11"
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_key_label: str | None = None
    pkcs11_pin_file: str | None = None
    workers: int = DEFAULT_WORKERS


DEV_BANNER = """\
==> Keyhive dev server
    WARNING: dev mode keeps its root key only in this server's memory, and its data in
    {data}. Never store real keys in it.

    Endpoint:          {endpoint}
    Access key id:     {akid}
    Secret access key: {secret}

    export AWS_ACCESS_KEY_ID={akid} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION={region}
    aws kms create-key --endpoint-url {endpoint}
"""


def open_node(config: ServerConfig, hsm: Pkcs11Seal | None = None) -> Node:
    """Storage and a sealed node on it, as ``config`` says."""
    location = _storage_location(config)
    try:
        storage = open_storage(location)
    except StorageUnavailable as exc:
        raise SystemExit(f"keyhive server: {exc.log_detail}") from None
    except (ImportError, ValueError) as exc:
        raise SystemExit(f"keyhive server: {exc}") from None
    node = Node(storage, account_id=config.account_id, hsm=hsm)
    node.audit.durable = config.audit_durable
    node.barrier_rotation_interval = config.barrier_rotation_days * 86400
    return node


class _RootKeyCatcher(NoSiblings):
    """The dev node's siblings: it keeps the root key for the workers, in the supervisor's memory."""

    root_key: bytes | None = None

    def unsealed(self, root_key: bytes) -> None:
        self.root_key = root_key


def dev_setup(config: ServerConfig) -> tuple[ServerConfig, bytes]:
    """Initialize fresh dev storage, print the banner; the root key goes to the workers from memory."""
    if config.storage is None and config.data_dir is None:
        config = dataclasses.replace(config, data_dir=Path(tempfile.mkdtemp(prefix="keyhive-dev-")))
    location = _storage_location(config)
    node = open_node(config)
    catcher = node.siblings = _RootKeyCatcher()
    try:
        result = dev_unseal(
            node,
            access_key_id=os.environ.get("KEYHIVE_DEV_ACCESS_KEY_ID"),
            secret_access_key=os.environ.get("KEYHIVE_DEV_SECRET_ACCESS_KEY"),
        )
    except AlreadyInitialized:
        raise SystemExit(
            f"keyhive server --dev: {describe_location(location)} was initialized by an earlier run, whose root key "
            "is gone (dev mode keeps it in memory only). Use an empty --data-dir or --storage database."
        ) from None
    finally:
        root_key = catcher.root_key
        node.seal(announce=False)
        node.storage.close()  # the workers open their own, after the fork
    assert root_key is not None
    scheme = "https" if config.tls_cert else "http"
    print(
        DEV_BANNER.format(
            data=describe_location(location),
            endpoint=f"{scheme}://{config.host}:{config.port}",
            akid=result.access_key.access_key_id,
            secret=result.access_key.secret_access_key,
            region=config.region,
        ),
        flush=True,
    )
    return config, root_key


def build_app(config: ServerConfig, *, hsm: Pkcs11Seal | None = None, root_key: bytes | None = None,
              channel: socket.socket | None = None) -> KeyhiveApp:
    """One worker's application: unsealed with ``root_key`` when given (else by its HSM, if any),
    talking to its sibling workers over ``channel``."""
    node = open_node(config, hsm)
    if root_key is not None:
        node.unseal_with_root(root_key)
    elif node.hsm is not None:
        try:
            node.auto_unseal()  # an initialized HSM node unseals itself at start
        except SealError as exc:
            raise SystemExit(f"keyhive server: cannot unseal with the HSM: {exc}") from None
    on_start = [Siblings(node, channel).start] if channel is not None else []
    return KeyhiveApp(node, regions=config.regions, scheduler_interval=config.scheduler_interval, on_start=on_start)


def _storage_location(config: ServerConfig) -> str | Path:
    """The --storage URL, else the --data-dir, else (--dev only) a new temporary data dir."""
    if config.storage is not None:
        if config.data_dir is not None:
            raise SystemExit("keyhive server: give --storage or --data-dir, not both")
        if not is_postgres_url(config.storage):
            raise SystemExit("keyhive server: --storage takes a postgresql:// URL (use --data-dir for SQLite)")
        return config.storage
    if config.data_dir is not None:
        return config.data_dir
    raise SystemExit("keyhive server: --data-dir or --storage is required (or use --dev)")


def _hsm(config: ServerConfig) -> Pkcs11Seal | None:
    if config.seal != "pkcs11":
        return None
    if config.dev:
        raise SystemExit("keyhive server: --dev keeps its root key in memory; it takes no --seal pkcs11")
    missing = [flag for flag, value in (("--pkcs11-module", config.pkcs11_module),
                                         ("--pkcs11-token-label", config.pkcs11_token_label),
                                         ("--pkcs11-key-label", config.pkcs11_key_label)) if not value]
    if missing:
        raise SystemExit(f"keyhive server: --seal pkcs11 needs {', '.join(missing)}")
    try:
        pin = read_pin(file=config.pkcs11_pin_file)
        os.environ.pop(PIN_ENV, None)  # read once; not inherited by anything started later
        return Pkcs11Seal(config.pkcs11_module, config.pkcs11_token_label, config.pkcs11_key_label, pin)  # type: ignore[arg-type]
    except SealError as exc:
        raise SystemExit(f"keyhive server: {exc}") from None


def serve(config: ServerConfig) -> None:
    """The supervisor and its workers (keyhive.supervisor): one port, ``config.workers`` processes."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise SystemExit("keyhive server: --tls-cert and --tls-key go together")
    if config.workers < 1:
        raise SystemExit("keyhive server: --workers must be at least 1")
    hsm = _hsm(config)
    root_key = None
    if config.dev:
        config, root_key = dev_setup(config)
    else:
        open_node(config).storage.close()  # a bad location or migration fails here, once, before any fork
    try:
        sockets = listening_sockets(config.host, config.port, config.workers)
    except OSError as exc:
        raise SystemExit(f"keyhive server: cannot listen on {config.host}:{config.port}: {exc.strerror}") from None

    def worker(sock: socket.socket, channel: socket.socket, root_key: bytes | None) -> None:
        _die_with_parent()
        app = build_app(config, hsm=hsm, root_key=root_key, channel=channel)
        uvicorn.Server(uvicorn.Config(
            app,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            http="httptools",
            log_level=config.log_level,
            access_log=False,
            lifespan="on",
        )).run(sockets=[sock])

    log.info("Keyhive listening on %s:%d with %d worker(s)", config.host, config.port, config.workers)
    supervisor = Supervisor(sockets, worker, root_key=root_key)
    root_key = None
    if not supervisor.run():
        raise SystemExit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the supervisor dies, even by SIGKILL (the channel's
    end-of-file also stops it, a moment later, elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
