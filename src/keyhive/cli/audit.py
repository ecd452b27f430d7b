"""``keyhive audit``: search, export and verify the audit trail.

Every command reads the trail from one source: a running server (``--endpoint``,
signed with the AWS credentials in the environment; the principal needs
``cloudtrail:LookupEvents`` / ``cloudtrail:Export``), a data directory
(``--data-dir``, offline), a PostgreSQL database (``--storage URL``, read directly
without a server), or an export file (``--file``).  Storage is read through one
consistent snapshot, so servers still writing to it cannot make an intact trail
look cut.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from keyhive import backup
from keyhive.audit import reader
from keyhive.cli.client import ClientError, call, default_endpoint, error_text
from keyhive.storage import Storage, StorageUnavailable
from keyhive.locations import describe_location, hide_password
from keyhive.storage.base import is_postgres_url

EXIT_TAMPERED = 1


def add_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="search, export and verify the audit trail")
    ops = audit.add_subparsers(title="audit commands")

    events = ops.add_parser("events", help="events, newest first (a table, or JSON lines with --json)")
    _source_flags(events, allow_file=True)
    events.add_argument("--key", help="key id or ARN")
    events.add_argument("--principal", help="principal ARN or user name")
    events.add_argument("--event-name", help="e.g. Decrypt, CreateKey, Unseal")
    events.add_argument("--errors-only", action="store_true", help="only refused or failed requests")
    events.add_argument("--start", help="from this time (ISO 8601, inclusive)")
    events.add_argument("--end", help="until this time (ISO 8601, exclusive)")
    events.add_argument("--max-items", type=int, default=50, help="page size (default 50)")
    events.add_argument("--next-token", help="the token a previous page printed")
    events.add_argument("--json", action="store_true", help="one JSON event per line")
    events.set_defaults(run=_events)

    export = ops.add_parser("export", help="write the whole trail, with its signatures, as JSON lines")
    _source_flags(export, allow_file=False)
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(run=_export)

    verify = ops.add_parser("verify", help="check every chain and signature; exit 1 naming the first bad record")
    _source_flags(verify, allow_file=True)
    verify.add_argument("--public-key", type=Path,
                        help="trusted public key file (from 'keyhive audit public-key'); default: the trail's own")
    verify.set_defaults(run=_verify)

    public_key = ops.add_parser("public-key", help="print the audit signing key's public part (base64)")
    _source_flags(public_key, allow_file=True)
    public_key.set_defaults(run=_public_key)


def _source_flags(parser: argparse.ArgumentParser, *, allow_file: bool) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--endpoint", help="a running server (default $KEYHIVE_ENDPOINT)")
    source.add_argument("--data-dir", type=Path, help="read a data directory directly, offline")
    source.add_argument("--storage", metavar="URL",
                        help="read a PostgreSQL database directly (postgresql://user@host:port/db), no server "
                             "needed; give the password through PGPASSWORD or ~/.pgpass, not the URL")
    if allow_file:
        source.add_argument("--file", type=Path, help="an export file")


def _trail(args: argparse.Namespace) -> reader.Trail:
    try:
        return _read_trail(args)
    except ValueError as exc:  # a malformed export file or stored head: a message, not a traceback
        raise ClientError(f"cannot read the audit trail: {exc}") from None


def _read_trail(args: argparse.Namespace) -> reader.Trail:
    if getattr(args, "file", None):
        return reader.parse_export(args.file.read_text().splitlines())
    if args.storage:
        return _load(open_postgres(args.storage), args.storage)
    if args.data_dir:
        from keyhive.storage.sqlite import SQLiteStorage

        db = args.data_dir / backup.DATABASE_NAME
        if not db.exists():
            raise ClientError(f"no Keyhive database in {args.data_dir}")
        return _load(SQLiteStorage(db), str(args.data_dir))
    return reader.parse_export(_remote(args, "Export", {})["Lines"])


def _load(storage: Storage, location: str) -> reader.Trail:
    """The trail in one consistent snapshot of ``storage`` (then closed): events and heads from one instant."""
    try:
        database = storage.snapshot()
    except StorageUnavailable as exc:
        raise ClientError(f"cannot read {describe_location(location)}: {hide_password(exc.log_detail, location)}") \
            from None
    finally:
        storage.close()
    with backup.open_snapshot(database) as snapshot:
        return reader.load(snapshot)


def open_postgres(url: str) -> Storage:
    """The PostgreSQL storage at ``url``, for an offline command; else ClientError, never showing the password."""
    if not is_postgres_url(url):
        raise ClientError("--storage takes a postgresql:// URL (use --data-dir for a data directory)")
    try:
        from keyhive.storage.postgres import PostgresStorage
    except ImportError as exc:  # it says which extra to install
        raise ClientError(str(exc)) from None
    import psycopg  # there: the backend imported it
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # its message quotes the whole URL, password and all
        raise ClientError(f"{describe_location(url)}: not a valid PostgreSQL URL") from None
    try:
        return PostgresStorage(url, max_size=2)
    except StorageUnavailable as exc:
        detail = exc.log_detail
    except (ValueError, psycopg.Error) as exc:  # not a UTF8 database; no right to create Keyhive's tables
        detail = str(exc)
    raise ClientError(f"{describe_location(url)}: {hide_password(detail, url)}")


def _remote(args: argparse.Namespace, action: str, body: dict[str, Any]) -> dict[str, Any]:
    code, doc = call(args.endpoint or default_endpoint(), "POST", f"/keyhive/v1/audit/{action}", body, sign=True)
    if code != 200:
        raise ClientError(error_text(doc))
    return doc


def _events(args: argparse.Namespace) -> int:
    query = {"KeyId": args.key, "Principal": args.principal, "EventName": args.event_name,
             "ErrorsOnly": args.errors_only, "StartTime": args.start, "EndTime": args.end,
             "MaxResults": args.max_items, "NextToken": args.next_token}
    query = {k: v for k, v in query.items() if v not in (None, False)}
    if args.endpoint or not (args.data_dir or args.storage or args.file):
        page = _remote(args, "LookupEvents", query)
    else:
        from keyhive.protocol.audit_query import lookup_events

        page = lookup_events(_trail(args), query)
    if args.json:
        for event in page["Events"]:
            print(json.dumps(event))
    else:
        _table(page["Events"])
    if page.get("NextToken"):
        print(f"More: --next-token {page['NextToken']}", file=sys.stderr)
    return 0


def _table(events: list[dict[str, Any]]) -> None:
    print(f"{'TIME':<21} {'EVENT':<28} {'PRINCIPAL':<40} {'RESULT':<30} RESOURCE")
    for e in events:
        who = (e.get("userIdentity") or {}).get("arn") or (e.get("userIdentity") or {}).get("invokedBy") or "-"
        resources = ",".join(r.get("ARN", "") for r in e.get("resources") or []) or "-"
        print(f"{e.get('eventTime', ''):<21} {e.get('eventName', ''):<28} {who:<40} "
              f"{e.get('errorCode', 'OK'):<30} {resources}")


def _export(args: argparse.Namespace) -> int:
    lines = "\n".join(reader.export_lines(_trail(args))) + "\n"
    if args.output:
        args.output.write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


def _verify(args: argparse.Namespace) -> int:
    trail = _trail(args)
    key = base64.b64decode(args.public_key.read_text().strip()) if args.public_key else None
    failures = [str(problem) for problem in reader.check(trail, key)]
    if key is not None and trail.public_key is not None and trail.public_key != key:
        failures.append("the trail's own public key is not the trusted one given with --public-key (replaced?)")
    if failures:
        print(f"audit trail FAILED verification: {failures[0]}", file=sys.stderr)
        for failure in failures[1:]:
            print(f"  also: {failure}", file=sys.stderr)
        return EXIT_TAMPERED
    writers = len({r.writer for r in trail.records})
    checked = "every chain and signature intact" if (key or trail.public_key) else \
        "every chain intact; no public key, so no signature was checked"
    print(f"audit trail verified: {len(trail.records)} events from {writers} writers, {checked}")
    return 0


def _public_key(args: argparse.Namespace) -> int:
    trail = _trail(args)
    if trail.public_key is None:
        raise ClientError("this trail has no public key (not initialized)")
    print(base64.b64encode(trail.public_key).decode())
    return 0
