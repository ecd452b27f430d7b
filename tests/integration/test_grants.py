"""Grants through boto3 against a live ``keyhive server --dev``, with several real users.

CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant as the AWS KMS
API reference and the Developer Guide ("Grants in AWS KMS", "Using grant constraints",
"Retiring and revoking grants") document them: a grant authorizes exactly the operations
it lists, within its constraints, for its grantee alone, and stops the moment it is
retired or revoked.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import RunningServer, User, code_of, error_of, make_user

ACCOUNT = "111122223333"
ISSUING_ACCOUNT = f"arn:aws:iam::{ACCOUNT}:root"
PLAINTEXT = b"granted"




def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def all_grants(kms: Any, **kwargs: Any) -> list[dict[str, Any]]:
    out, marker = [], None
    while True:
        page = kms.list_grants(**kwargs, **({"Marker": marker} if marker else {}))
        out += page["Grants"]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return out
        marker = page["NextMarker"]


def grant_ids(kms: Any, key_id: str) -> set[str]:
    return {g["GrantId"] for g in all_grants(kms, KeyId=key_id)}


@pytest.fixture(scope="module")
def grantee(dev_server: RunningServer) -> User:
    """A user with no identity policy: whatever it may do, a grant gave it."""
    return make_user(dev_server, "grantee")


@pytest.fixture(scope="module")
def retirer(dev_server: RunningServer) -> User:
    return make_user(dev_server, "retirer")


@pytest.fixture(scope="module")
def outsider(dev_server: RunningServer) -> User:
    return make_user(dev_server, "outsider")


@pytest.fixture()
def key(kms: Any) -> dict[str, Any]:
    """A fresh key with the default key policy for each test: grants never leak between tests."""
    return kms.create_key(Description="grants")["KeyMetadata"]


def create_grant(kms: Any, key: dict[str, Any], grantee: User, operations: list[str], **kwargs: Any) -> dict[str, Any]:
    return kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=grantee.arn, Operations=operations, **kwargs)


# -- what a grant allows ------------------------------------------------------------------------------
def test_grantee_without_grant_is_refused(grantee: User, key: dict[str, Any]) -> None:
    code, _, message = error_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x")
    assert code == "AccessDeniedException"
    assert grantee.arn in message and key["Arn"] in message and "kms:Encrypt" in message


def test_grant_with_encryption_context_subset(kms: Any, key: dict[str, Any], grantee: User) -> None:
    create_grant(kms, key, grantee, ["Encrypt", "Decrypt"],
                 Constraints={"EncryptionContextSubset": {"purpose": "test"}})
    for context in ({"purpose": "test"}, {"purpose": "test", "extra": "more"}):
        blob = grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT, EncryptionContext=context)["CiphertextBlob"]
        assert grantee.kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == PLAINTEXT
    for context in ({}, {"purpose": "other"}, {"purpose": "TEST"}, {"extra": "more"}):
        assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x",
                       EncryptionContext=context) == "AccessDeniedException", context
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    assert code_of(grantee.kms.decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    # operations the grant does not list
    assert code_of(grantee.kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_256",
                   EncryptionContext={"purpose": "test"}) == "AccessDeniedException"
    assert code_of(grantee.kms.describe_key, KeyId=key["KeyId"]) == "AccessDeniedException"


def test_grant_constraint_keys_are_case_insensitive(kms: Any, key: dict[str, Any], grantee: User) -> None:
    """"In a grant constraint, the key in each key-value pair is not case sensitive, but the value is"
    (API reference, GrantConstraints)."""
    create_grant(kms, key, grantee, ["Encrypt"], Constraints={"EncryptionContextSubset": {"Purpose": "test"}})
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "test"})
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"PURPOSE": "test"})
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x",
                   EncryptionContext={"purpose": "Test"}) == "AccessDeniedException"


def test_grant_with_encryption_context_equals(kms: Any, key: dict[str, Any], grantee: User) -> None:
    create_grant(kms, key, grantee, ["Encrypt"], Constraints={"EncryptionContextEquals": {"a": "1", "b": "2"}})
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"b": "2", "a": "1"})
    for context in ({"a": "1"}, {"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "3"}, {}):
        assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x",
                       EncryptionContext=context) == "AccessDeniedException", context


def test_grant_for_generate_data_key_does_not_allow_decrypt(kms: Any, key: dict[str, Any], grantee: User) -> None:
    create_grant(kms, key, grantee, ["GenerateDataKey"])
    reply = grantee.kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    assert len(reply["Plaintext"]) == 32
    assert code_of(grantee.kms.decrypt, CiphertextBlob=reply["CiphertextBlob"]) == "AccessDeniedException"
    assert kms.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"] == reply["Plaintext"]
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    assert code_of(grantee.kms.generate_data_key_without_plaintext, KeyId=key["KeyId"],
                   KeySpec="AES_256") == "AccessDeniedException"


def test_grant_is_for_its_grantee_and_its_key_only(kms: Any, key: dict[str, Any], grantee: User,
                                                   outsider: User) -> None:
    other_key = kms.create_key()["KeyMetadata"]
    create_grant(kms, key, grantee, ["Encrypt"])
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    assert code_of(outsider.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    assert code_of(grantee.kms.encrypt, KeyId=other_key["KeyId"], Plaintext=b"x") == "AccessDeniedException"


def test_grant_token_is_usable_at_once(kms: Any, key: dict[str, Any], grantee: User) -> None:
    for _ in range(2):  # a refusal, cached or not, must not outlive the grant
        assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=PLAINTEXT) == "AccessDeniedException"
    reply = create_grant(kms, key, grantee, ["Encrypt", "Decrypt"])
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT)
    blob = grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT, GrantTokens=[reply["GrantToken"]])[
        "CiphertextBlob"]
    assert grantee.kms.decrypt(CiphertextBlob=blob, GrantTokens=[reply["GrantToken"]])["Plaintext"] == PLAINTEXT


def test_grant_to_create_grant(kms: Any, key: dict[str, Any], grantee: User, outsider: User) -> None:
    """CreateGrant from a grant: "only grants that allow some or all of the operations in the parent grant"."""
    create_grant(kms, key, grantee, ["CreateGrant", "Encrypt"])
    for operations in (["Decrypt"], ["Encrypt", "Decrypt"], ["GenerateDataKey"]):
        code, _, message = error_of(grantee.kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=outsider.arn,
                                    Operations=operations)
        assert code == "AccessDeniedException", operations
        assert grantee.arn in message and "kms:CreateGrant" in message
    assert code_of(outsider.kms.decrypt, CiphertextBlob=kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")[
        "CiphertextBlob"]) == "AccessDeniedException"
    grantee.kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=outsider.arn, Operations=["Encrypt"])
    outsider.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


def test_grant_to_create_grant_keeps_its_constraints(kms: Any, key: dict[str, Any], grantee: User,
                                                      outsider: User) -> None:
    """A child grant's constraints must be "equally strict or stricter" than its parent's."""
    create_grant(kms, key, grantee, ["CreateGrant", "Encrypt"], Constraints={"EncryptionContextSubset": {"a": "1"}})
    for constraints in ({}, {"EncryptionContextSubset": {"b": "2"}}, {"EncryptionContextSubset": {"a": "2"}},
                        {"EncryptionContextEquals": {"b": "2"}}):
        assert code_of(grantee.kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=outsider.arn,
                       Operations=["Encrypt"], Constraints=constraints) == "AccessDeniedException", constraints
    for constraints in ({"EncryptionContextSubset": {"a": "1", "b": "2"}}, {"EncryptionContextEquals": {"a": "1"}}):
        grantee.kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=outsider.arn, Operations=["Encrypt"],
                                 Constraints=constraints)
    outsider.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"a": "1", "b": "2"})
    outsider.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"a": "1"})
    assert code_of(outsider.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x",
                   EncryptionContext={"b": "2"}) == "AccessDeniedException"


def test_create_grant_needs_permission(key: dict[str, Any], grantee: User, outsider: User) -> None:
    code, _, message = error_of(outsider.kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=outsider.arn,
                                Operations=["Encrypt"])
    assert code == "AccessDeniedException"
    assert "kms:CreateGrant" in message and outsider.arn in message
    assert code_of(outsider.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"


# -- ListGrants -----------------------------------------------------------------------------------------
def test_list_grants_fields(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    before = time.time()
    name = unique("listed")
    reply = create_grant(kms, key, grantee, ["Encrypt", "Decrypt"], RetiringPrincipal=retirer.arn, Name=name,
                         Constraints={"EncryptionContextSubset": {"purpose": "test"}})
    assert len(reply["GrantId"]) == 64 and reply["GrantToken"]
    [entry] = all_grants(kms, KeyId=key["KeyId"])
    assert entry["KeyId"] == key["Arn"]
    assert entry["GrantId"] == reply["GrantId"]
    assert entry["Name"] == name
    assert entry["GranteePrincipal"] == grantee.arn
    assert entry["RetiringPrincipal"] == retirer.arn
    assert entry["IssuingAccount"] == ISSUING_ACCOUNT
    assert entry["Operations"] == ["Encrypt", "Decrypt"]
    assert entry["Constraints"] == {"EncryptionContextSubset": {"purpose": "test"}}
    assert before - 5 <= entry["CreationDate"].timestamp() <= time.time() + 5


def test_list_grants_by_key_arn_and_filters(kms: Any, key: dict[str, Any], grantee: User, outsider: User) -> None:
    first = create_grant(kms, key, grantee, ["Encrypt"])["GrantId"]
    second = create_grant(kms, key, outsider, ["Decrypt"])["GrantId"]
    assert {g["GrantId"] for g in all_grants(kms, KeyId=key["Arn"])} == {first, second}
    assert [g["GrantId"] for g in all_grants(kms, KeyId=key["KeyId"], GrantId=second)] == [second]
    assert [g["GrantId"] for g in all_grants(kms, KeyId=key["KeyId"], GranteePrincipal=grantee.arn)] == [first]
    assert all_grants(kms, KeyId=key["KeyId"], GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/nobody") == []


def test_list_grants_pagination(kms: Any, key: dict[str, Any], grantee: User) -> None:
    made = {create_grant(kms, key, grantee, ["Encrypt"], Name=f"page-{i}")["GrantId"] for i in range(3)}
    page = kms.list_grants(KeyId=key["KeyId"], Limit=2)
    assert len(page["Grants"]) == 2 and page["Truncated"] is True and page["NextMarker"]
    rest = kms.list_grants(KeyId=key["KeyId"], Limit=2, Marker=page["NextMarker"])
    assert len(rest["Grants"]) == 1 and rest["Truncated"] is False
    assert {g["GrantId"] for g in page["Grants"] + rest["Grants"]} == made
    assert {g["GrantId"] for g in all_grants(kms, KeyId=key["KeyId"], Limit=1)} == made


def test_list_grants_needs_permission(key: dict[str, Any], outsider: User) -> None:
    assert code_of(outsider.kms.list_grants, KeyId=key["KeyId"]) == "AccessDeniedException"


def test_create_grant_name_is_idempotent(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    params = {"KeyId": key["KeyId"], "GranteePrincipal": grantee.arn, "Operations": ["Encrypt"],
              "RetiringPrincipal": retirer.arn, "Name": "same-name",
              "Constraints": {"EncryptionContextEquals": {"a": "1"}}}
    first = kms.create_grant(**params)
    again = kms.create_grant(**params)
    assert again["GrantId"] == first["GrantId"]
    assert grant_ids(kms, key["KeyId"]) == {first["GrantId"]}
    # Same name, different parameters: a new grant.
    different = kms.create_grant(**{**params, "Operations": ["Encrypt", "Decrypt"]})
    assert different["GrantId"] != first["GrantId"]
    # No name: every call makes a grant.
    unnamed = [create_grant(kms, key, grantee, ["Encrypt"])["GrantId"] for _ in range(2)]
    assert unnamed[0] != unnamed[1]
    assert len(grant_ids(kms, key["KeyId"])) == 4


def test_list_retirable_grants(kms: Any, grantee: User, retirer: User) -> None:
    key_a, key_b = kms.create_key()["KeyMetadata"], kms.create_key()["KeyMetadata"]
    mine = {create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)["GrantId"]
            for key in (key_a, key_b)}
    create_grant(kms, key_a, grantee, ["Decrypt"])  # no retiring principal
    grants: list[dict[str, Any]] = []
    marker = None
    while True:
        page = kms.list_retirable_grants(RetiringPrincipal=retirer.arn, Limit=1, **({"Marker": marker} if marker else {}))
        grants += page["Grants"]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    listed = {g["GrantId"]: g for g in grants}
    assert mine <= set(listed)
    assert all(g["RetiringPrincipal"] == retirer.arn for g in grants)
    assert {listed[i]["KeyId"] for i in mine} == {key_a["Arn"], key_b["Arn"]}


def test_list_retirable_grants_needs_identity_permission(retirer: User) -> None:
    assert code_of(retirer.kms.list_retirable_grants, RetiringPrincipal=retirer.arn) == "AccessDeniedException"


# -- RetireGrant and RevokeGrant ------------------------------------------------------------------------
def test_retire_grant_by_token(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    reply = create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    retirer.kms.retire_grant(GrantToken=reply["GrantToken"])
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    assert grant_ids(kms, key["KeyId"]) == set()


def test_retire_grant_by_key_and_grant_id(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    reply = create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    retirer.kms.retire_grant(KeyId=key["Arn"], GrantId=reply["GrantId"])
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    assert code_of(retirer.kms.retire_grant, KeyId=key["Arn"], GrantId=reply["GrantId"]) == "NotFoundException"


def test_retire_grant_by_grantee_needs_retire_grant_operation(kms: Any, key: dict[str, Any], grantee: User) -> None:
    plain = create_grant(kms, key, grantee, ["Encrypt"])
    assert code_of(grantee.kms.retire_grant, GrantToken=plain["GrantToken"]) == "AccessDeniedException"
    with_retire = create_grant(kms, key, grantee, ["Encrypt", "RetireGrant"])
    grantee.kms.retire_grant(GrantToken=with_retire["GrantToken"])
    assert grant_ids(kms, key["KeyId"]) == {plain["GrantId"]}


def test_retire_grant_by_someone_else_is_refused(kms: Any, key: dict[str, Any], grantee: User, retirer: User,
                                                 outsider: User) -> None:
    reply = create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)
    code, _, message = error_of(outsider.kms.retire_grant, GrantToken=reply["GrantToken"])
    assert code == "AccessDeniedException"
    assert outsider.arn in message and "kms:RetireGrant" in message
    assert code_of(outsider.kms.retire_grant, KeyId=key["Arn"], GrantId=reply["GrantId"]) == "AccessDeniedException"
    assert code_of(grantee.kms.retire_grant, GrantToken=reply["GrantToken"]) == "AccessDeniedException"
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")  # still in force
    assert grant_ids(kms, key["KeyId"]) == {reply["GrantId"]}


def test_revoke_grant(kms: Any, key: dict[str, Any], grantee: User) -> None:
    reply = create_grant(kms, key, grantee, ["Encrypt", "Decrypt"])
    blob = grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=reply["GrantId"])
    assert code_of(grantee.kms.decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    assert grant_ids(kms, key["KeyId"]) == set()
    assert code_of(kms.revoke_grant, KeyId=key["KeyId"], GrantId=reply["GrantId"]) == "NotFoundException"


def test_revoke_grant_needs_permission(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    reply = create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)
    for user in (grantee, retirer):
        code, _, message = error_of(user.kms.revoke_grant, KeyId=key["KeyId"], GrantId=reply["GrantId"])
        assert code == "AccessDeniedException" and "kms:RevokeGrant" in message
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["not-a-grant-token", "AQID" * 20, "eyJ2IjogOX0"])
def test_invalid_grant_token(kms: Any, token: str) -> None:
    code, status, _ = error_of(kms.retire_grant, GrantToken=token)
    assert (code, status) == ("InvalidGrantTokenException", 400)


def test_invalid_grant_token_in_a_cryptographic_request(kms: Any, key: dict[str, Any]) -> None:
    code, status, _ = error_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=["not-a-grant-token"])
    assert (code, status) == ("InvalidGrantTokenException", 400)


@pytest.mark.parametrize("grant_id", ["not-a-grant-id", "0" * 63, "g" * 64])
def test_invalid_grant_id(kms: Any, key: dict[str, Any], grant_id: str) -> None:
    code, status, _ = error_of(kms.revoke_grant, KeyId=key["KeyId"], GrantId=grant_id)
    assert (code, status) == ("InvalidGrantIdException", 400)
    assert code_of(kms.retire_grant, KeyId=key["KeyId"], GrantId=grant_id) == "InvalidGrantIdException"


def test_unknown_grant_id_on_a_key(kms: Any, key: dict[str, Any]) -> None:
    assert code_of(kms.revoke_grant, KeyId=key["KeyId"], GrantId="a" * 64) == "NotFoundException"


@pytest.mark.parametrize("operations", [["Fly"], ["Encrypt", "encrypt"], ["Sign"], ["GenerateMac"]])
def test_invalid_grant_operations(kms: Any, key: dict[str, Any], grantee: User, operations: list[str]) -> None:
    code, status, _ = error_of(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=grantee.arn,
                               Operations=operations)
    assert (code, status) == ("ValidationException", 400)
    assert grant_ids(kms, key["KeyId"]) == set()


def test_constraints_do_not_apply_to_describe_key(kms: Any, key: dict[str, Any], grantee: User) -> None:
    """"Grants with grant constraints can include the DescribeKey and RetireGrant operations, but the
    constraint doesn't apply to these operations" (CreateGrant, Constraints)."""
    create_grant(kms, key, grantee, ["Encrypt", "DescribeKey"], Constraints={"EncryptionContextSubset": {"a": "1"}})
    assert grantee.kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"] == key["Arn"]
    assert code_of(grantee.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "AccessDeniedException"
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"a": "1"})


def test_invalid_grantee_principal(kms: Any, key: dict[str, Any]) -> None:
    code = code_of(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal="not-a-principal", Operations=["Encrypt"])
    assert code == "ValidationException"


def test_create_grant_takes_no_alias(kms: Any, key: dict[str, Any], grantee: User) -> None:
    name = unique("alias/grants")
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert code_of(kms.create_grant, KeyId=name, GranteePrincipal=grantee.arn,
                   Operations=["Encrypt"]) == "NotFoundException"


def test_dry_run(kms: Any, key: dict[str, Any], grantee: User, retirer: User) -> None:
    code, status, _ = error_of(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=grantee.arn,
                               Operations=["Encrypt"], DryRun=True)
    assert (code, status) == ("DryRunOperationException", 412)
    assert grant_ids(kms, key["KeyId"]) == set()
    reply = create_grant(kms, key, grantee, ["Encrypt"], RetiringPrincipal=retirer.arn)
    assert code_of(kms.revoke_grant, KeyId=key["KeyId"], GrantId=reply["GrantId"],
                   DryRun=True) == "DryRunOperationException"
    assert code_of(retirer.kms.retire_grant, GrantToken=reply["GrantToken"],
                   DryRun=True) == "DryRunOperationException"
    assert grant_ids(kms, key["KeyId"]) == {reply["GrantId"]}
    grantee.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


def test_dry_run_without_permission_is_access_denied(key: dict[str, Any], outsider: User) -> None:
    assert code_of(outsider.kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=outsider.arn,
                   Operations=["Encrypt"], DryRun=True) == "AccessDeniedException"
