"""Aliases and tags through boto3 against a live ``keyhive server --dev``.

CreateAlias, UpdateAlias, DeleteAlias, ListAliases; TagResource, UntagResource,
ListResourceTags; each with the errors the AWS KMS API reference documents.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import REGION, code_of, error_of

ACCOUNT = "111122223333"




def new_key(kms: Any, **kwargs: Any) -> dict[str, Any]:
    return kms.create_key(**kwargs)["KeyMetadata"]


def alias_arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:{name}"


def all_aliases(kms: Any, **kwargs: Any) -> list[dict[str, Any]]:
    out, marker = [], None
    while True:
        page = kms.list_aliases(**kwargs, **({"Marker": marker} if marker else {}))
        out += page["Aliases"]
        if not page["Truncated"]:
            return out
        marker = page["NextMarker"]


# -- CreateAlias -----------------------------------------------------------------------------
def test_create_alias_and_use_it(kms: Any) -> None:
    meta = new_key(kms)
    before = time.time()
    kms.create_alias(AliasName="alias/app-one", TargetKeyId=meta["KeyId"])
    assert kms.describe_key(KeyId="alias/app-one")["KeyMetadata"]["KeyId"] == meta["KeyId"]
    [entry] = [a for a in all_aliases(kms) if a["AliasName"] == "alias/app-one"]
    assert entry["AliasArn"] == alias_arn("alias/app-one")
    assert entry["TargetKeyId"] == meta["KeyId"]
    assert before - 5 <= entry["CreationDate"].timestamp() <= time.time() + 5
    assert entry["LastUpdatedDate"] == entry["CreationDate"]


def test_create_alias_by_key_arn(kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/by-arn", TargetKeyId=meta["Arn"])
    assert kms.describe_key(KeyId="alias/by-arn")["KeyMetadata"]["Arn"] == meta["Arn"]


@pytest.mark.parametrize("name", ["alias/aws/mine", "alias/aws/s3"])
def test_create_alias_reserved_prefix(kms: Any, name: str) -> None:
    meta = new_key(kms)
    code, status, _ = error_of(kms.create_alias, AliasName=name, TargetKeyId=meta["KeyId"])
    assert (code, status) == ("InvalidAliasNameException", 400)
    assert code_of(kms.describe_key, KeyId=name) == "NotFoundException"


@pytest.mark.parametrize("name", ["no-prefix", "alias", "alias/", "Alias/upper", "aliasx/name"])
def test_create_alias_needs_alias_prefix(kms: Any, name: str) -> None:
    meta = new_key(kms)
    assert code_of(kms.create_alias, AliasName=name, TargetKeyId=meta["KeyId"]) == "InvalidAliasNameException"


def test_create_alias_bad_characters(kms: Any) -> None:
    meta = new_key(kms)
    assert code_of(kms.create_alias, AliasName="alias/has space", TargetKeyId=meta["KeyId"]) == "ValidationException"
    assert code_of(kms.create_alias, AliasName="alias/" + "a" * 251, TargetKeyId=meta["KeyId"]) == "ValidationException"


def test_create_alias_already_exists(kms: Any) -> None:
    first, second = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/taken", TargetKeyId=first["KeyId"])
    code, status, _ = error_of(kms.create_alias, AliasName="alias/taken", TargetKeyId=second["KeyId"])
    assert (code, status) == ("AlreadyExistsException", 400)
    assert kms.describe_key(KeyId="alias/taken")["KeyMetadata"]["KeyId"] == first["KeyId"]


def test_create_alias_missing_target(kms: Any) -> None:
    assert code_of(kms.create_alias, AliasName="alias/orphan", TargetKeyId=str(uuid.uuid4())) == "NotFoundException"
    assert "alias/orphan" not in {a["AliasName"] for a in all_aliases(kms)}


def test_create_alias_target_must_be_a_key_not_an_alias(kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/first-name", TargetKeyId=meta["KeyId"])
    assert code_of(kms.create_alias, AliasName="alias/second-name", TargetKeyId="alias/first-name") == "NotFoundException"


def test_create_alias_for_key_pending_deletion(kms: Any) -> None:
    meta = new_key(kms)
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    code, _, message = error_of(kms.create_alias, AliasName="alias/doomed", TargetKeyId=meta["KeyId"])
    assert code == "KMSInvalidStateException"
    assert message == f"{meta['Arn']} is pending deletion."


def test_create_alias_for_disabled_key(kms: Any) -> None:
    meta = new_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    kms.create_alias(AliasName="alias/sleepy", TargetKeyId=meta["KeyId"])
    assert kms.describe_key(KeyId="alias/sleepy")["KeyMetadata"]["KeyState"] == "Disabled"


def test_aliases_are_per_region(dev_server: Any, kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/regional", TargetKeyId=meta["KeyId"])
    eu = dev_server.client(region="eu-west-1")
    assert code_of(eu.describe_key, KeyId="alias/regional") == "NotFoundException"
    eu_key = new_key(eu)
    eu.create_alias(AliasName="alias/regional", TargetKeyId=eu_key["KeyId"])  # same name, other region
    assert eu.describe_key(KeyId="alias/regional")["KeyMetadata"]["KeyId"] == eu_key["KeyId"]
    assert kms.describe_key(KeyId="alias/regional")["KeyMetadata"]["KeyId"] == meta["KeyId"]
    [entry] = [a for a in all_aliases(eu) if a["AliasName"] == "alias/regional"]
    assert entry["AliasArn"] == alias_arn("alias/regional", "eu-west-1")


# -- UpdateAlias -----------------------------------------------------------------------------
def test_update_alias(kms: Any) -> None:
    first, second = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/moving", TargetKeyId=first["KeyId"])
    blob = kms.encrypt(KeyId="alias/moving", Plaintext=b"p")["CiphertextBlob"]
    kms.update_alias(AliasName="alias/moving", TargetKeyId=second["Arn"])
    assert kms.describe_key(KeyId="alias/moving")["KeyMetadata"]["KeyId"] == second["KeyId"]
    [entry] = [a for a in all_aliases(kms) if a["AliasName"] == "alias/moving"]
    assert entry["TargetKeyId"] == second["KeyId"]
    assert entry["LastUpdatedDate"] >= entry["CreationDate"]
    # old ciphertext still decrypts under its own key, not the alias's new target
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == first["Arn"]
    assert code_of(kms.decrypt, CiphertextBlob=blob, KeyId="alias/moving") == "IncorrectKeyException"


def test_update_alias_errors(kms: Any) -> None:
    meta = new_key(kms)
    assert code_of(kms.update_alias, AliasName="alias/never-made", TargetKeyId=meta["KeyId"]) == "NotFoundException"
    kms.create_alias(AliasName="alias/upd", TargetKeyId=meta["KeyId"])
    assert code_of(kms.update_alias, AliasName="alias/upd", TargetKeyId=str(uuid.uuid4())) == "NotFoundException"
    assert code_of(kms.update_alias, AliasName="alias/aws/upd", TargetKeyId=meta["KeyId"]) == "InvalidAliasNameException"
    assert code_of(kms.update_alias, AliasName="upd", TargetKeyId=meta["KeyId"]) == "InvalidAliasNameException"
    doomed = new_key(kms)
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    assert code_of(kms.update_alias, AliasName="alias/upd", TargetKeyId=doomed["KeyId"]) == "KMSInvalidStateException"
    assert kms.describe_key(KeyId="alias/upd")["KeyMetadata"]["KeyId"] == meta["KeyId"]


def test_update_alias_away_from_key_pending_deletion(kms: Any) -> None:
    # "If the source KMS key is pending deletion, the command succeeds" (key state table)
    doomed, target = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/rescue", TargetKeyId=doomed["KeyId"])
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    kms.update_alias(AliasName="alias/rescue", TargetKeyId=target["KeyId"])
    assert kms.describe_key(KeyId="alias/rescue")["KeyMetadata"]["KeyId"] == target["KeyId"]


# -- DeleteAlias -----------------------------------------------------------------------------
def test_delete_alias(kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/short-lived", TargetKeyId=meta["KeyId"])
    kms.delete_alias(AliasName="alias/short-lived")
    assert code_of(kms.describe_key, KeyId="alias/short-lived") == "NotFoundException"
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"  # the key stays
    code, status, _ = error_of(kms.delete_alias, AliasName="alias/short-lived")
    assert (code, status) == ("NotFoundException", 400)
    # the name is free again
    kms.create_alias(AliasName="alias/short-lived", TargetKeyId=meta["KeyId"])


def test_delete_alias_of_key_pending_deletion(kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/pending-del", TargetKeyId=meta["KeyId"])
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    kms.delete_alias(AliasName="alias/pending-del")
    assert code_of(kms.describe_key, KeyId="alias/pending-del") == "NotFoundException"


def test_delete_alias_bad_names(kms: Any) -> None:
    assert code_of(kms.delete_alias, AliasName="alias/aws/ebs") == "InvalidAliasNameException"
    assert code_of(kms.delete_alias, AliasName="nothing") == "InvalidAliasNameException"


# -- ListAliases -----------------------------------------------------------------------------
def test_list_aliases_key_filter_and_pagination(dev_server: Any) -> None:
    client = dev_server.client(region="ap-northeast-1")  # a region with only this test's aliases
    first, second = new_key(client), new_key(client)
    first_names = [f"alias/first-{i}" for i in range(5)]
    for name in first_names:
        client.create_alias(AliasName=name, TargetKeyId=first["KeyId"])
    client.create_alias(AliasName="alias/second-0", TargetKeyId=second["KeyId"])

    everything = client.list_aliases()
    assert everything["Truncated"] is False and "NextMarker" not in everything
    assert sorted(a["AliasName"] for a in everything["Aliases"]) == sorted([*first_names, "alias/second-0"])

    only_first = client.list_aliases(KeyId=first["KeyId"])["Aliases"]
    assert sorted(a["AliasName"] for a in only_first) == first_names
    assert {a["TargetKeyId"] for a in only_first} == {first["KeyId"]}
    by_arn = client.list_aliases(KeyId=second["Arn"])["Aliases"]
    assert [a["AliasName"] for a in by_arn] == ["alias/second-0"]
    assert client.list_aliases(KeyId=new_key(client)["KeyId"])["Aliases"] == []

    pages, marker = [], None
    while True:
        page = client.list_aliases(KeyId=first["KeyId"], Limit=2, **({"Marker": marker} if marker else {}))
        pages.append(page)
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert [len(p["Aliases"]) for p in pages] == [2, 2, 1]
    assert sorted(a["AliasName"] for p in pages for a in p["Aliases"]) == first_names


def test_list_aliases_errors(kms: Any) -> None:
    assert code_of(kms.list_aliases, KeyId=str(uuid.uuid4())) == "NotFoundException"
    assert code_of(kms.list_aliases, Marker="garbage") == "InvalidMarkerException"
    assert code_of(kms.list_aliases, Limit=1001) == "ValidationException"


# -- TagResource / UntagResource / ListResourceTags ------------------------------------------
def tags_of(kms: Any, key_id: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}


def test_tag_untag_list(kms: Any) -> None:
    meta = new_key(kms)
    assert kms.list_resource_tags(KeyId=meta["KeyId"]) | {"ResponseMetadata": None} == {
        "Tags": [], "Truncated": False, "ResponseMetadata": None}
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "env", "TagValue": "prod"},
                                                 {"TagKey": "owner", "TagValue": ""}])
    assert tags_of(kms, meta["KeyId"]) == {"env": "prod", "owner": ""}
    # an existing key gets its value replaced; tag keys are case-sensitive
    kms.tag_resource(KeyId=meta["Arn"], Tags=[{"TagKey": "env", "TagValue": "dev"}, {"TagKey": "Env", "TagValue": "X"}])
    assert tags_of(kms, meta["KeyId"]) == {"env": "dev", "owner": "", "Env": "X"}
    kms.untag_resource(KeyId=meta["KeyId"], TagKeys=["env", "not-there"])
    assert tags_of(kms, meta["Arn"]) == {"owner": "", "Env": "X"}


def test_tag_reserved_prefix(kms: Any) -> None:
    meta = new_key(kms)
    for key in ("aws:foo", "AWS:foo", "Aws:bar"):
        code, status, _ = error_of(kms.tag_resource, KeyId=meta["KeyId"], Tags=[{"TagKey": key, "TagValue": "v"}])
        assert (code, status) == ("TagException", 400), key
    assert tags_of(kms, meta["KeyId"]) == {}
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "notaws:foo", "TagValue": "v"}])
    assert tags_of(kms, meta["KeyId"]) == {"notaws:foo": "v"}


def test_tag_limit_of_50(kms: Any) -> None:
    meta = new_key(kms)
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": f"t{i:02d}", "TagValue": "v"} for i in range(49)])
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "t49", "TagValue": "v"}])
    assert len(tags_of(kms, meta["KeyId"])) == 50
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "t00", "TagValue": "changed"}])  # replacing is fine
    code = code_of(kms.tag_resource, KeyId=meta["KeyId"], Tags=[{"TagKey": "t50", "TagValue": "v"}])
    assert code == "LimitExceededException"
    tags = tags_of(kms, meta["KeyId"])
    assert len(tags) == 50 and tags["t00"] == "changed" and "t50" not in tags
    fresh = new_key(kms)
    code = code_of(kms.tag_resource, KeyId=fresh["KeyId"], Tags=[{"TagKey": f"n{i}", "TagValue": "v"} for i in range(51)])
    assert code == "LimitExceededException"
    assert tags_of(kms, fresh["KeyId"]) == {}


def test_tag_length_limits(kms: Any) -> None:
    meta = new_key(kms)
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "k" * 128, "TagValue": "v" * 256}])
    assert code_of(kms.tag_resource, KeyId=meta["KeyId"], Tags=[{"TagKey": "k" * 129, "TagValue": "v"}]) == "ValidationException"
    assert code_of(kms.tag_resource, KeyId=meta["KeyId"], Tags=[{"TagKey": "k", "TagValue": "v" * 257}]) == "ValidationException"


def test_list_resource_tags_pagination(kms: Any) -> None:
    meta = new_key(kms)
    expected = {f"tag-{i:02d}": f"value-{i}" for i in range(7)}
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": k, "TagValue": v} for k, v in expected.items()])
    seen: dict[str, str] = {}
    sizes, marker = [], None
    while True:
        page = kms.list_resource_tags(KeyId=meta["KeyId"], Limit=3, **({"Marker": marker} if marker else {}))
        sizes.append(len(page["Tags"]))
        for tag in page["Tags"]:
            assert tag["TagKey"] not in seen
            seen[tag["TagKey"]] = tag["TagValue"]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert sizes == [3, 3, 1]
    assert seen == expected
    assert code_of(kms.list_resource_tags, KeyId=meta["KeyId"], Marker="garbage") == "InvalidMarkerException"


def test_tags_on_missing_key(kms: Any) -> None:
    missing = str(uuid.uuid4())
    assert code_of(kms.tag_resource, KeyId=missing, Tags=[{"TagKey": "a", "TagValue": "b"}]) == "NotFoundException"
    assert code_of(kms.untag_resource, KeyId=missing, TagKeys=["a"]) == "NotFoundException"
    assert code_of(kms.list_resource_tags, KeyId=missing) == "NotFoundException"


def test_tags_and_key_states(kms: Any) -> None:
    meta = new_key(kms, Tags=[{"TagKey": "keep", "TagValue": "1"}])
    kms.disable_key(KeyId=meta["KeyId"])
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "while-disabled", "TagValue": "1"}])
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    expected = ("KMSInvalidStateException", 400, f"{meta['Arn']} is pending deletion.")
    assert error_of(kms.tag_resource, KeyId=meta["KeyId"], Tags=[{"TagKey": "x", "TagValue": "1"}]) == expected
    assert error_of(kms.untag_resource, KeyId=meta["KeyId"], TagKeys=["keep"]) == expected
    assert tags_of(kms, meta["KeyId"]) == {"keep": "1", "while-disabled": "1"}  # listing still works


def test_list_resource_tags_limit_is_1_to_50(kms: Any) -> None:
    # "If you include a value, it must be between 1 and 50, inclusive" (ListResourceTags, Limit)
    meta = new_key(kms, Tags=[{"TagKey": "a", "TagValue": "b"}])
    assert kms.list_resource_tags(KeyId=meta["KeyId"], Limit=50)["Tags"] == [{"TagKey": "a", "TagValue": "b"}]
    code, _, message = error_of(kms.list_resource_tags, KeyId=meta["KeyId"], Limit=51)
    assert code == "ValidationException" and "'limit'" in message
    assert code_of(kms.list_resource_tags, KeyId=str(uuid.uuid4()), Limit=51) == "ValidationException"


def test_alias_named_like_a_key_path_does_not_break_the_scheduler(tmp_path: Any) -> None:
    # Alias names may contain "/": "alias/key/x" must never be read as a key record.
    from tests.conftest import start_server

    server = start_server(tmp_path, "--dev", "--data-dir", str(tmp_path / "data"), "--scheduler-interval", "0.2")
    try:
        client = server.client()
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        client.create_alias(AliasName="alias/key/x", TargetKeyId=key_id)
        time.sleep(0.8)  # a few scheduler passes
        assert "scheduled work failed" not in server.log()
    finally:
        server.stop()
