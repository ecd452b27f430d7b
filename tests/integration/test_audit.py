"""The audit trail against real servers: real boto3 calls, then the trail read back.

Events are read back with the real ``keyhive audit`` CLI (``--endpoint``, through the
admin API, and ``--data-dir``, offline) and found by the request id the client saw
in ``x-amzn-RequestId``.  One ``--dev`` server serves the module (the fail-closed test
runs last, on it); the operator flow uses its own Shamir-sealed ``--data-dir`` server.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    DEV_ACCESS_KEY_ID,
    DEV_SECRET_ACCESS_KEY,
    REGION,
    RunningServer,
    start_server,
)

ACCOUNT = "111122223333"
ADMIN = (DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY)
ADMIN_IDENTITY = {"type": "IAMUser", "principalId": "AIDAKEYHIVEADMIN00001", "arn": f"arn:aws:iam::{ACCOUNT}:user/admin",
                  "accountId": ACCOUNT, "accessKeyId": DEV_ACCESS_KEY_ID, "userName": "admin"}
URLLIB_AGENT = "Python-urllib/{}.{}".format(*sys.version_info[:2])
LOOKUP_POLICY = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "cloudtrail:LookupEvents", "Resource": "*"}]}

# Everything secret this module hands to or gets from the server; none may reach the trail.
SECRETS: dict[str, bytes | str] = {}


# -- helpers --------------------------------------------------------------------------------
def clean_env(creds: tuple[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYHIVE_"))}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
               AWS_DEFAULT_REGION=REGION)
    if creds:
        env.update(AWS_ACCESS_KEY_ID=creds[0], AWS_SECRET_ACCESS_KEY=creds[1])
    return env


def keyhive(*args: str, creds: tuple[str, str] | None = None, input: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keyhive.cli.main", *args], input=input, capture_output=True,
                          text=True, env=clean_env(creds), timeout=30, check=False)


def lookup(source: list[str], *filters: str, creds: tuple[str, str] | None = ADMIN) -> tuple[list[dict], str | None]:
    """One page of ``keyhive audit events --json``: (events, the next token it printed)."""
    run = keyhive("audit", "events", *source, "--json", *filters, creds=creds)
    assert run.returncode == 0, run.stderr
    token = None
    for line in run.stderr.splitlines():
        if line.startswith("More: --next-token "):
            token = line.removeprefix("More: --next-token ")
    return [json.loads(line) for line in run.stdout.splitlines()], token


def all_events(server: RunningServer) -> list[dict]:
    """Every event, newest first, read offline from the data directory (adds no event itself)."""
    events, token = lookup(["--data-dir", str(server.data_dir)], "--max-items", "1000", creds=None)
    assert token is None
    return events


def event_for(server: RunningServer, request_id: str) -> dict:
    """The one event of ``request_id``, read through the admin API with the CLI."""
    found, _ = lookup(["--endpoint", server.endpoint], "--max-items", "1000")
    matching = [e for e in found if e.get("requestID") == request_id]
    assert len(matching) == 1, f"{len(matching)} events for request {request_id}"
    return matching[0]


def signed_post(endpoint: str, path: str, body: dict, creds: tuple[str, str] | None) -> tuple[int, dict, dict]:
    """(status, headers, JSON) of one admin API call, SigV4-signed when ``creds`` are given."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = endpoint + path
    request = AWSRequest(method="POST", url=url, data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
    if creds:
        SigV4Auth(Credentials(*creds), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(url, data=request.body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(wire, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"{}")


def kms_raw(endpoint: str, target: str, body: dict, creds: tuple[str, str]) -> tuple[int, str, dict]:
    """A signed KMS-protocol request with any X-Amz-Target: (status, request id, JSON)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=endpoint + "/", data=json.dumps(body).encode(),
                         headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(*creds), "kms", REGION).add_auth(request)
    wire = urllib.request.Request(endpoint + "/", data=request.body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(wire, timeout=10) as response:
            return response.status, response.headers["x-amzn-requestid"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["x-amzn-requestid"], json.loads(exc.read())


class Recorder:
    """Calls through a boto3 client, keeping the User-Agent it sent and the request id it got back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.user_agent = ""
        client.meta.events.register("before-send.kms.*", self._sent)

    def _sent(self, request: Any, **_: Any) -> None:
        self.user_agent = request.headers["User-Agent"]
        self.user_agent = self.user_agent.decode() if isinstance(self.user_agent, bytes) else self.user_agent

    def __call__(self, operation: str, **kwargs: Any) -> tuple[dict, str]:
        """(the response, or the error response, and its request id)."""
        try:
            response = getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            response = exc.response
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-amzn-requestid"] == response["ResponseMetadata"]["RequestId"]
        return response, headers["x-amzn-requestid"]


def check_time(event: dict, started: float) -> None:
    moment = datetime.datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert int(started) <= moment.timestamp() <= time.time() + 1


def without_variable(event: dict) -> dict:
    """The event with its per-call values (checked separately) taken out."""
    uuid.UUID(event["eventID"])
    return {k: v for k, v in event.items() if k not in ("eventTime", "eventID")}


def key_arn(key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def resources(*key_ids: str) -> list[dict]:
    return [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key_arn(k)} for k in key_ids]


def api_call(name: str, identity: dict, request_id: str, *, user_agent: str, parameters: Any, response: Any = None,
             read_only: bool, keys: tuple[str, ...] = (), region: str = REGION, recipient: str = ACCOUNT,
             source: str = "kms.amazonaws.com", error: tuple[str, str] | None = None) -> dict:
    """The whole CloudTrail record expected for one API call, but for eventTime and eventID."""
    event = {
        "eventVersion": "1.08", "userIdentity": identity, "eventSource": source, "eventName": name,
        "awsRegion": region, "sourceIPAddress": "127.0.0.1", "userAgent": user_agent,
        "requestParameters": parameters, "responseElements": response, "requestID": request_id,
        "readOnly": read_only, "resources": resources(*keys), "eventType": "AwsApiCall", "managementEvent": True,
        "recipientAccountId": recipient,
    }
    if error:
        event["errorCode"], event["errorMessage"] = error
    return event


def create_user(server: RunningServer, name: str, policies: dict[str, dict] | None = None,
                creds: tuple[str, str] = ADMIN) -> dict[str, str]:
    """A user with an access key; returns UserId, AccessKeyId, SecretAccessKey (the secret is noted as one)."""
    code, _, user = signed_post(server.endpoint, "/keyhive/v1/iam/CreateUser", {"UserName": name}, creds)
    assert code == 200, user
    code, _, key = signed_post(server.endpoint, "/keyhive/v1/iam/CreateAccessKey", {"UserName": name}, creds)
    assert code == 200, key
    for policy_name, document in (policies or {}).items():
        code, _, reply = signed_post(server.endpoint, "/keyhive/v1/iam/PutUserPolicy",
                                     {"UserName": name, "PolicyName": policy_name,
                                      "PolicyDocument": json.dumps(document)}, creds)
        assert code == 200, reply
    SECRETS[f"secret access key of {name}"] = key["AccessKey"]["SecretAccessKey"]
    return {"UserId": user["User"]["UserId"], **key["AccessKey"]}


@pytest.fixture(scope="module")
def admin(dev_server: RunningServer) -> Recorder:
    return Recorder(dev_server.client())


@pytest.fixture(scope="module")
def key_id(admin: Recorder) -> str:
    response, _ = admin("create_key", Description="audit test key")
    return str(response["KeyMetadata"]["KeyId"])


@pytest.fixture(scope="module")
def bob(dev_server: RunningServer) -> dict[str, str]:
    return create_user(dev_server, "bob")


# -- one event per request, every field ------------------------------------------------------
def test_encrypt_event_has_every_cloudtrail_field(dev_server: RunningServer, admin: Recorder, key_id: str) -> None:
    plaintext = b"audit: the plaintext of a successful Encrypt " + uuid.uuid4().hex.encode()
    SECRETS["Encrypt plaintext"] = plaintext
    context = {"Department": "Finance", "ab": "c", "Mixed-Case Key": "Value With Spaces"}
    started = time.time()
    response, request_id = admin("encrypt", KeyId=key_id, Plaintext=plaintext, EncryptionContext=context,
                                 EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    assert "CiphertextBlob" in response
    SECRETS["Encrypt ciphertext"] = response["CiphertextBlob"]
    event = event_for(dev_server, request_id)
    check_time(event, started)
    assert admin.user_agent.startswith("Boto3/")
    assert without_variable(event) == api_call(
        "Encrypt", ADMIN_IDENTITY, request_id, user_agent=admin.user_agent, read_only=True, keys=(key_id,),
        parameters={"keyId": key_id, "encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        response=None)


def test_create_key_event_has_its_key_metadata(dev_server: RunningServer, admin: Recorder) -> None:
    started = time.time()
    response, request_id = admin("create_key", Description="made for the audit", KeyUsage="ENCRYPT_DECRYPT",
                                 Tags=[{"TagKey": "team", "TagValue": "audit"}])
    meta = response["KeyMetadata"]
    event = event_for(dev_server, request_id)
    check_time(event, started)
    expected_meta = {k[:1].lower() + k[1:]: v for k, v in meta.items()}
    expected_meta["creationDate"] = meta["CreationDate"].timestamp()
    assert set(expected_meta) >= {"aWSAccountId", "keyId", "arn", "keyState", "keySpec", "keyUsage", "origin"}
    recorded = event["responseElements"]["keyMetadata"]
    assert recorded.pop("creationDate") == pytest.approx(expected_meta.pop("creationDate"), abs=1e-3)
    assert recorded == expected_meta
    event["responseElements"] = None
    assert without_variable(event) == api_call(
        "CreateKey", ADMIN_IDENTITY, request_id, user_agent=admin.user_agent, read_only=False, keys=(meta["KeyId"],),
        parameters={"description": "made for the audit", "keyUsage": "ENCRYPT_DECRYPT",
                    "tags": [{"tagKey": "team", "tagValue": "audit"}]})


def test_refusal_by_another_user_is_recorded(dev_server: RunningServer, key_id: str, bob: dict[str, str]) -> None:
    client = Recorder(dev_server.client(bob["AccessKeyId"], bob["SecretAccessKey"]))
    plaintext = b"bob may not encrypt this " + uuid.uuid4().hex.encode()
    SECRETS["refused plaintext"] = plaintext
    response, request_id = client("encrypt", KeyId=key_id, Plaintext=plaintext, EncryptionContext={"who": "bob"})
    assert response["Error"]["Code"] == "AccessDeniedException"
    event = event_for(dev_server, request_id)
    identity = {"type": "IAMUser", "principalId": bob["UserId"], "arn": f"arn:aws:iam::{ACCOUNT}:user/bob",
                "accountId": ACCOUNT, "accessKeyId": bob["AccessKeyId"], "userName": "bob"}
    assert without_variable(event) == api_call(
        "Encrypt", identity, request_id, user_agent=client.user_agent, read_only=True, keys=(key_id,),
        parameters={"keyId": key_id, "encryptionContext": {"who": "bob"}},
        error=("AccessDeniedException", response["Error"]["Message"]))
    assert "bob" in response["Error"]["Message"] and "kms:Encrypt" in response["Error"]["Message"]


def test_bad_signature_is_recorded_with_the_claimed_key(dev_server: RunningServer, key_id: str,
                                                        bob: dict[str, str]) -> None:
    client = Recorder(dev_server.client(bob["AccessKeyId"], "not-the-secret-" + "x" * 25))
    response, request_id = client("encrypt", KeyId=key_id, Plaintext=b"forged")
    assert response["Error"]["Code"] == "InvalidSignatureException"
    event = event_for(dev_server, request_id)
    assert without_variable(event) == api_call(
        "Encrypt", {"type": "Unknown", "accessKeyId": bob["AccessKeyId"]}, request_id, user_agent=client.user_agent,
        read_only=True, parameters=None, recipient="",
        error=("InvalidSignatureException", response["Error"]["Message"]))


def test_unknown_operation_is_recorded(dev_server: RunningServer) -> None:
    status, request_id, body = kms_raw(dev_server.endpoint, "TrentService.FrobnicateKey", {"KeyId": "x"}, ADMIN)
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    event = event_for(dev_server, request_id)
    assert without_variable(event) == api_call(
        "FrobnicateKey", ADMIN_IDENTITY, request_id, user_agent=URLLIB_AGENT, read_only=False, parameters=None,
        error=("UnknownOperationException", body["message"]))
    # A target outside the KMS service is recorded too, under a name of its own.
    status, request_id, body = kms_raw(dev_server.endpoint, "NotKms.Whatever", {}, ADMIN)
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    event = event_for(dev_server, request_id)
    assert (event["eventName"], event["errorCode"], event["userIdentity"]["accessKeyId"]) == (
        "UnknownOperation", "UnknownOperationException", DEV_ACCESS_KEY_ID)


# -- GetKeyLastUsage --------------------------------------------------------------------------
def test_get_key_last_usage_answers_from_the_trail(dev_server: RunningServer, admin: Recorder) -> None:
    created, _ = admin("create_key")
    new_key = created["KeyMetadata"]["KeyId"]
    before, _ = admin("get_key_last_usage", KeyId=new_key)
    assert "KeyLastUsage" not in before
    assert before["KeyId"] == key_arn(new_key)
    assert before["KeyCreationDate"] == created["KeyMetadata"]["CreationDate"]
    assert before["TrackingStartDate"] <= before["KeyCreationDate"]

    response, encrypt_id = admin("encrypt", KeyId=new_key, Plaintext=b"used once")
    SECRETS["last-usage ciphertext"] = response["CiphertextBlob"]
    admin("decrypt", CiphertextBlob=response["CiphertextBlob"], EncryptionContext={"wrong": "context"})  # fails
    admin("describe_key", KeyId=new_key)  # not a cryptographic use
    after, _ = admin("get_key_last_usage", KeyId=new_key)
    encrypt_event = event_for(dev_server, encrypt_id)
    usage = after["KeyLastUsage"]
    assert usage["Operation"] == "Encrypt"
    assert usage["CloudTrailEventId"] == encrypt_event["eventID"]
    assert usage["KmsRequestId"] == encrypt_id
    assert usage["Timestamp"].timestamp() == datetime.datetime.strptime(
        encrypt_event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


# -- operator and admin actions, on a sealed Shamir server -----------------------------------------
@pytest.fixture(scope="module")
def sealed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RunningServer]]:
    """Starts (and at the end stops) ``keyhive server --data-dir`` on one directory, as often as asked."""
    tmp = tmp_path_factory.mktemp("sealed")
    started: list[RunningServer] = []

    def start() -> RunningServer:
        started.append(start_server(tmp, "--data-dir", str(tmp / "data")))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_operator_actions_are_recorded_without_shares_or_secrets(sealed_server: Callable[[], RunningServer]) -> None:
    # The first server process only initializes: its writer never unseals, so it can never sign.
    first = sealed_server()
    status, headers, init = signed_post(first.endpoint, "/keyhive/v1/sys/init", {"shares": 3, "threshold": 2}, None)
    assert status == 200, init
    init_id = headers["x-amzn-requestid"]
    shares = init["shares"]
    admin_creds = (init["access_key_id"], init["secret_access_key"])
    SECRETS.update({f"share {i}": share for i, share in enumerate(shares)})
    SECRETS["init admin secret"] = init["secret_access_key"]
    first.stop()

    # The second unseals (one refused share, then a quorum), administers IAM, and seals.
    server = sealed_server()
    bogus = base64.b64encode(b"\x01" * 10).decode()  # the wrong length: refused at once
    SECRETS["bogus share"] = bogus
    status, headers, refused = signed_post(server.endpoint, "/keyhive/v1/sys/unseal", {"share": bogus}, None)
    assert status == 400 and refused["__type"] == "ValidationException"
    refused_id = headers["x-amzn-requestid"]
    unseal_ids = []
    for share in shares[:2]:
        status, headers, reply = signed_post(server.endpoint, "/keyhive/v1/sys/unseal", {"share": share}, None)
        assert status == 200, reply
        unseal_ids.append(headers["x-amzn-requestid"])
    assert reply["sealed"] is False
    carol = create_user(server, "carol", creds=admin_creds)
    status, headers, reply = signed_post(server.endpoint, "/keyhive/v1/sys/seal", {}, admin_creds)
    assert status == 200 and reply["sealed"] is True, reply
    seal_id = headers["x-amzn-requestid"]

    everything = all_events(server)
    events = {e["requestID"]: e for e in everything if "requestID" in e}
    unknown = {"type": "Unknown"}
    admin_identity = {"type": "IAMUser", "principalId": "AIDAKEYHIVEADMIN00001",
                      "arn": f"arn:aws:iam::{ACCOUNT}:user/admin", "accountId": ACCOUNT,
                      "accessKeyId": admin_creds[0], "userName": "admin"}
    keyhive_call: dict[str, Any] = {"source": "keyhive.amazonaws.com", "user_agent": URLLIB_AGENT, "read_only": False}
    assert without_variable(events[init_id]) == api_call(
        "Init", unknown, init_id, parameters={"shares": 3, "threshold": 2}, region="", recipient="", **keyhive_call)
    assert without_variable(events[refused_id]) == api_call(
        "Unseal", unknown, refused_id, parameters=None, region="", recipient="",
        error=("ValidationException", refused["message"]), **keyhive_call)
    for request_id in unseal_ids:
        assert without_variable(events[request_id]) == api_call(
            "Unseal", unknown, request_id, parameters=None, region="", recipient="", **keyhive_call)
    assert without_variable(events[seal_id]) == api_call("Seal", admin_identity, seal_id, parameters=None,
                                                         **keyhive_call)
    iam = {e["eventName"]: e for e in events.values() if e["eventSource"] == "iam.amazonaws.com"}
    assert iam["CreateUser"]["requestParameters"] == {"userName": "carol"}
    assert iam["CreateUser"]["responseElements"] is None
    assert iam["CreateAccessKey"]["userIdentity"] == admin_identity
    assert iam["CreateAccessKey"]["requestParameters"] == {"userName": "carol"}
    assert iam["CreateAccessKey"]["responseElements"] == {
        "accessKey": {"accessKeyId": carol["AccessKeyId"], "userName": "carol", "status": "Active"}}

    # Two writers: the second names the first, whose unsigned head its own signed chain covers.
    started = [e for e in everything if e["eventName"] == "AuditWriterStarted"]
    assert len(started) == 2
    writers = {e["additionalEventData"]["writer"]: e["additionalEventData"]["previousWriters"] for e in started}
    assert sorted(len(previous) for previous in writers.values()) == [0, 1]

    # Verified while sealed (offline, and through an export file), and after a restart and unseal.
    assert_verifies(server)
    server.stop()
    assert_verifies(server)
    server = sealed_server()
    for share in shares[1:]:
        assert signed_post(server.endpoint, "/keyhive/v1/sys/unseal", {"share": share}, None)[0] == 200
    assert_verifies(server)
    raw = scan_raw(server.data_dir)
    assert_no_secret(raw, {k: v for k, v in SECRETS.items() if "share" in k or "secret" in k})


def assert_verifies(server: RunningServer) -> None:
    run = keyhive("audit", "verify", "--data-dir", str(server.data_dir))
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert run.stdout.startswith("audit trail verified: ")


def scan_raw(data_dir: Path | None) -> str:
    """Every audit row of the database, as stored (events, heads, usage index ...)."""
    assert data_dir is not None
    with sqlite3.connect(data_dir / "keyhive.db") as db:
        rows = db.execute("SELECT path, value FROM records WHERE path LIKE 'audit/%'").fetchall()
    assert any(path.startswith("audit/events/") for path, _ in rows)
    return "\n".join(f"{path} {bytes(value).decode('utf-8', 'replace')}" for path, value in rows
                     if path != "audit/signing-key")  # the one sealed row (it is ciphertext)


def forms(secret: bytes | str) -> list[str]:
    """The ways a secret could be written into JSON: as itself, base64, base64url, hex."""
    raw = secret.encode() if isinstance(secret, str) else secret
    found = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), raw.hex()]
    text = raw.decode("latin-1")
    if text.isprintable():
        found.append(text)
    return found


def assert_no_secret(text: str, secrets: dict[str, bytes | str]) -> None:
    assert secrets
    for name, secret in secrets.items():
        for form in forms(secret):
            assert form not in text, f"the {name} appears in the audit trail"


# -- no secret in any event ---------------------------------------------------------------------
def test_no_plaintext_data_key_ciphertext_or_secret_in_any_event(dev_server: RunningServer, admin: Recorder,
                                                                key_id: str, bob: dict[str, str],
                                                                tmp_path: Path) -> None:
    plaintext = b"scan me: " + uuid.uuid4().hex.encode()
    SECRETS["scanned plaintext"] = plaintext
    encrypted, _ = admin("encrypt", KeyId=key_id, Plaintext=plaintext, EncryptionContext={"scan": "1"})
    SECRETS["scanned ciphertext"] = encrypted["CiphertextBlob"]
    decrypted, _ = admin("decrypt", CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"scan": "1"})
    assert decrypted["Plaintext"] == plaintext
    data_key, _ = admin("generate_data_key", KeyId=key_id, KeySpec="AES_256", EncryptionContext={"scan": "2"})
    SECRETS["data key"] = data_key["Plaintext"]
    SECRETS["data key ciphertext"] = data_key["CiphertextBlob"]
    opened, _ = admin("decrypt", CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext={"scan": "2"})
    assert opened["Plaintext"] == data_key["Plaintext"]
    wrapped, _ = admin("generate_data_key_without_plaintext", KeyId=key_id, NumberOfBytes=24)
    SECRETS["data key ciphertext without plaintext"] = wrapped["CiphertextBlob"]
    reencrypted, _ = admin("re_encrypt", CiphertextBlob=encrypted["CiphertextBlob"],
                           SourceEncryptionContext={"scan": "1"}, DestinationKeyId=key_id)
    SECRETS["re-encrypted ciphertext"] = reencrypted["CiphertextBlob"]
    random, _ = admin("generate_random", NumberOfBytes=32)
    SECRETS["random bytes"] = random["Plaintext"]
    SECRETS["dev admin secret"] = DEV_SECRET_ACCESS_KEY
    SECRETS["bob secret"] = bob["SecretAccessKey"]

    export = tmp_path / "trail.jsonl"
    run = keyhive("audit", "export", "--endpoint", dev_server.endpoint, "-o", str(export), creds=ADMIN)
    assert run.returncode == 0, run.stderr
    exported = export.read_text()
    names = {json.loads(line)["event"]["eventName"] for line in exported.splitlines()
             if json.loads(line)["type"] == "record"}
    assert names >= {"Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncrypt",
                     "GenerateRandom", "CreateUser", "CreateAccessKey"}
    for text in (exported, scan_raw(dev_server.data_dir)):
        assert_no_secret(text, SECRETS)
    # The scan can fail: the same search finds what the events do hold.
    assert all(form in exported for form in ['"encryptionContext": {"scan": "1"}', key_id, bob["AccessKeyId"]])


# -- searching: filters, newest first, paging ------------------------------------------------------
@pytest.fixture(scope="module")
def searched(dev_server: RunningServer, admin: Recorder, bob: dict[str, str]) -> dict[str, Any]:
    """A key with a known history: three Encrypts, a refusal by bob, a DescribeKey."""
    created, create_id = admin("create_key", Description="searched")
    key = created["KeyMetadata"]["KeyId"]
    bob_client = Recorder(dev_server.client(bob["AccessKeyId"], bob["SecretAccessKey"]))
    ids = [create_id]
    for i in range(3):
        ids.append(admin("encrypt", KeyId=key, Plaintext=b"%d" % i)[1])
    ids.append(bob_client("encrypt", KeyId=key, Plaintext=b"no")[1])
    ids.append(admin("describe_key", KeyId=key)[1])
    return {"key": key, "ids": ids, "denied": ids[4]}


def test_filter_by_key_newest_first(dev_server: RunningServer, searched: dict[str, Any]) -> None:
    source = ["--endpoint", dev_server.endpoint]
    for key in (searched["key"], key_arn(searched["key"])):
        events, token = lookup(source, "--key", key)
        assert token is None
        assert [e["requestID"] for e in events] == list(reversed(searched["ids"]))


def test_filter_by_principal(dev_server: RunningServer, searched: dict[str, Any], bob: dict[str, str]) -> None:
    source = ["--data-dir", str(dev_server.data_dir)]
    everything = all_events(dev_server)
    expected = [e for e in everything if e.get("userIdentity", {}).get("userName") == "bob"]
    assert searched["denied"] in [e["requestID"] for e in expected]
    for principal in ("bob", f"arn:aws:iam::{ACCOUNT}:user/bob"):
        events, _ = lookup(source, "--principal", principal, "--max-items", "1000", creds=None)
        assert events == expected


def test_filter_by_event_name_and_errors(dev_server: RunningServer, searched: dict[str, Any]) -> None:
    source = ["--endpoint", dev_server.endpoint]
    everything = all_events(dev_server)
    events, _ = lookup(source, "--event-name", "Encrypt", "--max-items", "1000")
    assert events == [e for e in everything if e["eventName"] == "Encrypt"]
    events, _ = lookup(source, "--errors-only", "--max-items", "1000")
    assert events == [e for e in everything if "errorCode" in e]
    assert searched["denied"] in [e["requestID"] for e in events]
    events, _ = lookup(source, "--errors-only", "--key", searched["key"])
    assert [e["requestID"] for e in events] == [searched["denied"]]
    events, _ = lookup(source, "--event-name", "Encrypt", "--key", searched["key"], "--principal", "admin")
    assert [e["requestID"] for e in events] == list(reversed(searched["ids"][1:4]))


def test_filter_by_time_range(dev_server: RunningServer, admin: Recorder) -> None:
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    _, inside = admin("list_keys")
    time.sleep(1.05 - time.time() % 1)  # on to the next second (events are timed to the second)
    end = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    _, after = admin("list_keys")
    source = ["--data-dir", str(dev_server.data_dir)]
    iso = "%Y-%m-%dT%H:%M:%SZ"
    events, _ = lookup(source, "--start", start.strftime(iso), "--end", end.strftime(iso), creds=None)
    assert inside in [e.get("requestID") for e in events]
    assert after not in [e.get("requestID") for e in events]
    assert all(start.strftime(iso) <= e["eventTime"] < end.strftime(iso) for e in events)
    events, _ = lookup(source, "--start", end.strftime(iso), creds=None)
    assert [e.get("requestID") for e in events if e["eventName"] == "ListKeys"] == [after]
    # Any ISO 8601 offset means the same instant.
    shifted = start.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
    same, _ = lookup(source, "--start", shifted, "--end", end.strftime(iso), creds=None)
    assert [e.get("requestID") for e in same] == [e.get("requestID") for e in lookup(
        source, "--start", start.strftime(iso), "--end", end.strftime(iso), creds=None)[0]]
    run = keyhive("audit", "events", *source, "--start", "yesterday")
    assert run.returncode == 1 and "StartTime" in run.stderr


def test_paging_neither_repeats_nor_skips(dev_server: RunningServer, searched: dict[str, Any]) -> None:
    source = ["--endpoint", dev_server.endpoint]
    pages: list[list[str]] = []
    token: str | None = None
    while True:
        events, token = lookup(source, "--key", searched["key"], "--max-items", "2",
                               *(["--next-token", token] if token else []))
        pages.append([e["requestID"] for e in events])
        if token is None:
            break
    assert pages == [list(reversed(searched["ids"]))[i:i + 2] for i in range(0, len(searched["ids"]), 2)]
    # Unfiltered, each page's own LookupEvents event lands on top meanwhile: no page shifts.
    everything = all_events(dev_server)
    first, token = lookup(source, "--max-items", "3")
    assert token is not None
    second, _ = lookup(source, "--max-items", "3", "--next-token", token)
    assert first + second == everything[:6]
    run = keyhive("audit", "events", *source, "--next-token", "not-a-token", creds=ADMIN)
    assert run.returncode == 1 and "ValidationException" in run.stderr


def test_human_table(dev_server: RunningServer, searched: dict[str, Any]) -> None:
    run = keyhive("audit", "events", "--endpoint", dev_server.endpoint, "--key", searched["key"], creds=ADMIN)
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["TIME", "EVENT", "PRINCIPAL", "RESULT", "RESOURCE"]
    assert [row.split()[1] for row in rows] == ["DescribeKey", "Encrypt", "Encrypt", "Encrypt", "Encrypt", "CreateKey"]
    assert rows[1].split()[2:4] == [f"arn:aws:iam::{ACCOUNT}:user/bob", "AccessDeniedException"]
    assert rows[2].split()[3] == "OK"


# -- who may read the trail -----------------------------------------------------------------------
def test_reading_the_trail_needs_cloudtrail_permissions(dev_server: RunningServer) -> None:
    dave = create_user(dev_server, "dave")
    erin = create_user(dev_server, "erin", {"read-trail": LOOKUP_POLICY})
    dave_creds, erin_creds = (dave["AccessKeyId"], dave["SecretAccessKey"]), (erin["AccessKeyId"], erin["SecretAccessKey"])
    run = keyhive("audit", "events", "--endpoint", dev_server.endpoint, "--json", creds=dave_creds)
    assert run.returncode == 1 and "AccessDeniedException" in run.stderr and not run.stdout
    status, headers, body = signed_post(dev_server.endpoint, "/keyhive/v1/audit/LookupEvents", {}, dave_creds)
    assert (status, body["__type"]) == (400, "AccessDeniedException")
    assert "cloudtrail:LookupEvents" in body["message"]
    refused = event_for(dev_server, headers["x-amzn-requestid"])
    assert (refused["eventName"], refused["eventSource"], refused["errorCode"], refused["userIdentity"]["userName"]) == (
        "LookupEvents", "keyhive.amazonaws.com", "AccessDeniedException", "dave")
    status, _, body = signed_post(dev_server.endpoint, "/keyhive/v1/audit/LookupEvents", {}, None)
    assert (status, body["__type"]) == (403, "MissingAuthenticationTokenException")

    events, _ = lookup(["--endpoint", dev_server.endpoint], "--principal", "dave", creds=erin_creds)
    assert events[0] == refused
    assert [(e["eventName"], e["errorCode"]) for e in events] == [("LookupEvents", "AccessDeniedException")] * 2
    # LookupEvents does not imply Export (verify and export read the whole trail).
    status, _, body = signed_post(dev_server.endpoint, "/keyhive/v1/audit/Export", {}, erin_creds)
    assert (status, body["__type"]) == (400, "AccessDeniedException")
    run = keyhive("audit", "verify", "--endpoint", dev_server.endpoint, creds=erin_creds)
    assert run.returncode == 1 and "AccessDeniedException" in run.stderr


# -- fail-closed (last: it takes the module's server's trail away for a while) ----------------------------
def key_rows(db: sqlite3.Connection) -> set[str]:
    return {path for (path,) in db.execute("SELECT path FROM records WHERE path LIKE 'kms/%/key/%'")}


def test_unwritable_trail_fails_requests_and_changes_nothing(dev_server: RunningServer, admin: Recorder,
                                                             key_id: str) -> None:
    assert dev_server.data_dir is not None
    db = sqlite3.connect(dev_server.data_dir / "keyhive.db", isolation_level=None)
    try:
        keys_before = key_rows(db)
        events_before = db.execute("SELECT count(*) FROM records WHERE path LIKE 'audit/events/%'").fetchone()[0]
        # Another connection may add a trigger to the live WAL database: the server's next insert hits it.
        db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON records WHEN NEW.path LIKE 'audit/events/%' "
                   "BEGIN SELECT RAISE(ABORT, 'audit store unwritable'); END;")
        time.sleep(0.6)  # past the signing interval: the failing commit is one that would sign its head
        response, _ = admin("create_key", Description="must not exist")
        assert response["Error"]["Code"] == "KMSInternalException"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert response["Error"]["Message"] == "An internal error occurred."
        response, _ = admin("encrypt", KeyId=key_id, Plaintext=b"not without an event")
        assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("KMSInternalException", 500)
        response, _ = admin("tag_resource", KeyId=key_id, Tags=[{"TagKey": "lost", "TagValue": "change"}])
        assert response["Error"]["Code"] == "KMSInternalException"
        assert key_rows(db) == keys_before
        assert db.execute("SELECT count(*) FROM records WHERE path LIKE 'audit/events/%'").fetchone()[0] == events_before
        assert "audit trail commit failed" in dev_server.log()
        assert "audit store unwritable" not in dev_server.log().split("audit trail commit failed")[-1].split("\n")[0]

        db.execute("DROP TRIGGER no_audit")
        response, _ = admin("encrypt", KeyId=key_id, Plaintext=b"works again")
        assert "CiphertextBlob" in response
        assert_verifies(dev_server)  # the head holds no checkpoint from the commit that failed
        tags, _ = admin("list_resource_tags", KeyId=key_id)
        assert {"TagKey": "lost", "TagValue": "change"} not in tags["Tags"]
        created, _ = admin("create_key", Description="after")
        assert key_rows(db) == keys_before | {f"kms/{ACCOUNT}/{REGION}/key/{created['KeyMetadata']['KeyId']}"}
    finally:
        db.execute("DROP TRIGGER IF EXISTS no_audit")
        db.close()
    run = keyhive("audit", "verify", "--endpoint", dev_server.endpoint, creds=ADMIN)
    assert run.returncode == 0, run.stderr
    assert_verifies(dev_server)
