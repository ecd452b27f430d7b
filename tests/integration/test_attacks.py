"""Attacks on a running Keyhive: read its disk, tamper with ciphertexts, move records, forge requests.

In the manner of OpenBao's barrier tests: ``_Confidential`` (the raw store holds no
secret), ``_Integrity`` (a flipped byte fails), ``_MoveIntegrity`` (a record moved
to another path fails), each against a real server process.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, REGION, RunningServer, admin_call, start_server

ACCOUNT = "111122223333"
# 32 distinctive bytes: easy to spot on disk or in a log, in any encoding.
PLAINTEXT = b"KEYHIVE-ATTACK-PLAINTEXT-7f3a9c!"
CONTEXT = {"purpose": "attack-test", "tenant": "t-42"}
RECORD_FORMAT = 1
RECORD_HEADER_BYTES = 1 + 4 + 12  # format, term, nonce
TAG_BYTES = 16


def error_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def encodings(secret: bytes) -> list[bytes]:
    """The forms a careless implementation would write a secret in."""
    b64 = base64.b64encode(secret)
    return [secret, b64, b64.rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"="),
            secret.hex().encode(), secret.hex().upper().encode()]


@dataclass
class Made:
    """What the module created through the dev server, and the secrets it saw."""

    key_a: str
    key_b: str
    ciphertext: bytes  # PLAINTEXT under key A with CONTEXT
    data_keys: list[bytes] = field(default_factory=list)
    secrets: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("attacks")
    running = start_server(tmp, "--dev", "--data-dir", str(tmp / "data"), "--log-level", "debug")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def kms(server: RunningServer):  # type: ignore[no-untyped-def]
    return server.client()


@pytest.fixture(scope="module")
def made(kms) -> Made:  # type: ignore[no-untyped-def]
    key_a = kms.create_key(Description="attack A")["KeyMetadata"]["KeyId"]
    key_b = kms.create_key(Description="attack B")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/attack-a", TargetKeyId=key_a)
    ciphertext = kms.encrypt(KeyId=key_a, Plaintext=PLAINTEXT, EncryptionContext=CONTEXT)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT)["Plaintext"] == PLAINTEXT
    data_keys = [kms.generate_data_key(KeyId=k, KeySpec="AES_256")["Plaintext"] for k in (key_a, key_b, key_b)]
    data_keys.append(kms.generate_data_key(KeyId="alias/attack-a", NumberOfBytes=64,
                                           EncryptionContext=CONTEXT)["Plaintext"])
    reencrypted = kms.re_encrypt(CiphertextBlob=ciphertext, SourceEncryptionContext=CONTEXT,
                                 DestinationKeyId=key_b)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=reencrypted)["Plaintext"] == PLAINTEXT
    assert all(len(k) in (32, 64) for k in data_keys) and len(set(data_keys)) == 4
    return Made(key_a, key_b, ciphertext, data_keys, [PLAINTEXT, *data_keys, DEV_SECRET_ACCESS_KEY.encode()])


def database_copy(data_dir: Path, into: Path) -> Path:
    """A consistent copy of the live database files (the server is idle)."""
    into.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = data_dir / f"keyhive.db{suffix}"
        if source.exists():
            shutil.copyfile(source, into / source.name)
    return into / "keyhive.db"


def records(db_path: Path) -> dict[str, bytes]:
    with sqlite3.connect(db_path) as db:
        return {path: bytes(value) for path, value in db.execute("SELECT path, value FROM records")}


# -- confidentiality: the raw store holds no secret -------------------------------------------
def test_raw_database_files_hold_no_secret(server: RunningServer, made: Made) -> None:
    assert server.data_dir is not None
    files = [server.data_dir / "keyhive.db", server.data_dir / "keyhive.db-wal"]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert len(raw) > 4096  # the files are really there
    assert DEV_ACCESS_KEY_ID.encode() in raw  # an access key id is a path, not a secret: the scan sees it
    for secret in made.secrets:
        for form in encodings(secret):
            assert form not in raw, f"a secret ({len(secret)} bytes) is on disk as {form[:6]!r}..."


def test_every_record_is_a_sealed_barrier_record(server: RunningServer, made: Made, tmp_path: Path) -> None:
    assert server.data_dir is not None
    rows = records(database_copy(server.data_dir, tmp_path / "copy"))
    prefix = f"kms/{ACCOUNT}/{REGION}"
    expected = {
        "core/seal-config", "core/root", "core/keyring", f"iam/access-keys/{DEV_ACCESS_KEY_ID}",
        f"{prefix}/key/{made.key_a}", f"{prefix}/key/{made.key_b}",
        f"{prefix}/material/{made.key_a}/0000000001", f"{prefix}/material/{made.key_b}/0000000001",
        f"{prefix}/alias/alias/attack-a",
    }
    assert expected <= set(rows)
    assert json.loads(rows.pop("core/seal-config")) == {"type": "shamir", "shares": 1, "threshold": 1}
    # The audit trail is readable offline by design (verify needs only the public key);
    # it must hold no secret, which the raw-file scan above checks byte for byte.
    public = {p: rows.pop(p) for p in list(rows) if p.startswith(("audit/events/", "audit/heads/", "audit/usage/"))
              or p in ("audit/public-key", "audit/tracking-start")}
    assert any(p.startswith("audit/events/") for p in public) and "audit/public-key" in public
    for value in public.values():
        for secret in made.secrets:
            assert secret not in value
    # Leases (who runs the cluster's scheduled work, until when) are plain by design: no secret in them.
    for path in [p for p in rows if p.startswith("core/leases/")]:
        assert set(json.loads(rows.pop(path))) <= {"version", "holder", "expires"}
    nonces = set()
    for path, value in rows.items():
        assert value[0] == RECORD_FORMAT, path
        term = int.from_bytes(value[1:5], "big")
        assert term == (0 if path in ("core/root", "core/keyring") else 1), path
        assert len(value) >= RECORD_HEADER_BYTES + TAG_BYTES, path
        nonces.add(value[5:RECORD_HEADER_BYTES])
        with pytest.raises(ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            json.loads(value)
        for secret in made.secrets:
            assert secret not in value
    assert len(nonces) == len(rows)  # no nonce is ever reused
    # Key material is 32 bytes: the sealed row is header + 32 + tag, nothing more.
    material = rows[f"{prefix}/material/{made.key_a}/0000000001"]
    assert len(material) == RECORD_HEADER_BYTES + 32 + TAG_BYTES
    assert len(rows["core/root"]) == RECORD_HEADER_BYTES + 32 + TAG_BYTES


# -- integrity: every tampered ciphertext is the same InvalidCiphertextException ----------------
def test_flipped_byte_anywhere_in_a_blob_is_invalid_ciphertext(kms, made: Made) -> None:  # type: ignore[no-untyped-def]
    blob = made.ciphertext
    assert len(blob) == 49 + len(PLAINTEXT) + 16
    assert blob[0] == 1 and blob[1:17] == _uuid_bytes(made.key_a)
    regions = {  # the blob's layout (src/keyhive/blob.py): every class of position
        "format": [0], "key id": list(range(1, 17)), "version": list(range(17, 21)),
        "salt": list(range(21, 37)), "nonce": list(range(37, 49)),
        "body": list(range(49, 49 + len(PLAINTEXT))), "tag": list(range(len(blob) - 16, len(blob))),
    }
    assert sorted(i for r in regions.values() for i in r) == list(range(len(blob)))
    answers = set()
    for name, positions in regions.items():
        for i in positions:
            for flip in (0x01, 0x80):
                bad = bytearray(blob)
                bad[i] ^= flip
                with pytest.raises(ClientError) as info:
                    kms.decrypt(CiphertextBlob=bytes(bad), EncryptionContext=CONTEXT)
                error = info.value.response["Error"]
                answers.add((error["Code"], error.get("Message", ""),
                             info.value.response["ResponseMetadata"]["HTTPStatusCode"]))
                assert error["Code"] == "InvalidCiphertextException", (name, i, flip)
    assert answers == {("InvalidCiphertextException", "", 400)}  # one answer, no hint of the check


def test_truncated_extended_or_recontexted_blob_is_invalid_ciphertext(kms, made: Made) -> None:  # type: ignore[no-untyped-def]
    blob = made.ciphertext
    cases = [
        dict(CiphertextBlob=blob[:-1], EncryptionContext=CONTEXT),
        dict(CiphertextBlob=blob + b"\x00", EncryptionContext=CONTEXT),
        dict(CiphertextBlob=blob[:49 + 15], EncryptionContext=CONTEXT),
        dict(CiphertextBlob=blob),  # context missing
        dict(CiphertextBlob=blob, EncryptionContext={**CONTEXT, "tenant": "t-43"}),
        dict(CiphertextBlob=blob, EncryptionContext={**CONTEXT, "extra": ""}),
    ]
    for request in cases:
        assert error_of(lambda: kms.decrypt(**request)) == ("InvalidCiphertextException", 400)
    bad = bytearray(blob)
    bad[60] ^= 1
    assert error_of(lambda: kms.re_encrypt(CiphertextBlob=bytes(bad), SourceEncryptionContext=CONTEXT,
                                           DestinationKeyId=made.key_b)) == ("InvalidCiphertextException", 400)


def test_ciphertext_of_key_a_with_key_id_b_is_incorrect_key(kms, made: Made) -> None:  # type: ignore[no-untyped-def]
    for key_ref in (made.key_b, f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{made.key_b}"):
        assert error_of(lambda: kms.decrypt(CiphertextBlob=made.ciphertext, EncryptionContext=CONTEXT,
                                            KeyId=key_ref)) == ("IncorrectKeyException", 400)
    reply = kms.decrypt(CiphertextBlob=made.ciphertext, EncryptionContext=CONTEXT, KeyId="alias/attack-a")
    assert reply["Plaintext"] == PLAINTEXT


def test_blob_relabelled_to_another_key_is_invalid_ciphertext(kms, made: Made) -> None:  # type: ignore[no-untyped-def]
    forged = made.ciphertext[:1] + _uuid_bytes(made.key_b) + made.ciphertext[17:]
    assert error_of(lambda: kms.decrypt(CiphertextBlob=forged, EncryptionContext=CONTEXT)) == (
        "InvalidCiphertextException", 400)
    assert error_of(lambda: kms.decrypt(CiphertextBlob=forged, EncryptionContext=CONTEXT,
                                        KeyId=made.key_b)) == ("InvalidCiphertextException", 400)


# -- authentication -------------------------------------------------------------------------------
def test_wrong_secret_is_invalid_signature_and_has_no_effect(server: RunningServer, kms) -> None:  # type: ignore[no-untyped-def]
    before = len(kms.list_keys()["Keys"])
    forger = server.client(secret=DEV_SECRET_ACCESS_KEY[:-1] + "X")
    assert error_of(lambda: forger.create_key()) == ("InvalidSignatureException", 400)
    assert error_of(lambda: forger.decrypt(CiphertextBlob=b"\x01" * 80)) == ("InvalidSignatureException", 400)
    stranger = server.client(access_key_id="AKIANOBODYNOBODY0000")
    assert error_of(lambda: stranger.list_keys()) == ("UnrecognizedClientException", 400)
    assert len(kms.list_keys()["Keys"]) == before


def test_body_changed_after_signing_is_invalid_signature(server: RunningServer, made: Made) -> None:
    client = server.client()

    def tamper(request: Any, **_: Any) -> None:
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        assert made.key_a.encode() in body
        request.body = body.replace(made.key_a.encode(), made.key_b.encode())  # same length

    client.meta.events.register("before-send.kms.Encrypt", tamper)
    assert error_of(lambda: client.encrypt(KeyId=made.key_a, Plaintext=b"x")) == ("InvalidSignatureException", 400)


def test_unsigned_request_is_refused(server: RunningServer) -> None:
    request = urllib.request.Request(
        server.endpoint + "/", data=b"{}", method="POST",
        headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert json.loads(info.value.read())["__type"] == "MissingAuthenticationTokenException"


# -- move integrity: a record copied to another path does not open ---------------------------------
def test_record_copied_to_another_path_fails_to_decrypt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(tmp_path, "--data-dir", str(data), "--log-level", "debug")
    try:
        code, init = admin_call(first.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 1, "threshold": 1})
        assert code == 200
        share, akid, secret = init["shares"][0], init["access_key_id"], init["secret_access_key"]
        assert admin_call(first.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})[1]["sealed"] is False
        kms = first.client(akid, secret)
        key_a, key_b, key_c = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3))
        blob_a = kms.encrypt(KeyId=key_a, Plaintext=PLAINTEXT)["CiphertextBlob"]
        blob_b = kms.encrypt(KeyId=key_b, Plaintext=PLAINTEXT[::-1])["CiphertextBlob"]
    finally:
        first.stop()

    prefix = f"kms/{ACCOUNT}/{REGION}"
    with sqlite3.connect(data / "keyhive.db") as db:
        def copy(source: str, target: str) -> None:
            (value,) = db.execute("SELECT value FROM records WHERE path = ?", (source,)).fetchone()
            assert db.execute("UPDATE records SET value = ? WHERE path = ?", (value, target)).rowcount == 1

        copy(f"{prefix}/material/{key_a}/0000000001", f"{prefix}/material/{key_b}/0000000001")
        copy(f"{prefix}/key/{key_a}", f"{prefix}/key/{key_c}")

    second = start_server(tmp_path, "--data-dir", str(data), "--log-level", "debug")
    try:
        assert admin_call(second.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})[1]["sealed"] is False
        kms = second.client(akid, secret)
        internal = ("KMSInternalException", 500)
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=blob_b)
        assert info.value.response["Error"] == {"Code": "KMSInternalException", "Message": "An internal error occurred."}
        assert error_of(lambda: kms.encrypt(KeyId=key_b, Plaintext=b"must not use A's material")) == internal
        assert error_of(lambda: kms.generate_data_key(KeyId=key_b, KeySpec="AES_256")) == internal
        assert error_of(lambda: kms.describe_key(KeyId=key_c)) == internal
        # The untouched key still works: the damage is confined to the moved records.
        assert kms.decrypt(CiphertextBlob=blob_a)["Plaintext"] == PLAINTEXT
        log = second.log()
        assert f"stored record {prefix}/material/{key_b}/0000000001 failed its integrity check" in log  # the detail went to the log ...
        for form in (*encodings(PLAINTEXT), *encodings(PLAINTEXT[::-1]), secret.encode(), share.encode()):
            assert form.decode() not in log  # ... and no secret with it
        assert secret not in first.log() and share not in first.log()
    finally:
        second.stop()


# -- the log of the dev server that saw every attack above ------------------------------------------
def test_server_log_holds_no_plaintext_or_secret(server: RunningServer, made: Made) -> None:
    log = server.log()
    banner_end = f"aws kms create-key --endpoint-url {server.endpoint}\n"
    assert banner_end in log and "DEBUG" in log
    banner, rest = log.split(banner_end, 1)
    assert banner.count(DEV_SECRET_ACCESS_KEY) == 2  # shown once to the operator, by design
    assert DEV_SECRET_ACCESS_KEY not in rest
    for secret in made.secrets:  # the plaintexts, the data keys and the dev secret
        for form in encodings(secret):
            assert form.decode(errors="replace") not in rest


def _uuid_bytes(key_id: str) -> bytes:
    import uuid

    return uuid.UUID(key_id).bytes
