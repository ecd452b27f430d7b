"""Tampering with a real trail: `keyhive audit verify` exits 1 naming the first bad record.

A Shamir-sealed ``--data-dir`` server makes a trail of a few hundred events from
concurrent requests (so group commits happen), is restarted once (so a second writer
names the first one's head), and stopped.  Then each kind of tampering is done on a
fresh copy of the database and of the export file, with sqlite3 and a text editor's
means, and ``keyhive audit verify`` runs offline on the copy.  A pristine copy still
passes; every tampered one must fail and name the record (writer and seq).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from keyhive import crypto
from keyhive.audit.chain import head_message, link
from tests.conftest import RunningServer, admin_call, start_server
from tests.integration.test_audit import keyhive

THREADS = 8
ENCRYPTS_PER_THREAD = 40
FIRST_LINE = re.compile(r"^audit trail FAILED verification: writer (\S+) record (\d+): ")


@dataclass
class Original:
    data_dir: Path
    export: Path
    public_key: Path
    first: str  # the first writer (ran before the restart)
    second: str  # the writer after the restart; its AuditWriterStarted names the first
    counts: dict[str, int]
    older_head: dict[str, Any]  # the first writer's head as it stood before its last requests


def unseal(server: RunningServer, share: str) -> None:
    code, reply = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
    assert code == 200 and reply["sealed"] is False, reply


def encrypt_concurrently(server: RunningServer, creds: tuple[str, str], key_id: str) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client = server.client(*creds)
            for i in range(ENCRYPTS_PER_THREAD):
                client.encrypt(KeyId=key_id, Plaintext=b"%d" % i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def settle_signed(server: RunningServer, creds: tuple[str, str]) -> None:
    """One more request after the signing interval, so the head is signed at the chain's end."""
    import time

    time.sleep(0.6)
    server.client(*creds).list_keys()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Original]:
    tmp = tmp_path_factory.mktemp("tamper")
    data = tmp / "data"
    server = start_server(tmp, "--data-dir", str(data))
    try:
        code, init = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 1, "threshold": 1})
        assert code == 200, init
        creds = (init["access_key_id"], init["secret_access_key"])
        unseal(server, init["shares"][0])
        key_id = server.client(*creds).create_key()["KeyMetadata"]["KeyId"]
        encrypt_concurrently(server, creds, key_id)
        with sqlite3.connect(data / "keyhive.db") as db:
            (older_head,) = [json.loads(v) for (v,) in db.execute(
                "SELECT value FROM records WHERE path LIKE 'audit/heads/%'")]
        settle_signed(server, creds)
    finally:
        server.stop()
    server = start_server(tmp, "--data-dir", str(data))
    try:
        unseal(server, init["shares"][0])
        client = server.client(*creds)
        for i in range(10):
            client.encrypt(KeyId=key_id, Plaintext=b"after restart %d" % i)
        settle_signed(server, creds)
    finally:
        server.stop()

    export, public_key = tmp / "trail.jsonl", tmp / "audit.pub"
    run = keyhive("audit", "export", "--data-dir", str(data), "-o", str(export))
    assert run.returncode == 0, run.stderr
    run = keyhive("audit", "public-key", "--data-dir", str(data))
    assert run.returncode == 0, run.stderr
    public_key.write_text(run.stdout)
    records = [json.loads(line) for line in export.read_text().splitlines() if json.loads(line)["type"] == "record"]
    started = {r["writer"]: r["event"]["additionalEventData"]["previousWriters"]
               for r in records if r["event"]["eventName"] == "AuditWriterStarted"}
    assert len(started) == 2
    first = next(w for w, previous in started.items() if previous == [])
    second = next(w for w, previous in started.items() if previous)
    assert [p["writer"] for p in started[second]] == [first]
    counts = {w: sum(1 for r in records if r["writer"] == w) for w in (first, second)}
    assert counts[first] >= THREADS * ENCRYPTS_PER_THREAD + 3 and counts[second] >= 12
    yield Original(data, export, public_key, first, second, counts, older_head)


# -- running verify --------------------------------------------------------------------------
def verify(*source: str, public_key: Path | None = None) -> tuple[int, str]:
    run = keyhive("audit", "verify", *source, *(["--public-key", str(public_key)] if public_key else []))
    return run.returncode, run.stderr


def assert_fails_at(result: tuple[int, str], writer: str, seq: int, reason: str = "") -> None:
    code, stderr = result
    assert code == 1, stderr
    match = FIRST_LINE.match(stderr)
    assert match, stderr
    assert (match.group(1), int(match.group(2))) == (writer, seq), stderr
    assert reason in stderr.splitlines()[0], stderr


# -- copies to tamper with -------------------------------------------------------------------------
@pytest.fixture
def db_copy(original: Original, tmp_path: Path) -> Iterator[Callable[[], tuple[Path, sqlite3.Connection]]]:
    """A fresh copy of the stopped server's database: (data dir, an open connection to it)."""
    opened: list[sqlite3.Connection] = []

    def make() -> tuple[Path, sqlite3.Connection]:
        directory = tmp_path / f"copy{len(opened)}"
        directory.mkdir()
        source = sqlite3.connect(original.data_dir / "keyhive.db")
        target = sqlite3.connect(directory / "keyhive.db", isolation_level=None)
        source.backup(target)
        source.close()
        opened.append(target)
        return directory, target

    yield make
    for db in opened:
        db.close()


def event_row(db: sqlite3.Connection, writer: str, seq: int) -> dict[str, Any]:
    (value,) = db.execute("SELECT value FROM records WHERE path = ?", (f"audit/events/{writer}/{seq:020d}",)).fetchone()
    return dict(json.loads(value))


def put_event(db: sqlite3.Connection, writer: str, seq: int, record: dict[str, Any]) -> None:
    db.execute("INSERT OR REPLACE INTO records (path, value) VALUES (?, ?)",
               (f"audit/events/{writer}/{seq:020d}", json.dumps(record).encode()))


def delete_event(db: sqlite3.Connection, writer: str, seq: int) -> None:
    assert db.execute("DELETE FROM records WHERE path = ?", (f"audit/events/{writer}/{seq:020d}",)).rowcount == 1


def head_row(db: sqlite3.Connection, writer: str) -> dict[str, Any]:
    (value,) = db.execute("SELECT value FROM records WHERE path = ?", (f"audit/heads/{writer}",)).fetchone()
    return dict(json.loads(value))


def put_head(db: sqlite3.Connection, writer: str, head: dict[str, Any]) -> None:
    db.execute("UPDATE records SET value = ? WHERE path = ?", (json.dumps(head).encode(), f"audit/heads/{writer}"))


def export_copy(original: Original, tmp_path: Path, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Path:
    lines = [json.loads(line) for line in original.export.read_text().splitlines()]
    path = tmp_path / "tampered.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in edit(lines)))
    return path


def find(lines: list[dict[str, Any]], writer: str, seq: int) -> int:
    return next(i for i, d in enumerate(lines) if d["type"] == "record" and (d["writer"], d["seq"]) == (writer, seq))


# -- the pristine trail ------------------------------------------------------------------------------
def test_pristine_trail_verifies_offline_and_from_its_export(original: Original, db_copy: Any) -> None:
    code, stderr = verify("--data-dir", str(original.data_dir))
    assert (code, stderr) == (0, "")
    assert verify("--data-dir", str(original.data_dir), public_key=original.public_key) == (0, "")
    assert verify("--file", str(original.export), public_key=original.public_key) == (0, "")
    directory, _ = db_copy()
    assert verify("--data-dir", str(directory), public_key=original.public_key) == (0, "")
    run = keyhive("audit", "verify", "--file", str(original.export))
    total = sum(original.counts.values())
    assert run.stdout.strip() == (f"audit trail verified: {total} events from 2 writers, "
                                  "every chain and signature intact")


# -- tampering in the database ------------------------------------------------------------------------
def test_db_edited_event_field(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    record = event_row(db, original.first, 100)
    record["event"]["sourceIPAddress"] = "10.9.8.7"
    put_event(db, original.first, 100, record)
    assert_fails_at(verify("--data-dir", str(directory)), original.first, 100, "hash mismatch")


def test_db_deleted_middle_event(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    delete_event(db, original.first, 150)
    assert_fails_at(verify("--data-dir", str(directory)), original.first, 150, "missing")


def test_db_reordered_events(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    a, b = event_row(db, original.first, 200), event_row(db, original.first, 201)
    put_event(db, original.first, 200, b)  # each value now sits at the other's place
    put_event(db, original.first, 201, a)
    assert_fails_at(verify("--data-dir", str(directory)), original.first, 200, "hash mismatch")


def test_db_inserted_forged_event(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    writer, count = original.first, original.counts[original.first]
    for seq in range(count, 119, -1):  # make room at 120, renumbering what follows
        record = event_row(db, writer, seq)
        record["seq"] = seq + 1
        put_event(db, writer, seq + 1, record)
    previous = event_row(db, writer, 119)
    forged_event = dict(previous["event"], eventName="DisableKey", eventID="forged")
    forged = {"writer": writer, "seq": 120, "prev": previous["hash"], "event": forged_event,
              "hash": link(previous["hash"], 120, forged_event)}
    put_event(db, writer, 120, forged)
    # The forgery links to 119 as a real record would; the one after it cannot link to it.
    assert_fails_at(verify("--data-dir", str(directory)), writer, 121, "hash mismatch")


def test_db_forged_event_appended(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    writer, count = original.second, original.counts[original.second]
    last = event_row(db, writer, count)
    forged_event = dict(last["event"], eventID="forged")
    put_event(db, writer, count + 1, {"writer": writer, "seq": count + 1, "prev": last["hash"],
                                      "event": forged_event, "hash": link(last["hash"], count + 1, forged_event)})
    assert_fails_at(verify("--data-dir", str(directory)), writer, count + 1, "appended")


def test_db_tail_cut_with_the_head_left_as_is(original: Original, db_copy: Any) -> None:
    for writer in (original.second, original.first):
        directory, db = db_copy()
        count = original.counts[writer]
        for seq in range(count - 4, count + 1):
            delete_event(db, writer, seq)
        assert_fails_at(verify("--data-dir", str(directory)), writer, count - 4, "tail cut")


def test_db_tail_cut_with_the_head_deleted_or_moved(original: Original, db_copy: Any) -> None:
    writer, count = original.second, original.counts[original.second]
    directory, db = db_copy()
    for seq in range(count - 4, count + 1):
        delete_event(db, writer, seq)
    db.execute("DELETE FROM records WHERE path = ?", (f"audit/heads/{writer}",))
    assert_fails_at(verify("--data-dir", str(directory)), writer, count - 5, "no head")

    directory, db = db_copy()
    for seq in range(count - 4, count + 1):
        delete_event(db, writer, seq)
    head = head_row(db, writer)
    assert head["seq"] == count and head["signed_seq"] in (None, count)  # signed at the end (settle_signed)
    new_last = event_row(db, writer, count - 5)
    put_head(db, writer, {**head, "seq": count - 5, "hash": new_last["hash"]})  # the signature no longer fits
    assert_fails_at(verify("--data-dir", str(directory)), writer, count - 5, "signature does not verify")
    # Carrying the real signature forward as a checkpoint does not help: it names a record past the end.
    put_head(db, writer, {**head, "seq": count - 5, "hash": new_last["hash"],
                          "signed_seq": count, "signed_hash": head["hash"]})
    assert_fails_at(verify("--data-dir", str(directory)), writer, count - 4, "past the chain's end")


def test_db_earlier_writer_tail_cut_and_head_moved_is_caught_by_the_later_writer(original: Original,
                                                                                  db_copy: Any) -> None:
    writer, count = original.first, original.counts[original.first]
    directory, db = db_copy()
    for seq in range(count - 2, count + 1):
        delete_event(db, writer, seq)
    new_last = event_row(db, writer, count - 3)
    put_head(db, writer, {**head_row(db, writer), "seq": count - 3, "hash": new_last["hash"]})
    code, stderr = verify("--data-dir", str(directory))
    assert_fails_at((code, stderr), writer, count - 3, "head signature does not verify")
    assert f"writer {writer} record {count - 2}: writer {original.second} record 1 names record {count}" in stderr


def test_db_earlier_writer_rolled_back_to_a_genuine_older_head(original: Original, db_copy: Any) -> None:
    """Its tail cut back to a head it really signed earlier (as an old backup holds): only the
    later writer's AuditWriterStarted, which names the final head, tells."""
    writer, count = original.first, original.counts[original.first]
    old = original.older_head
    assert old["seq"] < count
    directory, db = db_copy()
    for seq in range(old["seq"] + 1, count + 1):
        delete_event(db, writer, seq)
    put_head(db, writer, old)
    code, stderr = verify("--data-dir", str(directory))
    assert code == 1
    assert stderr.splitlines() == [(f"audit trail FAILED verification: writer {writer} record {old['seq'] + 1}: "
                                    f"writer {original.second} record 1 names record {count} of this writer, "
                                    "which is missing or changed")]


def test_db_tampered_head_signature(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    head = head_row(db, original.second)
    signature = base64.b64decode(head["signature"])
    head["signature"] = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    put_head(db, original.second, head)
    assert head["signed_seq"] in (None, head["seq"])  # signed at the end (settle_signed)
    assert_fails_at(verify("--data-dir", str(directory)), original.second, original.counts[original.second],
                    "signature does not verify")


def test_db_public_key_replaced(original: Original, db_copy: Any) -> None:
    _, attacker_public = crypto.new_signing_key()
    directory, db = db_copy()
    db.execute("UPDATE records SET value = ? WHERE path = 'audit/public-key'", (base64.b64encode(attacker_public),))
    writers = sorted([original.first, original.second])  # verify reports writers in storage order
    code, stderr = verify("--data-dir", str(directory))
    assert_fails_at((code, stderr), writers[0], original.counts[writers[0]], "signature does not verify")
    code, stderr = verify("--data-dir", str(directory), public_key=original.public_key)
    assert code == 1 and "public key is not the trusted one" in stderr, stderr


def test_db_forged_and_resigned_with_a_replaced_public_key(original: Original, db_copy: Any) -> None:
    """The attacker edits an event, rehashes, re-signs every head with a key of their own and
    stores its public part: only the trusted public key file tells."""
    attacker_private, attacker_public = crypto.new_signing_key()
    directory, db = db_copy()
    writer, count = original.second, original.counts[original.second]
    previous = event_row(db, writer, 4)["prev"]
    for seq in range(4, count + 1):
        record = event_row(db, writer, seq)
        if seq == 4:
            record["event"]["sourceIPAddress"] = "10.9.8.7"
        record["prev"], record["hash"] = previous, link(previous, seq, record["event"])
        put_event(db, writer, seq, record)
        previous = record["hash"]
    for w in (original.first, original.second):
        head = head_row(db, w)
        if w == writer:
            head["hash"] = previous
        signed_seq = head.get("signed_seq") or head["seq"]
        signed_hash = head.get("signed_hash") or head["hash"]
        if w == writer:
            head["signed_seq"], head["signed_hash"] = None, None
            signed_seq, signed_hash = head["seq"], head["hash"]
        head["signature"] = base64.b64encode(crypto.sign(attacker_private, head_message(w, signed_seq, signed_hash))).decode()
        put_head(db, w, head)
    db.execute("UPDATE records SET value = ? WHERE path = 'audit/public-key'", (base64.b64encode(attacker_public),))
    assert verify("--data-dir", str(directory)) == (0, "")  # consistent with the key it carries
    code, stderr = verify("--data-dir", str(directory), public_key=original.public_key)
    writers = sorted([original.first, original.second])
    assert_fails_at((code, stderr), writers[0], original.counts[writers[0]], "signature does not verify")
    assert f"writer {writer} record {count}: head signature does not verify" in stderr


def test_db_earlier_writer_deleted_after_the_restart(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    db.execute("DELETE FROM records WHERE path LIKE ?", (f"audit/events/{original.first}/%",))
    code, stderr = verify("--data-dir", str(directory))
    assert_fails_at((code, stderr), original.first, 1, "every record of this writer is missing")
    db.execute("DELETE FROM records WHERE path = ?", (f"audit/heads/{original.first}",))
    code, stderr = verify("--data-dir", str(directory))
    assert_fails_at((code, stderr), original.first, 1,
                    f"writer {original.second} record 1 names record {original.counts[original.first]}")


def test_db_unreadable_record_is_reported_not_a_crash(original: Original, db_copy: Any) -> None:
    directory, db = db_copy()
    db.execute("UPDATE records SET value = ? WHERE path = ?",
               (b"\x00not json", f"audit/events/{original.first}/{77:020d}"))
    assert_fails_at(verify("--data-dir", str(directory)), original.first, 77)


# -- tampering in the export file ---------------------------------------------------------------------
def test_export_edited_event_field(original: Original, tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lines[find(lines, original.first, 100)]["event"]["eventName"] = "Decrypt"
        return lines

    path = export_copy(original, tmp_path, edit)
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first, 100, "hash mismatch")


def test_export_deleted_middle_event(original: Original, tmp_path: Path) -> None:
    path = export_copy(original, tmp_path, lambda lines: lines[:find(lines, original.first, 150)]
                       + lines[find(lines, original.first, 150) + 1:])
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first, 150, "missing")


def test_export_reordered_events(original: Original, tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        a, b = find(lines, original.first, 200), find(lines, original.first, 201)
        lines[a]["event"], lines[b]["event"] = lines[b]["event"], lines[a]["event"]
        return lines

    path = export_copy(original, tmp_path, edit)
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first, 200, "hash mismatch")


def test_export_inserted_forged_event(original: Original, tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        at = find(lines, original.first, 120)
        previous = lines[at - 1]
        forged_event = dict(previous["event"], eventID="forged")
        forged = {"type": "record", "writer": original.first, "seq": 120, "prev": previous["hash"],
                  "event": forged_event, "hash": link(previous["hash"], 120, forged_event)}
        return lines[:at] + [forged] + lines[at:]

    path = export_copy(original, tmp_path, edit)
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first, 120)


def test_export_tail_cut(original: Original, tmp_path: Path) -> None:
    count = original.counts[original.second]
    doomed = {(original.second, seq) for seq in range(count - 4, count + 1)}
    path = export_copy(original, tmp_path, lambda lines: [
        d for d in lines if d["type"] != "record" or (d["writer"], d["seq"]) not in doomed])
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.second, count - 4, "tail cut")


def test_export_tampered_head_signature(original: Original, tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        head = next(d for d in lines if d["type"] == "head" and d["writer"] == original.first)
        signature = base64.b64decode(head["signature"])
        head["signature"] = base64.b64encode(signature[:-1] + bytes([signature[-1] ^ 0x80])).decode()
        return lines

    path = export_copy(original, tmp_path, edit)
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first,
                    original.counts[original.first], "signature does not verify")


def test_export_public_key_replaced(original: Original, tmp_path: Path) -> None:
    _, attacker_public = crypto.new_signing_key()

    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lines[0]["publicKey"] = base64.b64encode(attacker_public).decode()
        return lines

    path = export_copy(original, tmp_path, edit)
    code, stderr = verify("--file", str(path))
    assert code == 1 and "head signature does not verify" in stderr, stderr
    code, stderr = verify("--file", str(path), public_key=original.public_key)
    assert code == 1 and "public key is not the trusted one" in stderr, stderr


def test_export_earlier_writer_deleted(original: Original, tmp_path: Path) -> None:
    path = export_copy(original, tmp_path, lambda lines: [d for d in lines if d.get("writer") != original.first])
    assert_fails_at(verify("--file", str(path), public_key=original.public_key), original.first, 1,
                    f"writer {original.second} record 1 names")


def test_export_malformed_line_is_an_error_not_a_crash(original: Original, tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lines[find(lines, original.first, 5)]["seq"] = "five"
        return lines

    path = export_copy(original, tmp_path, edit)
    code, stderr = verify("--file", str(path), public_key=original.public_key)
    assert code == 1 and "export line" in stderr and "Traceback" not in stderr, stderr
