"""``keyhive``: server, operator and status commands."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from keyhive import backup
from keyhive.cli.audit import add_commands as add_audit_commands
from keyhive.cli.audit import open_postgres
from keyhive.cli.client import ClientError, call, default_endpoint, error_text
from keyhive.cli.envelope import add_commands as add_envelope_commands
from keyhive.cli.iam import add_commands as add_iam_commands
from keyhive.server import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_PORT,
    DEFAULT_REGION,
    DEFAULT_WORKERS,
    ServerConfig,
    serve,
)
from keyhive.storage import StorageUnavailable
from keyhive.locations import describe_location, hide_password

EXIT_SEALED = 2  # `keyhive status`: 0 unsealed, 2 sealed or not initialized, 1 error


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except ClientError as exc:
        print(f"keyhive: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyhive", description="Keyhive: a key management service speaking the AWS KMS API.")
    commands = parser.add_subparsers(title="commands")

    server = commands.add_parser("server", help="run a Keyhive server")
    server.add_argument("--dev", action="store_true", help="throwaway dev server: auto-unsealed, root key in memory only")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    server.add_argument("--data-dir", type=Path, help="directory of the embedded SQLite database")
    server.add_argument("--storage", metavar="URL",
                        help="postgresql://user@host:port/db: a PostgreSQL database that several nodes share, "
                             "instead of --data-dir (needs the postgres extra; give the password through "
                             "PGPASSWORD or ~/.pgpass, not the URL)")
    server.add_argument("--region", default=DEFAULT_REGION, help=f"home region shown to users (default {DEFAULT_REGION})")
    server.add_argument("--regions", help="comma-separated regions to serve (default: every region)")
    server.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID, help=f"AWS account id of keys and users (default {DEFAULT_ACCOUNT_ID})")
    server.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS")
    server.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    server.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="server log level (default info); no level ever logs a secret")
    server.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="worker processes serving the port (default: the cores this process may use)")
    server.add_argument("--scheduler-interval", type=float, default=60.0, help="seconds between deletion/rotation passes")
    server.add_argument("--barrier-rotation-days", type=float, default=0.0,
                        help="rotate the barrier key after this many days (default 0: only by encryption count)")
    server.add_argument("--seal", choices=["shamir", "pkcs11"], default="shamir",
                        help="shamir: key shares unseal (default); pkcs11: an HSM key wraps the root key, auto-unseal")
    server.add_argument("--pkcs11-module", help="path of the PKCS#11 library (e.g. libsofthsm2.so)")
    server.add_argument("--pkcs11-token-label", help="label of the HSM token")
    server.add_argument("--pkcs11-key-label", help="label of the AES key in the token (created at init if absent)")
    server.add_argument("--pkcs11-pin-file", help="file holding the token PIN (else $KEYHIVE_PKCS11_PIN; never a flag)")
    server.add_argument("--audit-durability", choices=["full", "relaxed"], default="full",
                        help="full: every reply waits until its audit event is durable (default); relaxed: "
                             "read-only calls reply before their event is written (benchmarks only)")
    server.set_defaults(run=_server)

    status = commands.add_parser("status", help="show whether the server is initialized and sealed")
    _endpoint_flag(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_status)

    add_iam_commands(commands)
    add_audit_commands(commands)
    add_envelope_commands(commands)

    operator = commands.add_parser("operator", help="init, unseal, seal, rotate, rekey, migrate, back up and restore a server")
    ops = operator.add_subparsers(title="operator commands")
    init = ops.add_parser("init", help="create the root key, print the key shares and the first admin credentials once")
    _endpoint_flag(init)
    init.add_argument("--shares", type=int, default=5, help="number of key shares (default 5)")
    init.add_argument("--threshold", type=int, default=3, help="shares needed to unseal (default 3)")
    init.add_argument("--json", action="store_true", help="print one JSON object")
    init.set_defaults(run=_init)
    unseal = ops.add_parser("unseal", help="give one key share (prompted, or read from stdin)")
    _endpoint_flag(unseal)
    unseal.set_defaults(run=_unseal)
    seal = ops.add_parser("seal", help="seal the server (admin credentials from the AWS environment)")
    _endpoint_flag(seal)
    seal.set_defaults(run=_seal)
    rotate = ops.add_parser("rotate", help="new barrier key term for new writes (admin); older terms keep decrypting")
    _endpoint_flag(rotate)
    rotate.add_argument("--rewrap", action="store_true",
                        help="then re-wrap every old-term record now and retire unused terms (else the scheduler does)")
    rotate.set_defaults(run=_rotate)
    backup = ops.add_parser("backup", help="write an online, consistent backup of the server to FILE (admin)")
    _endpoint_flag(backup)
    backup.add_argument("file", type=Path, help="where to write the backup")
    backup.set_defaults(run=_backup)
    restore = ops.add_parser("restore", help="restore a backup FILE into an empty data directory or PostgreSQL "
                                             "database (offline)")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--data-dir", type=Path, help="an empty data directory")
    target.add_argument("--storage", metavar="URL",
                        help="an empty PostgreSQL database (postgresql://user@host:port/db); give the password "
                             "through PGPASSWORD or ~/.pgpass, not the URL")
    restore.add_argument("file", type=Path, help="a file written by 'keyhive operator backup'")
    restore.set_defaults(run=_restore)
    migrate = ops.add_parser("migrate-seal", help="move the root key to the HSM or back, with a quorum of shares "
                                                  "(read from stdin or prompted)")
    _endpoint_flag(migrate)
    migrate.add_argument("--to", required=True, choices=["pkcs11", "shamir"], help="the seal to move to")
    migrate.set_defaults(run=_migrate_seal)
    rekey = ops.add_parser("rekey", help="new key shares from a quorum of the current ones (read from stdin or prompted)")
    _endpoint_flag(rekey)
    rekey.add_argument("--shares", type=int, default=5, help="number of new key shares (default 5)")
    rekey.add_argument("--threshold", type=int, default=3, help="new shares needed to unseal (default 3)")
    rekey.add_argument("--json", action="store_true", help="print one JSON object")
    rekey.set_defaults(run=_rekey)
    return parser


def _endpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=None, help="server URL (default $KEYHIVE_ENDPOINT or http://127.0.0.1:%d)" % DEFAULT_PORT)


def _endpoint(args: argparse.Namespace) -> str:
    return args.endpoint or default_endpoint()


def _server(args: argparse.Namespace) -> int:
    regions = frozenset(r.strip() for r in args.regions.split(",") if r.strip()) if args.regions else None
    serve(
        ServerConfig(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            storage=args.storage,
            region=args.region,
            account_id=args.account_id,
            regions=regions,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            dev=args.dev,
            log_level=args.log_level,
            scheduler_interval=args.scheduler_interval,
            audit_durable=args.audit_durability == "full",
            barrier_rotation_days=args.barrier_rotation_days,
            seal=args.seal,
            pkcs11_module=args.pkcs11_module,
            pkcs11_token_label=args.pkcs11_token_label,
            pkcs11_key_label=args.pkcs11_key_label,
            pkcs11_pin_file=args.pkcs11_pin_file,
            workers=args.workers,
        )
    )
    return 0


def _print_status(doc: dict[str, Any]) -> None:
    rows = [
        ("Initialized", doc.get("initialized")),
        ("Sealed", doc.get("sealed")),
        ("Seal type", doc.get("seal_type")),
        ("Total shares", doc.get("shares")),
        ("Threshold", doc.get("threshold")),
        ("Unseal progress", f"{doc.get('progress')}/{doc.get('threshold')}" if doc.get("sealed") and doc.get("initialized") else None),
    ]
    for name, value in rows:
        if value is not None:
            print(f"{name:<16} {str(value).lower() if isinstance(value, bool) else value}")


def _status(args: argparse.Namespace) -> int:
    code, doc = call(_endpoint(args), "GET", "/keyhive/v1/sys/status")
    if code != 200:
        raise ClientError(error_text(doc))
    print(json.dumps(doc)) if args.json else _print_status(doc)
    return 0 if doc["initialized"] and not doc["sealed"] else EXIT_SEALED


def _init(args: argparse.Namespace) -> int:
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/init", {"shares": args.shares, "threshold": args.threshold})
    if code != 200:
        raise ClientError(error_text(doc))
    if args.json:
        print(json.dumps(doc))
        return 0
    recovery = "recovery_shares" in doc
    shares = doc["recovery_shares"] if recovery else doc["shares"]
    for i, share in enumerate(shares, 1):
        print(f"{'Recovery' if recovery else 'Key'} share {i}: {share}")
    print(f"\nAdmin access key id:     {doc['access_key_id']}")
    print(f"Admin secret access key: {doc['secret_access_key']}")
    if recovery:
        print(f"\nKeyhive is initialized and unsealed by its HSM. {doc['threshold']} of these {len(shares)} recovery\n"
              "shares authorize recovery operations; they decrypt nothing. They and the secret are shown only once.")
        return 0
    print(
        f"\nKeyhive is initialized and sealed. Give {doc['threshold']} of these {len(shares)} shares to\n"
        "'keyhive operator unseal' to unseal it. The shares and the secret are shown only\n"
        "this once: store each share with a different person."
    )
    return 0


def _unseal(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        share = getpass.getpass("Key share (hidden): ")
    else:
        share = sys.stdin.readline()
    share = share.strip()
    if not share:
        raise ClientError("no key share given")
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/unseal", {"share": share})
    if code != 200:
        raise ClientError(error_text(doc))
    _print_status(doc)
    return 0


def _seal(args: argparse.Namespace) -> int:
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/seal", {}, sign=True)
    if code != 200:
        raise ClientError(error_text(doc))
    print("Keyhive is sealed.")
    return 0


def _backup(args: argparse.Namespace) -> int:
    code, data = call(_endpoint(args), "POST", "/keyhive/v1/sys/backup", {}, sign=True, raw=True)
    if code != 200:
        raise ClientError(error_text(data))
    backup.unpack(data)  # check the checksum before promising anything
    partial = args.file.with_name(args.file.name + ".partial")
    partial.write_bytes(data)
    partial.replace(args.file)
    print(f"Backup written to {args.file} ({len(data)} bytes). It is sealed: restoring it needs the key shares.")
    return 0


def _restore(args: argparse.Namespace) -> int:
    if args.storage:
        return _restore_into_postgres(args.file, args.storage)
    try:
        backup.restore(args.file, args.data_dir)
    except (backup.BackupError, OSError) as exc:
        raise ClientError(str(exc)) from None
    print(f"Restored into {args.data_dir}. Start 'keyhive server --data-dir {args.data_dir}' and unseal it.")
    return 0


def _restore_into_postgres(backup_file: Path, url: str) -> int:
    where = describe_location(url)
    try:
        database = backup.unpack(backup_file.read_bytes())
    except (backup.BackupError, OSError) as exc:
        raise ClientError(str(exc)) from None
    storage = open_postgres(url)
    try:
        count = backup.restore_into(database, storage, where)
    except backup.BackupError as exc:
        raise ClientError(str(exc)) from None
    except StorageUnavailable as exc:  # nothing was restored, or (lost while committing) maybe all of it
        raise ClientError(f"{where}: {hide_password(exc.log_detail, url)}") from None
    finally:
        storage.close()
    print(f"Restored {count} records into {where}. Start 'keyhive server --storage URL' on it and unseal it.")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/rotate", {}, sign=True)
    if code == 200 and args.rewrap:
        code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/rewrap", {}, sign=True)
    if code != 200:
        raise ClientError(error_text(doc))
    print(f"Active barrier key term: {doc['active_term']} (oldest still in use: {doc['oldest_term']})")
    if args.rewrap:
        print(f"Re-wrapped {doc['rewrapped']} records; retired terms: {doc['retired_terms'] or 'none'}")
    return 0


def _read_quorum(args: argparse.Namespace, what: str) -> list[str]:
    """As many shares as the server's threshold: prompted on a terminal, else one per line of stdin."""
    code, status = call(_endpoint(args), "GET", "/keyhive/v1/sys/status")
    if code != 200 or not status.get("initialized"):
        raise ClientError("Keyhive is not initialized" if code == 200 else error_text(status))
    needed = status["threshold"]
    if sys.stdin.isatty():
        return [getpass.getpass(f"{what} {i + 1} of {needed} (hidden): ").strip() for i in range(needed)]
    return [line.strip() for line in sys.stdin.read().split() if line.strip()]


def _migrate_seal(args: argparse.Namespace) -> int:
    body = {"to": args.to, "shares": _read_quorum(args, "Key share")}
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/migrate-seal", body)
    if code != 200:
        raise ClientError(error_text(doc))
    if args.to == "pkcs11":
        print("The root key is now wrapped by the HSM; the server unseals itself. The key shares are now\n"
              "recovery shares: they authorize recovery operations and decrypt nothing.")
    else:
        print("The root key is now wrapped by the key shares. Restart the server without --seal pkcs11\n"
              "and unseal it with the shares.")
    return 0


def _rekey(args: argparse.Namespace) -> int:
    old = _read_quorum(args, "Current key share")
    body = {"old_shares": old, "shares": args.shares, "threshold": args.threshold}
    code, doc = call(_endpoint(args), "POST", "/keyhive/v1/sys/rekey", body)
    if code != 200:
        raise ClientError(error_text(doc))
    if args.json:
        print(json.dumps(doc))
        return 0
    for i, share in enumerate(doc["shares"], 1):
        print(f"New key share {i}: {share}")
    print(f"\nThe old shares no longer unseal this server. {args.threshold} of these {args.shares} new shares do.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
