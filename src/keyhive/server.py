"""Running a Keyhive server: storage, node, seal, then uvicorn."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from keyhive.node import AlreadyInitialized, Node, dev_unseal
from keyhive.protocol.app import KeyhiveApp
from keyhive.seal import SealError
from keyhive.seal.pkcs11 import PIN_ENV, Pkcs11Seal, read_pin
from keyhive.storage import StorageUnavailable, open_storage
from keyhive.storage.base import is_postgres_url

log = logging.getLogger("keyhive.server")

DEFAULT_PORT = 8300
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "111122223333"


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


DEV_BANNER = """\
==> Keyhive dev server
    WARNING: dev mode keeps its root key only in this process's memory, and its data in
    {data}. Never store real keys in it.

    Endpoint:          {endpoint}
    Access key id:     {akid}
    Secret access key: {secret}

    export AWS_ACCESS_KEY_ID={akid} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION={region}
    aws kms create-key --endpoint-url {endpoint}
"""


def build_app(config: ServerConfig) -> KeyhiveApp:
    location = _storage_location(config)
    try:
        storage = open_storage(location)
    except StorageUnavailable as exc:
        raise SystemExit(f"keyhive server: {exc.log_detail}") from None
    except (ImportError, ValueError) as exc:
        raise SystemExit(f"keyhive server: {exc}") from None
    node = Node(storage, account_id=config.account_id, hsm=_hsm(config))
    node.audit.durable = config.audit_durable
    node.barrier_rotation_interval = config.barrier_rotation_days * 86400
    if node.hsm is not None:
        try:
            node.auto_unseal()  # an initialized HSM node unseals itself at start
        except SealError as exc:
            raise SystemExit(f"keyhive server: cannot unseal with the HSM: {exc}") from None
    if config.dev:
        try:
            result = dev_unseal(
                node,
                access_key_id=os.environ.get("KEYHIVE_DEV_ACCESS_KEY_ID"),
                secret_access_key=os.environ.get("KEYHIVE_DEV_SECRET_ACCESS_KEY"),
            )
        except AlreadyInitialized:
            raise SystemExit(
                f"keyhive server --dev: {_describe(location)} was initialized by an earlier run, whose root key "
                "is gone (dev mode keeps it in memory only). Use an empty --data-dir or --storage database."
            ) from None
        scheme = "https" if config.tls_cert else "http"
        print(
            DEV_BANNER.format(
                data=_describe(location),
                endpoint=f"{scheme}://{config.host}:{config.port}",
                akid=result.access_key.access_key_id,
                secret=result.access_key.secret_access_key,
                region=config.region,
            ),
            flush=True,
        )
    return KeyhiveApp(node, regions=config.regions, scheduler_interval=config.scheduler_interval)


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
    if not config.dev:
        raise SystemExit("keyhive server: --data-dir or --storage is required (or use --dev)")
    return Path(tempfile.mkdtemp(prefix="keyhive-dev-"))


def _describe(location: str | Path) -> str:
    """Where the data is, for messages: a URL loses its password (in the authority or the query)."""
    if not is_postgres_url(location):
        return str(location)
    parts = urllib.parse.urlsplit(str(location))
    if parts.password is not None:
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}")
    query = "&".join("password=***" if item.startswith("password=") else item for item in parts.query.split("&"))
    return urllib.parse.urlunsplit(parts._replace(query=query))


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
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise SystemExit("keyhive server: --tls-cert and --tls-key go together")
    app = build_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_level=config.log_level,
        access_log=False,
        lifespan="on",
    )
