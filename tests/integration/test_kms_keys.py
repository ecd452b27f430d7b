"""Key life cycle through boto3 against a live ``keyhive server --dev``.

CreateKey, DescribeKey (every KeyId form, other regions), ListKeys, UpdateKeyDescription,
EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, each with the errors
the AWS KMS API reference documents for it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, code_of, error_of

ACCOUNT = "111122223333"  # keyhive server's default account id
DAY = 86400




def new_key(kms: Any, **kwargs: Any) -> dict[str, Any]:
    return kms.create_key(**kwargs)["KeyMetadata"]


def epoch(value: Any) -> float:
    return value.timestamp()


# -- CreateKey ---------------------------------------------------------------------
def test_create_key_defaults_to_symmetric_default(kms: Any) -> None:
    before = time.time()
    meta = new_key(kms)
    key_id = meta["KeyId"]
    assert uuid.UUID(key_id).version == 4 and str(uuid.UUID(key_id)) == key_id
    assert meta["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"
    assert meta["AWSAccountId"] == ACCOUNT
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyState"] == "Enabled"
    assert meta["Enabled"] is True
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["MultiRegion"] is False
    assert meta["Description"] == ""
    assert "DeletionDate" not in meta
    assert before - 5 <= epoch(meta["CreationDate"]) <= time.time() + 5


def test_create_key_explicit_symmetric_spec_and_usage(kms: Any) -> None:
    meta = new_key(kms, KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    meta = new_key(kms, CustomerMasterKeySpec="SYMMETRIC_DEFAULT")
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"


@pytest.mark.parametrize(("spec", "code"), [
    ("SM2", "UnsupportedOperationException"),  # no library here implements SM2
    ("ECC_NIST_P256", "ValidationException"),  # the default KeyUsage, ENCRYPT_DECRYPT, does not fit
    ("HMAC_256", "ValidationException"),
])
def test_create_key_refused_specs_create_nothing(kms: Any, spec: str, code: str) -> None:
    before = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    assert code_of(kms.create_key, KeySpec=spec) == code
    assert {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]} == before  # nothing created


def test_create_key_unknown_spec_fails_model_validation(kms: Any) -> None:
    code, status, message = error_of(kms.create_key, KeySpec="AES_999")
    assert (code, status) == ("ValidationException", 400)
    assert "keySpec" in message


def test_create_key_spec_and_legacy_spec_together(kms: Any) -> None:
    code = code_of(kms.create_key, KeySpec="SYMMETRIC_DEFAULT", CustomerMasterKeySpec="SYMMETRIC_DEFAULT")
    assert code == "ValidationException"


def test_create_key_usage_incompatible_with_symmetric_spec(kms: Any) -> None:
    assert code_of(kms.create_key, KeyUsage="SIGN_VERIFY") == "ValidationException"


def test_create_key_multi_region_and_custom_key_store_origins_unsupported(kms: Any) -> None:
    assert code_of(kms.create_key, MultiRegion=True) == "UnsupportedOperationException"
    assert code_of(kms.create_key, Origin="AWS_CLOUDHSM") == "UnsupportedOperationException"
    assert code_of(kms.create_key, Origin="EXTERNAL_KEY_STORE") == "UnsupportedOperationException"


def test_create_key_with_external_origin_awaits_its_material(kms: Any) -> None:
    meta = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert (meta["Origin"], meta["KeyState"], meta["Enabled"]) == ("EXTERNAL", "PendingImport", False)
    assert "CurrentKeyMaterialId" not in meta
    assert code_of(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == "KMSInvalidStateException"


def test_create_key_with_description_tags_and_policy(kms: Any) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                 "Action": "kms:*", "Resource": "*"}
            ],
        }
    )
    tags = [{"TagKey": "team", "TagValue": "crypto"}, {"TagKey": "empty", "TagValue": ""}]
    meta = new_key(kms, Description="payments key", Tags=tags, Policy=policy)
    assert meta["Description"] == "payments key"
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "payments key"
    listed = kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"]
    assert sorted(listed, key=lambda t: t["TagKey"]) == sorted(tags, key=lambda t: t["TagKey"])
    assert kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"] == policy


def test_create_key_description_limit(kms: Any) -> None:
    assert new_key(kms, Description="d" * 8192)["Description"] == "d" * 8192
    assert code_of(kms.create_key, Description="d" * 8193) == "ValidationException"


def test_create_key_reserved_tag_prefix(kms: Any) -> None:
    code = code_of(kms.create_key, Tags=[{"TagKey": "aws:created-by", "TagValue": "me"}])
    assert code == "TagException"


def test_create_key_more_than_50_tags(kms: Any) -> None:
    fifty = [{"TagKey": f"k{i:02d}", "TagValue": "v"} for i in range(50)]
    meta = new_key(kms, Tags=fifty)
    assert len(kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"]) == 50
    extra = [*fifty, {"TagKey": "k50", "TagValue": "v"}]
    assert code_of(kms.create_key, Tags=extra) == "LimitExceededException"


def test_create_key_malformed_policy(kms: Any) -> None:
    assert code_of(kms.create_key, Policy="{not json") == "MalformedPolicyDocumentException"
    assert code_of(kms.create_key, Policy='{"Version": "2012-10-17"}') == "MalformedPolicyDocumentException"


# -- DescribeKey -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aliased_key(kms: Any) -> dict[str, Any]:
    meta = new_key(kms, Description="aliased")
    kms.create_alias(AliasName="alias/describe-me", TargetKeyId=meta["KeyId"])
    return meta


@pytest.mark.parametrize(
    "form",
    ["key id", "key arn", "alias name", "alias arn"],
)
def test_describe_key_every_key_id_form(kms: Any, aliased_key: dict[str, Any], form: str) -> None:
    key_id = aliased_key["KeyId"]
    ref = {
        "key id": key_id,
        "key arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}",
        "alias name": "alias/describe-me",
        "alias arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/describe-me",
    }[form]
    meta = kms.describe_key(KeyId=ref)["KeyMetadata"]
    assert meta["KeyId"] == key_id
    assert meta["Arn"] == aliased_key["Arn"]
    assert meta["Description"] == "aliased"


def test_describe_missing_key(kms: Any) -> None:
    missing = str(uuid.uuid4())
    code, status, _ = error_of(kms.describe_key, KeyId=missing)
    assert (code, status) == ("NotFoundException", 400)
    assert code_of(kms.describe_key, KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{missing}") == "NotFoundException"
    assert code_of(kms.describe_key, KeyId="alias/no-such-alias") == "NotFoundException"
    assert code_of(kms.describe_key, KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/no-such-alias") == "NotFoundException"
    assert code_of(kms.describe_key, KeyId="not-a-key-id") == "NotFoundException"


def test_describe_key_with_malformed_arn(kms: Any) -> None:
    assert code_of(kms.describe_key, KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT}:bogus/123") == "InvalidArnException"


def test_key_in_another_region_is_invisible(dev_server: Any, kms: Any) -> None:
    meta = new_key(kms)
    eu = dev_server.client(region="eu-west-1")
    assert code_of(eu.describe_key, KeyId=meta["KeyId"]) == "NotFoundException"
    assert code_of(eu.describe_key, KeyId=meta["Arn"]) == "NotFoundException"
    assert meta["KeyId"] not in {k["KeyId"] for k in eu.list_keys(Limit=1000)["Keys"]}
    eu_meta = new_key(eu)
    assert eu_meta["Arn"] == f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{eu_meta['KeyId']}"
    assert code_of(kms.describe_key, KeyId=eu_meta["KeyId"]) == "NotFoundException"
    assert code_of(kms.encrypt, KeyId=eu_meta["Arn"], Plaintext=b"x") == "NotFoundException"


# -- ListKeys -------------------------------------------------------------------------------
def test_list_keys_pagination(dev_server: Any) -> None:
    # A region of its own, so the other tests' keys do not show up.
    client = dev_server.client(region="ap-southeast-2")
    created = {new_key(client)["KeyId"] for _ in range(7)}
    pages, marker = [], None
    while True:
        kwargs: dict[str, Any] = {"Limit": 3}
        if marker:
            kwargs["Marker"] = marker
        page = client.list_keys(**kwargs)
        pages.append(page)
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
        assert marker
    assert [len(p["Keys"]) for p in pages] == [3, 3, 1]
    seen = [k["KeyId"] for p in pages for k in p["Keys"]]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == created
    for page in pages:
        for entry in page["Keys"]:
            assert entry["KeyArn"] == f"arn:aws:kms:ap-southeast-2:{ACCOUNT}:key/{entry['KeyId']}"
    whole = client.list_keys()
    assert whole["Truncated"] is False and {k["KeyId"] for k in whole["Keys"]} == created
    exact = client.list_keys(Limit=7)
    assert exact["Truncated"] is False and len(exact["Keys"]) == 7


def test_list_keys_bad_marker(kms: Any) -> None:
    assert code_of(kms.list_keys, Marker="garbage") == "InvalidMarkerException"


def test_list_keys_limit_out_of_range(kms: Any) -> None:
    assert code_of(kms.list_keys, Limit=1001) == "ValidationException"


# -- UpdateKeyDescription, EnableKey, DisableKey ----------------------------------------------
def test_update_key_description(kms: Any) -> None:
    meta = new_key(kms, Description="before")
    assert kms.update_key_description(KeyId=meta["KeyId"], Description="after")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "after"
    kms.update_key_description(KeyId=meta["Arn"], Description="")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == ""
    assert code_of(kms.update_key_description, KeyId=str(uuid.uuid4()), Description="x") == "NotFoundException"
    assert code_of(kms.update_key_description, KeyId=meta["KeyId"], Description="d" * 8193) == "ValidationException"


def test_disable_and_enable_key(kms: Any) -> None:
    key_id = new_key(kms)["KeyId"]
    kms.disable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    kms.disable_key(KeyId=key_id)  # idempotent
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.update_key_description(KeyId=key_id, Description="still manageable")
    kms.enable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"], meta["Description"]) == ("Enabled", True, "still manageable")
    kms.enable_key(KeyId=key_id)  # idempotent
    assert code_of(kms.enable_key, KeyId=str(uuid.uuid4())) == "NotFoundException"
    assert code_of(kms.disable_key, KeyId=str(uuid.uuid4())) == "NotFoundException"


# -- ScheduleKeyDeletion, CancelKeyDeletion --------------------------------------------------
def test_schedule_key_deletion_default_window(kms: Any) -> None:
    meta = new_key(kms)
    now = time.time()
    reply = kms.schedule_key_deletion(KeyId=meta["KeyId"])
    assert reply["KeyId"] == meta["Arn"]
    assert reply["KeyState"] == "PendingDeletion"
    assert reply["PendingWindowInDays"] == 30
    assert abs(epoch(reply["DeletionDate"]) - (now + 30 * DAY)) < 60
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["Enabled"] is False
    assert "PendingDeletionWindowInDays" not in described  # only for PendingReplicaDeletion (KeyMetadata docs)
    assert described["DeletionDate"] == reply["DeletionDate"]


@pytest.mark.parametrize("days", [7, 30])
def test_schedule_key_deletion_window_bounds(kms: Any, days: int) -> None:
    meta = new_key(kms)
    now = time.time()
    reply = kms.schedule_key_deletion(KeyId=meta["Arn"], PendingWindowInDays=days)
    assert reply["PendingWindowInDays"] == days
    assert abs(epoch(reply["DeletionDate"]) - (now + days * DAY)) < 60


@pytest.mark.parametrize("days", [1, 6, 31, 365])
def test_schedule_key_deletion_window_out_of_range(kms: Any, days: int) -> None:
    meta = new_key(kms)
    assert code_of(kms.schedule_key_deletion, KeyId=meta["KeyId"], PendingWindowInDays=days) == "ValidationException"
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_pending_deletion_key_refuses_management(kms: Any) -> None:
    meta = new_key(kms)
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    for call, kwargs in [
        (kms.schedule_key_deletion, {}),
        (kms.enable_key, {}),
        (kms.disable_key, {}),
        (kms.update_key_description, {"Description": "x"}),
    ]:
        code, status, message = error_of(call, KeyId=meta["KeyId"], **kwargs)
        assert (code, status) == ("KMSInvalidStateException", 400), call
        assert message == f"{meta['Arn']} is pending deletion."
    # still visible and listed while pending deletion
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_cancel_key_deletion_leaves_key_disabled(kms: Any) -> None:
    meta = new_key(kms)
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    reply = kms.cancel_key_deletion(KeyId=meta["KeyId"])
    assert reply["KeyId"] == meta["Arn"]
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert described["Enabled"] is False
    assert "DeletionDate" not in described and "PendingDeletionWindowInDays" not in described
    kms.enable_key(KeyId=meta["KeyId"])
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_cancel_key_deletion_of_key_not_pending(kms: Any) -> None:
    meta = new_key(kms)
    code, _, message = error_of(kms.cancel_key_deletion, KeyId=meta["KeyId"])
    assert code == "KMSInvalidStateException"
    assert message == f"{meta['Arn']} is not pending deletion."
    kms.disable_key(KeyId=meta["KeyId"])
    assert code_of(kms.cancel_key_deletion, KeyId=meta["KeyId"]) == "KMSInvalidStateException"
    assert code_of(kms.cancel_key_deletion, KeyId=str(uuid.uuid4())) == "NotFoundException"


def test_schedule_key_deletion_missing_key(kms: Any) -> None:
    assert code_of(kms.schedule_key_deletion, KeyId=str(uuid.uuid4())) == "NotFoundException"


def test_error_responses_carry_request_id(kms: Any) -> None:
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=str(uuid.uuid4()))
    request_id = info.value.response["ResponseMetadata"]["RequestId"]
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == request_id
