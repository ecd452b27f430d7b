"""Key rotation and key policies through boto3 against a live ``keyhive server --dev``.

EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
ListKeyRotations; GetKeyPolicy, PutKeyPolicy, ListKeyPolicies; each with the errors
the AWS KMS API reference documents.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import code_of, error_of

ACCOUNT = "111122223333"
DAY = 86400




def new_key(kms: Any, **kwargs: Any) -> dict[str, Any]:
    return kms.create_key(**kwargs)["KeyMetadata"]


# -- automatic rotation settings ---------------------------------------------------------------
def test_rotation_disabled_by_default(kms: Any) -> None:
    meta = new_key(kms)
    status = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    assert status["KeyRotationEnabled"] is False
    assert status["KeyId"] == meta["Arn"]
    assert "RotationPeriodInDays" not in status and "NextRotationDate" not in status


def test_enable_key_rotation_default_period(kms: Any) -> None:
    meta = new_key(kms)
    now = time.time()
    kms.enable_key_rotation(KeyId=meta["KeyId"])
    status = kms.get_key_rotation_status(KeyId=meta["Arn"])
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 365
    assert abs(status["NextRotationDate"].timestamp() - (now + 365 * DAY)) < 60
    assert "OnDemandRotationStartDate" not in status


@pytest.mark.parametrize("days", [90, 180, 2560])
def test_enable_key_rotation_period_bounds(kms: Any, days: int) -> None:
    meta = new_key(kms)
    now = time.time()
    kms.enable_key_rotation(KeyId=meta["KeyId"], RotationPeriodInDays=days)
    status = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    assert status["RotationPeriodInDays"] == days
    assert abs(status["NextRotationDate"].timestamp() - (now + days * DAY)) < 60


def test_enable_key_rotation_period_above_maximum(kms: Any) -> None:
    # 89 is refused by boto3 itself (the model's minimum); test_kms_wire sends it raw.
    meta = new_key(kms)
    code, status, message = error_of(kms.enable_key_rotation, KeyId=meta["KeyId"], RotationPeriodInDays=2561)
    assert (code, status) == ("ValidationException", 400)
    assert "rotationPeriodInDays" in message
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is False


def test_disable_key_rotation(kms: Any) -> None:
    meta = new_key(kms)
    kms.enable_key_rotation(KeyId=meta["KeyId"], RotationPeriodInDays=100)
    kms.disable_key_rotation(KeyId=meta["KeyId"])
    status = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status
    kms.disable_key_rotation(KeyId=meta["KeyId"])  # idempotent
    kms.enable_key_rotation(KeyId=meta["KeyId"])
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["RotationPeriodInDays"] == 365


def test_rotation_settings_and_key_states(kms: Any) -> None:
    meta = new_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    disabled = ("DisabledException", 400, f"{meta['Arn']} is disabled.")
    assert error_of(kms.enable_key_rotation, KeyId=meta["KeyId"]) == disabled
    assert error_of(kms.disable_key_rotation, KeyId=meta["KeyId"]) == disabled
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is False  # allowed
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    pending = ("KMSInvalidStateException", 400, f"{meta['Arn']} is pending deletion.")
    assert error_of(kms.enable_key_rotation, KeyId=meta["KeyId"]) == pending
    assert error_of(kms.disable_key_rotation, KeyId=meta["KeyId"]) == pending
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is False  # allowed


def test_rotation_settings_missing_key(kms: Any) -> None:
    missing = str(uuid.uuid4())
    for call in (kms.enable_key_rotation, kms.disable_key_rotation, kms.get_key_rotation_status,
                 kms.rotate_key_on_demand, kms.list_key_rotations):
        assert code_of(call, KeyId=missing) == "NotFoundException", call


# -- RotateKeyOnDemand / ListKeyRotations ------------------------------------------------------------
def test_rotate_on_demand_keeps_old_ciphertexts(kms: Any) -> None:
    meta = new_key(kms)
    first_material = meta["CurrentKeyMaterialId"]
    old_blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"old", EncryptionContext={"v": "1"})["CiphertextBlob"]
    old = kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})
    assert old["KeyMaterialId"] == first_material

    reply = kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    assert reply["KeyId"] == meta["Arn"]
    second_material = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    assert second_material != first_material

    new_blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"new")["CiphertextBlob"]
    new = kms.decrypt(CiphertextBlob=new_blob)
    assert (new["Plaintext"], new["KeyId"], new["KeyMaterialId"]) == (b"new", meta["Arn"], second_material)
    old = kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})
    assert (old["Plaintext"], old["KeyId"], old["KeyMaterialId"]) == (b"old", meta["Arn"], first_material)
    assert code_of(kms.decrypt, CiphertextBlob=old_blob) == "InvalidCiphertextException"  # context still enforced

    # a data key made before rotation re-encrypts to the new material
    data_key = kms.generate_data_key(KeyId=meta["KeyId"], KeySpec="AES_256")
    kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    third_material = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    moved = kms.re_encrypt(CiphertextBlob=data_key["CiphertextBlob"], DestinationKeyId=meta["KeyId"])
    assert moved["SourceKeyMaterialId"] == second_material
    assert moved["DestinationKeyMaterialId"] == third_material
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})["Plaintext"] == b"old"


def test_rotate_on_demand_limit_of_10(kms: Any) -> None:
    meta = new_key(kms)
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"gen0")["CiphertextBlob"]
    blobs = [blob]
    for i in range(10):
        kms.rotate_key_on_demand(KeyId=meta["KeyId"])
        blobs.append(kms.encrypt(KeyId=meta["KeyId"], Plaintext=f"gen{i + 1}".encode())["CiphertextBlob"])
    code, status, _ = error_of(kms.rotate_key_on_demand, KeyId=meta["KeyId"])
    assert (code, status) == ("LimitExceededException", 400)
    materials = set()
    for i, blob in enumerate(blobs):
        reply = kms.decrypt(CiphertextBlob=blob)
        assert reply["Plaintext"] == f"gen{i}".encode()
        assert reply["KeyId"] == meta["Arn"]
        materials.add(reply["KeyMaterialId"])
    assert len(materials) == 11
    rotations = kms.list_key_rotations(KeyId=meta["KeyId"])
    assert len(rotations["Rotations"]) == 10
    assert {r["RotationType"] for r in rotations["Rotations"]} == {"ON_DEMAND"}


def test_rotate_on_demand_independent_of_automatic_rotation(kms: Any) -> None:
    meta = new_key(kms)
    kms.enable_key_rotation(KeyId=meta["KeyId"], RotationPeriodInDays=730)
    before = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    after = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    # "On-demand rotations do not change existing automatic rotation schedules."
    assert after["NextRotationDate"] == before["NextRotationDate"]
    assert after["RotationPeriodInDays"] == 730 and after["KeyRotationEnabled"] is True


def test_rotate_on_demand_key_states(kms: Any) -> None:
    meta = new_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    assert error_of(kms.rotate_key_on_demand, KeyId=meta["KeyId"]) == ("DisabledException", 400, f"{meta['Arn']} is disabled.")
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert code_of(kms.rotate_key_on_demand, KeyId=meta["KeyId"]) == "KMSInvalidStateException"


def test_list_key_rotations(kms: Any) -> None:
    meta = new_key(kms)
    empty = kms.list_key_rotations(KeyId=meta["KeyId"])
    assert empty["Rotations"] == [] and empty["Truncated"] is False
    started = time.time()
    for _ in range(3):
        kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    current = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    rotations = kms.list_key_rotations(KeyId=meta["Arn"])["Rotations"]
    assert len(rotations) == 3
    for entry in rotations:
        assert entry["KeyId"] == meta["KeyId"]
        assert entry["RotationType"] == "ON_DEMAND"
        assert started - 5 <= entry["RotationDate"].timestamp() <= time.time() + 5
    assert [r["KeyMaterialState"] for r in rotations] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]
    assert rotations[-1]["KeyMaterialId"] == current
    assert len({r["KeyMaterialId"] for r in rotations}) == 3

    pages, marker = [], None
    while True:
        page = kms.list_key_rotations(KeyId=meta["KeyId"], Limit=2, **({"Marker": marker} if marker else {}))
        pages.append(page)
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert [len(p["Rotations"]) for p in pages] == [2, 1]
    assert [r["KeyMaterialId"] for p in pages for r in p["Rotations"]] == [r["KeyMaterialId"] for r in rotations]

    everything = kms.list_key_rotations(KeyId=meta["KeyId"], IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert len(everything) == 4  # the original material as well
    assert everything[0]["KeyMaterialId"] == meta["CurrentKeyMaterialId"]


def test_list_key_rotations_errors(kms: Any) -> None:
    meta = new_key(kms)
    assert code_of(kms.list_key_rotations, KeyId=meta["KeyId"], Marker="garbage") == "InvalidMarkerException"
    # a marker from another operation's pagination is not a rotation marker
    assert code_of(kms.list_key_rotations, KeyId=meta["KeyId"], Marker="YWJj") == "InvalidMarkerException"
    assert code_of(kms.list_key_rotations, KeyId=meta["KeyId"], Limit=1001) == "ValidationException"


# -- key policies --------------------------------------------------------------------------------------
def test_default_key_policy(kms: Any) -> None:
    meta = new_key(kms)
    reply = kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")
    assert reply["PolicyName"] == "default"
    assert json.loads(reply["Policy"]) == {
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    # PolicyName is optional and defaults to "default"
    assert kms.get_key_policy(KeyId=meta["Arn"])["Policy"] == reply["Policy"]


def test_put_key_policy_round_trip(kms: Any) -> None:
    meta = new_key(kms)
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "custom",
            "Statement": [
                {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                 "Action": "kms:*", "Resource": "*"},
                {"Sid": "no-decrypt", "Effect": "Deny", "Principal": {"AWS": "*"},
                 "Action": ["kms:Decrypt"], "Resource": "*",
                 "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "blocked"}}},
            ],
        },
        indent=4,
    )
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=policy)
    assert kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"] == policy  # byte for byte
    kms.put_key_policy(KeyId=meta["Arn"], Policy=policy.replace("custom", "custom-2"))  # PolicyName optional
    assert "custom-2" in kms.get_key_policy(KeyId=meta["KeyId"])["Policy"]


@pytest.mark.parametrize(
    "policy",
    [
        "{not json",
        "[]",
        '"a string"',
        "{}",
        '{"Version": "2012-10-17", "Statement": []}',
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Action": "kms:*", "Resource": "*"}]}',
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*"}]}',
        '{"Version": "2012-10-17", "Statement": ["Allow"]}',
    ],
)
def test_put_key_policy_malformed(kms: Any, policy: str) -> None:
    meta = new_key(kms)
    original = kms.get_key_policy(KeyId=meta["KeyId"])["Policy"]
    code, status, _ = error_of(kms.put_key_policy, KeyId=meta["KeyId"], PolicyName="default", Policy=policy)
    assert (code, status) == ("MalformedPolicyDocumentException", 400)
    assert kms.get_key_policy(KeyId=meta["KeyId"])["Policy"] == original


def test_key_policy_size_limit(kms: Any) -> None:
    meta = new_key(kms)
    padding = " " * (131072 + 1 - len('{"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}'))
    too_big = '{"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}' + padding
    assert len(too_big) == 131073
    assert code_of(kms.put_key_policy, KeyId=meta["KeyId"], Policy=too_big) == "ValidationException"


def test_list_key_policies(kms: Any) -> None:
    meta = new_key(kms)
    reply = kms.list_key_policies(KeyId=meta["KeyId"])
    assert reply["PolicyNames"] == ["default"]
    assert reply["Truncated"] is False
    assert kms.list_key_policies(KeyId=meta["Arn"])["PolicyNames"] == ["default"]


def test_key_policy_errors(kms: Any) -> None:
    meta = new_key(kms)
    missing = str(uuid.uuid4())
    assert code_of(kms.get_key_policy, KeyId=missing, PolicyName="default") == "NotFoundException"
    assert code_of(kms.list_key_policies, KeyId=missing) == "NotFoundException"
    assert code_of(kms.put_key_policy, KeyId=missing, PolicyName="default",
                   Policy=kms.get_key_policy(KeyId=meta["KeyId"])["Policy"]) == "NotFoundException"
    assert code_of(kms.get_key_policy, KeyId=meta["KeyId"], PolicyName="other") == "NotFoundException"
    assert code_of(kms.get_key_policy, KeyId=meta["KeyId"], PolicyName="not-a-word!") == "ValidationException"


def test_key_policies_on_disabled_and_pending_keys(kms: Any) -> None:
    meta = new_key(kms)
    policy = kms.get_key_policy(KeyId=meta["KeyId"])["Policy"]
    kms.disable_key(KeyId=meta["KeyId"])
    kms.put_key_policy(KeyId=meta["KeyId"], Policy=policy)
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert kms.get_key_policy(KeyId=meta["KeyId"])["Policy"] == policy
    assert kms.list_key_policies(KeyId=meta["KeyId"])["PolicyNames"] == ["default"]
