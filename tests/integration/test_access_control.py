"""Who may use which key: several real users through boto3 against a live ``keyhive server --dev``.

Key policies, identity policies and how they combine, as the AWS KMS Developer Guide
documents it ("Default key policy", "Key policies in AWS KMS", "Allowing users in other
accounts to use a KMS key", "AWS KMS condition keys", "Troubleshooting key access"):
the default key policy delegates to identity policies; a key policy without the account
statement does not; an explicit Deny wins; conditions on the encryption context, the
alias named in the request and the source address; wildcards and NotAction; cross-account
use needs both the key policy and the caller's identity policy; the lockout safety check;
alias operations need permission on the alias and the key; deactivated and deleted
access keys; the admin API is for admins only; changes take effect at once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import pytest

from tests.conftest import REGION, RunningServer, User, code_of, error_of, iam_call, make_user

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER_ACCOUNT}:root"
ADMIN = f"arn:aws:iam::{ACCOUNT}:user/admin"
PLAINTEXT = b"access control"


# -- helpers ---------------------------------------------------------------------------------------


def denied(call: Callable[..., Any], principal: str, action: str, resource: str, **kwargs: Any) -> str:
    """Assert an AccessDeniedException in AWS's shape; return its message."""
    code, status, message = error_of(call, **kwargs)
    assert (code, status) == ("AccessDeniedException", 400), message
    assert message.startswith(f"User: {principal} is not authorized to perform: {action} on resource: {resource}"), message
    return message


def statement(actions: str | list[str], resource: str | list[str] = "*", *, effect: str = "Allow",
              principal: str | list[str] | None = None, condition: dict[str, Any] | None = None,
              not_action: bool = False) -> dict[str, Any]:
    stmt: dict[str, Any] = {"Effect": effect, "NotAction" if not_action else "Action": actions, "Resource": resource}
    if principal is not None:
        stmt["Principal"] = {"AWS": principal}
    if condition is not None:
        stmt["Condition"] = condition
    return stmt


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def key_policy(*statements: dict[str, Any], delegate: bool = True, admin: bool = True) -> str:
    """A key policy: the account statement (``delegate``), the admin's, then ``statements``."""
    head = []
    if delegate:
        head.append(statement("kms:*", principal=ROOT))
    if admin:
        head.append(statement("kms:*", principal=ADMIN))
    return json.dumps(document(*head, *statements))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_user(server: RunningServer, prefix: str, *statements: dict[str, Any], account: str | None = None) -> User:
    policies = {"p": document(*statements)} if statements else None
    return make_user(server, unique(prefix), account=account, policies=policies)


def put_policy(server: RunningServer, user: User, *statements: dict[str, Any], name: str = "p") -> None:
    extra = {"AccountId": user.account} if user.account != ACCOUNT else {}
    code, reply = iam_call(server.endpoint, "PutUserPolicy", {
        "UserName": user.name, "PolicyName": name, "PolicyDocument": json.dumps(document(*statements)), **extra})
    assert code == 200, reply


def new_key(kms: Any, policy: str | None = None, **kwargs: Any) -> dict[str, Any]:
    if policy is not None:
        kwargs["Policy"] = policy
    return kms.create_key(**kwargs)["KeyMetadata"]


def alias_arn(name: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"


@pytest.fixture(scope="module")
def key(kms: Any) -> dict[str, Any]:
    """A key with the default key policy."""
    return new_key(kms, Description="default policy")


@pytest.fixture(scope="module")
def ciphertext(kms: Any, key: dict[str, Any]) -> bytes:
    return kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]


# -- the default key policy --------------------------------------------------------------------------
def test_default_key_policy_is_the_account_statement(kms: Any, key: dict[str, Any]) -> None:
    doc = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    [stmt] = doc["Statement"]
    assert stmt["Effect"] == "Allow"
    assert stmt["Principal"] == {"AWS": ROOT}
    assert stmt["Action"] == "kms:*" and stmt["Resource"] == "*"


def test_admin_uses_a_key_with_the_default_policy(kms: Any, key: dict[str, Any], ciphertext: bytes) -> None:
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == PLAINTEXT
    assert kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_user_without_identity_policy_is_refused(dev_server: RunningServer, key: dict[str, Any],
                                                 ciphertext: bytes) -> None:
    nobody = new_user(dev_server, "nobody")
    message = denied(nobody.kms.encrypt, nobody.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    assert message.endswith("because no identity-based policy allows the kms:Encrypt action"), message
    denied(nobody.kms.decrypt, nobody.arn, "kms:Decrypt", key["Arn"], CiphertextBlob=ciphertext)
    denied(nobody.kms.describe_key, nobody.arn, "kms:DescribeKey", key["Arn"], KeyId=key["Arn"])


def test_refusal_reveals_no_key_state(dev_server: RunningServer, kms: Any) -> None:
    """Authorization comes first: a refused caller cannot tell a disabled key from an enabled one."""
    meta = new_key(kms)
    kms.disable_key(KeyId=meta["KeyId"])
    nobody = new_user(dev_server, "nostate")
    message = denied(nobody.kms.encrypt, nobody.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["KeyId"], Plaintext=b"x")
    assert "isabled" not in message
    assert code_of(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == "DisabledException"


# -- IAM delegation on and off ------------------------------------------------------------------------
def test_delegation_on_identity_policy_allows(dev_server: RunningServer, key: dict[str, Any], ciphertext: bytes) -> None:
    user = new_user(dev_server, "encryptor", statement("kms:Encrypt", key["Arn"]))
    reply = user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"delegated")
    assert reply["KeyId"] == key["Arn"]
    # only what the identity policy names
    denied(user.kms.decrypt, user.arn, "kms:Decrypt", key["Arn"], CiphertextBlob=ciphertext)


def test_delegation_on_identity_policy_for_another_key_does_not_allow(dev_server: RunningServer, kms: Any,
                                                                      key: dict[str, Any]) -> None:
    other = new_key(kms)
    user = new_user(dev_server, "otherkey", statement("kms:Encrypt", other["Arn"]))
    user.kms.encrypt(KeyId=other["KeyId"], Plaintext=b"x")
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")


def test_delegation_off_identity_policy_alone_is_not_enough(dev_server: RunningServer, kms: Any) -> None:
    meta = new_key(kms, key_policy(delegate=False))
    user = new_user(dev_server, "undelegated", statement("kms:*"))
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["KeyId"], Plaintext=b"x")
    denied(user.kms.describe_key, user.arn, "kms:DescribeKey", meta["Arn"], KeyId=meta["KeyId"])
    # the admin is named in the key policy itself, so it still may
    kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")


# -- the key policy alone -----------------------------------------------------------------------------
def test_key_policy_allows_encrypt_but_not_decrypt(dev_server: RunningServer, kms: Any) -> None:
    user = new_user(dev_server, "encrypt-only")  # no identity policy at all
    meta = new_key(kms, key_policy(statement("kms:Encrypt", principal=user.arn), delegate=False))
    blob = user.kms.encrypt(KeyId=meta["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    message = denied(user.kms.decrypt, user.arn, "kms:Decrypt", meta["Arn"], CiphertextBlob=blob)
    assert "resource-based policy" in message, message
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
    denied(user.kms.generate_data_key, user.arn, "kms:GenerateDataKey", meta["Arn"],
           KeyId=meta["KeyId"], KeySpec="AES_256")


# -- explicit Deny wins -------------------------------------------------------------------------------
def test_deny_in_key_policy_overrides_identity_allow(dev_server: RunningServer, kms: Any) -> None:
    user = new_user(dev_server, "denied-by-key", statement("kms:*"))
    meta = new_key(kms, key_policy(statement("kms:Encrypt", effect="Deny", principal=user.arn)))
    message = denied(user.kms.encrypt, user.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["KeyId"], Plaintext=b"x")
    assert "explicit deny" in message, message
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    assert user.kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT


def test_deny_in_identity_policy_overrides_key_policy_allow(dev_server: RunningServer, kms: Any) -> None:
    user = new_user(dev_server, "denied-by-self", statement("kms:Decrypt", effect="Deny"))
    meta = new_key(kms, key_policy(statement("kms:*", principal=user.arn), delegate=False))
    blob = user.kms.encrypt(KeyId=meta["KeyId"], Plaintext=PLAINTEXT)["CiphertextBlob"]
    message = denied(user.kms.decrypt, user.arn, "kms:Decrypt", meta["Arn"], CiphertextBlob=blob)
    assert "explicit deny" in message and "identity-based policy" in message, message


def test_deny_with_wildcard_action_in_key_policy(dev_server: RunningServer, kms: Any) -> None:
    user = new_user(dev_server, "deny-star", statement("kms:*"))
    meta = new_key(kms, key_policy(statement("kms:*", effect="Deny", principal=user.arn)))
    for call, action, kwargs in [
        (user.kms.encrypt, "kms:Encrypt", {"KeyId": meta["KeyId"], "Plaintext": b"x"}),
        (user.kms.describe_key, "kms:DescribeKey", {"KeyId": meta["KeyId"]}),
        (user.kms.get_key_policy, "kms:GetKeyPolicy", {"KeyId": meta["KeyId"], "PolicyName": "default"}),
    ]:
        denied(call, user.arn, action, meta["Arn"], **kwargs)


# -- conditions -------------------------------------------------------------------------------------
def test_condition_on_encryption_context_value(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "finance", statement(
        ["kms:Encrypt", "kms:Decrypt"], key["Arn"],
        condition={"StringEquals": {"kms:EncryptionContext:dept": "finance"}}))
    good = {"dept": "finance", "app": "ledger"}
    blob = user.kms.encrypt(KeyId=key["KeyId"], Plaintext=PLAINTEXT, EncryptionContext=good)["CiphertextBlob"]
    assert user.kms.decrypt(CiphertextBlob=blob, EncryptionContext=good)["Plaintext"] == PLAINTEXT
    for context in ({"dept": "hr"}, {"dept": "Finance"}, {"team": "finance"}, {}):
        denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"],
               KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)


def test_condition_on_encryption_context_keys_for_all_values(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "ctxkeys", statement(
        "kms:Encrypt", key["Arn"],
        condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["dept", "project"]}}))
    for context in ({"dept": "a"}, {"dept": "a", "project": "b"}, {"project": "b"}):
        user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"],
           KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"dept": "a", "other": "c"})
    # "ForAllValues ... returns true if there are no keys in the request" (KMS guide's warning):
    # an empty encryption context satisfies it.
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


def test_condition_encryption_context_keys_for_any_value(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "anykeys", statement(
        "kms:Encrypt", key["Arn"],
        condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}))
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"tenant": "t1", "x": "y"})
    for context in ({"x": "y"}, {}):
        denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"],
               KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)


def test_condition_on_request_alias(dev_server: RunningServer, kms: Any) -> None:
    meta = new_key(kms)
    good, other = unique("alias/ac-good"), unique("alias/ac-other")
    kms.create_alias(AliasName=good, TargetKeyId=meta["KeyId"])
    kms.create_alias(AliasName=other, TargetKeyId=meta["KeyId"])
    user = new_user(dev_server, "via-alias", statement(
        "kms:Encrypt", condition={"StringEquals": {"kms:RequestAlias": good}}))
    assert user.kms.encrypt(KeyId=good, Plaintext=b"x")["KeyId"] == meta["Arn"]
    user.kms.encrypt(KeyId=alias_arn(good), Plaintext=b"x")
    for ref in (meta["KeyId"], meta["Arn"], other):
        denied(user.kms.encrypt, user.arn, "kms:Encrypt", meta["Arn"], KeyId=ref, Plaintext=b"x")


def test_condition_on_resource_aliases(dev_server: RunningServer, kms: Any) -> None:
    tagged, untagged = new_key(kms), new_key(kms)
    kms.create_alias(AliasName=unique("alias/ac-team-blue"), TargetKeyId=tagged["KeyId"])
    user = new_user(dev_server, "blue", statement(
        "kms:Encrypt", condition={"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/ac-team-blue-*"}}))
    user.kms.encrypt(KeyId=tagged["KeyId"], Plaintext=b"x")
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", untagged["Arn"], KeyId=untagged["KeyId"], Plaintext=b"x")


def test_condition_on_source_ip(dev_server: RunningServer, key: dict[str, Any]) -> None:
    local = new_user(dev_server, "local", statement(
        "kms:Encrypt", key["Arn"], condition={"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}))
    local.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    remote = new_user(dev_server, "remote", statement(
        "kms:Encrypt", key["Arn"], condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    denied(remote.kms.encrypt, remote.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    not_local = new_user(dev_server, "notlocal", statement(
        "kms:Encrypt", key["Arn"], condition={"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))
    denied(not_local.kms.encrypt, not_local.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")


def test_condition_on_principal_tag(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "tagged", statement(
        "kms:Encrypt", key["Arn"], condition={"StringEquals": {"aws:PrincipalTag/team": "blue"}}))
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    code, reply = iam_call(dev_server.endpoint, "TagUser",
                           {"UserName": user.name, "Tags": [{"Key": "team", "Value": "blue"}]})
    assert code == 200, reply
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


# -- wildcards and NotAction ------------------------------------------------------------------------
def test_action_wildcard(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "describer", statement(["kms:Describe*", "kms:List*"]))
    assert user.kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"] == key["Arn"]
    assert any(k["KeyId"] == key["KeyId"] for k in user.kms.list_keys(Limit=1000)["Keys"])
    user.kms.list_key_policies(KeyId=key["KeyId"])
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    denied(user.kms.get_key_policy, user.arn, "kms:GetKeyPolicy", key["Arn"], KeyId=key["KeyId"], PolicyName="default")


def test_action_names_are_case_insensitive(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "casey", statement("KMS:encrypt", key["Arn"]))
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


def test_not_action(dev_server: RunningServer, key: dict[str, Any], ciphertext: bytes) -> None:
    user = new_user(dev_server, "notaction", statement(["kms:Decrypt", "kms:Describe*"], not_action=True))
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    user.kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    denied(user.kms.decrypt, user.arn, "kms:Decrypt", key["Arn"], CiphertextBlob=ciphertext)
    denied(user.kms.describe_key, user.arn, "kms:DescribeKey", key["Arn"], KeyId=key["KeyId"])


def test_resource_wildcard_and_not_resource(dev_server: RunningServer, kms: Any, key: dict[str, Any]) -> None:
    other = new_key(kms)
    user = new_user(dev_server, "notresource", {"Effect": "Allow", "Action": "kms:Encrypt", "NotResource": key["Arn"]})
    user.kms.encrypt(KeyId=other["KeyId"], Plaintext=b"x")
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    pattern = new_user(dev_server, "pattern", statement("kms:Encrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*"))
    pattern.kms.encrypt(KeyId=other["KeyId"], Plaintext=b"x")
    elsewhere = new_user(dev_server, "elsewhere", statement("kms:Encrypt", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/*"))
    denied(elsewhere.kms.encrypt, elsewhere.arn, "kms:Encrypt", other["Arn"], KeyId=other["KeyId"], Plaintext=b"x")


# -- cross-account use --------------------------------------------------------------------------------
def cross_account_key(kms: Any) -> dict[str, Any]:
    return new_key(kms, key_policy(statement(
        ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], principal=OTHER_ROOT)))


def test_cross_account_allowed(dev_server: RunningServer, kms: Any) -> None:
    meta = cross_account_key(kms)
    partner = new_user(dev_server, "partner", statement(["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], meta["Arn"]),
                       account=OTHER_ACCOUNT)
    assert partner.arn == f"arn:aws:iam::{OTHER_ACCOUNT}:user/{partner.name}"
    reply = partner.kms.encrypt(KeyId=meta["Arn"], Plaintext=PLAINTEXT)
    assert reply["KeyId"] == meta["Arn"]
    plain = partner.kms.decrypt(CiphertextBlob=reply["CiphertextBlob"], KeyId=meta["Arn"])["Plaintext"]
    assert plain == PLAINTEXT
    # as on AWS, the ciphertext alone names the key: no KeyId needed across accounts either
    assert partner.kms.decrypt(CiphertextBlob=reply["CiphertextBlob"])["KeyId"] == meta["Arn"]
    assert partner.kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["AWSAccountId"] == ACCOUNT
    # the owner decrypts what the partner encrypted
    assert kms.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"] == PLAINTEXT
    # an action the key policy does not give the other account
    denied(partner.kms.generate_data_key, partner.arn, "kms:GenerateDataKey", meta["Arn"],
           KeyId=meta["Arn"], KeySpec="AES_256")


def test_cross_account_needs_the_key_arn(dev_server: RunningServer, kms: Any) -> None:
    meta = cross_account_key(kms)
    name = unique("alias/ac-shared")
    kms.create_alias(AliasName=name, TargetKeyId=meta["KeyId"])
    partner = new_user(dev_server, "partner-id", statement("kms:*"), account=OTHER_ACCOUNT)
    # A key id or alias is looked up in the caller's own account, where there is no such key.
    assert code_of(partner.kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == "NotFoundException"
    assert code_of(partner.kms.encrypt, KeyId=name, Plaintext=b"x") == "NotFoundException"
    partner.kms.encrypt(KeyId=meta["Arn"], Plaintext=b"x")


def test_cross_account_only_for_operations_that_allow_it(dev_server: RunningServer, kms: Any) -> None:
    """Key management is never cross-account ("Cross-account use: No"), whatever the policies say."""
    meta = new_key(kms, key_policy(statement("kms:*", principal=OTHER_ROOT)))
    partner = new_user(dev_server, "partner-admin", statement("kms:*"), account=OTHER_ACCOUNT)
    partner.kms.describe_key(KeyId=meta["Arn"])  # cross-account: yes
    for call, kwargs in [
        (partner.kms.disable_key, {"KeyId": meta["Arn"]}),
        (partner.kms.schedule_key_deletion, {"KeyId": meta["Arn"], "PendingWindowInDays": 7}),
        (partner.kms.put_key_policy, {"KeyId": meta["Arn"], "PolicyName": "default", "Policy": key_policy()}),
        (partner.kms.get_key_policy, {"KeyId": meta["Arn"], "PolicyName": "default"}),
    ]:
        assert code_of(call, **kwargs) in ("NotFoundException", "AccessDeniedException"), call
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_cross_account_refused_without_identity_policy(dev_server: RunningServer, kms: Any) -> None:
    meta = cross_account_key(kms)
    partner = new_user(dev_server, "partner-nopolicy", account=OTHER_ACCOUNT)
    denied(partner.kms.encrypt, partner.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["Arn"], Plaintext=b"x")


def test_cross_account_refused_when_key_policy_does_not_name_the_account(dev_server: RunningServer, kms: Any,
                                                                         key: dict[str, Any]) -> None:
    partner = new_user(dev_server, "partner-unnamed", statement("kms:*"), account=OTHER_ACCOUNT)
    denied(partner.kms.encrypt, partner.arn, "kms:Encrypt", key["Arn"], KeyId=key["Arn"], Plaintext=b"x")
    denied(partner.kms.describe_key, partner.arn, "kms:DescribeKey", key["Arn"], KeyId=key["Arn"])


def test_cross_account_key_policy_naming_the_user(dev_server: RunningServer, kms: Any) -> None:
    partner = new_user(dev_server, "partner-named", account=OTHER_ACCOUNT)
    other = new_user(dev_server, "partner-other", statement("kms:*"), account=OTHER_ACCOUNT)
    meta = new_key(kms, key_policy(statement("kms:Encrypt", principal=partner.arn)))
    # A key policy naming the user: the user still needs its own account's identity policy.
    denied(partner.kms.encrypt, partner.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["Arn"], Plaintext=b"x")
    put_policy(dev_server, partner, statement("kms:Encrypt", meta["Arn"]))
    partner.kms.encrypt(KeyId=meta["Arn"], Plaintext=b"x")
    denied(other.kms.encrypt, other.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["Arn"], Plaintext=b"x")


def test_cross_account_keys_are_not_listed(dev_server: RunningServer, key: dict[str, Any]) -> None:
    partner = new_user(dev_server, "partner-lister", statement("kms:*"), account=OTHER_ACCOUNT)
    assert all(k["KeyId"] != key["KeyId"] for k in partner.kms.list_keys()["Keys"])
    made = partner.kms.create_key()["KeyMetadata"]
    assert made["AWSAccountId"] == OTHER_ACCOUNT
    assert made["Arn"] == f"arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:key/{made['KeyId']}"


# -- operations without a key: identity policy alone ----------------------------------------------------
def test_keyless_operations_need_an_identity_policy(dev_server: RunningServer) -> None:
    nobody = new_user(dev_server, "keyless-no")
    for call, action, kwargs in [
        (nobody.kms.create_key, "kms:CreateKey", {}),
        (nobody.kms.list_keys, "kms:ListKeys", {}),
        (nobody.kms.list_aliases, "kms:ListAliases", {}),
        (nobody.kms.generate_random, "kms:GenerateRandom", {"NumberOfBytes": 16}),
    ]:
        code, status, message = error_of(call, **kwargs)
        assert (code, status) == ("AccessDeniedException", 400)
        assert message.startswith(f"User: {nobody.arn} is not authorized to perform: {action}"), message

    user = new_user(dev_server, "keyless-yes",
                    statement(["kms:CreateKey", "kms:ListKeys", "kms:ListAliases", "kms:GenerateRandom"]))
    made = user.kms.create_key()["KeyMetadata"]
    assert any(k["KeyId"] == made["KeyId"] for k in user.kms.list_keys(Limit=1000)["Keys"])
    user.kms.list_aliases()
    assert len(user.kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
    # The new key has the default policy: using it needs the identity policy, which does not allow it.
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", made["Arn"], KeyId=made["KeyId"], Plaintext=b"x")


def test_create_key_condition_on_key_spec(dev_server: RunningServer) -> None:
    user = new_user(dev_server, "speccy", statement(
        "kms:CreateKey", condition={"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}))
    assert user.kms.create_key()["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    deny = new_user(dev_server, "speccy-no", statement(
        "kms:CreateKey", condition={"StringEquals": {"kms:KeySpec": "RSA_2048"}}))
    assert code_of(deny.kms.create_key) == "AccessDeniedException"


# -- the lockout safety check and policy validation ------------------------------------------------------
def test_lockout_safety_check(dev_server: RunningServer, kms: Any) -> None:
    meta = new_key(kms)
    user = new_user(dev_server, "sole")
    locking = key_policy(statement("kms:*", principal=user.arn), delegate=False, admin=False)
    code, status, message = error_of(kms.put_key_policy, KeyId=meta["KeyId"], PolicyName="default", Policy=locking)
    assert (code, status) == ("MalformedPolicyDocumentException", 400)
    assert "PutKeyPolicy" in message or "key policy" in message, message
    # nothing changed
    assert json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"])["Statement"][0][
        "Principal"] == {"AWS": ROOT}
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["KeyId"], Plaintext=b"x")

    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=locking, BypassPolicyLockoutSafetyCheck=True)
    # The admin has locked itself out: its allow-everything identity policy no longer counts.
    denied(kms.describe_key, ADMIN, "kms:DescribeKey", meta["Arn"], KeyId=meta["KeyId"])
    denied(kms.put_key_policy, ADMIN, "kms:PutKeyPolicy", meta["Arn"],
           KeyId=meta["KeyId"], PolicyName="default", Policy=key_policy())
    # ... and the user the policy names may now use the key
    user.kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    assert json.loads(user.kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]) == json.loads(locking)


def test_lockout_safety_check_on_create_key(dev_server: RunningServer, kms: Any) -> None:
    user = new_user(dev_server, "sole-create")
    locking = key_policy(statement("kms:*", principal=user.arn), delegate=False, admin=False)
    assert code_of(kms.create_key, Policy=locking) == "MalformedPolicyDocumentException"
    meta = kms.create_key(Policy=locking, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    assert code_of(kms.describe_key, KeyId=meta["KeyId"]) == "AccessDeniedException"
    user.kms.describe_key(KeyId=meta["KeyId"])


def test_lockout_check_counts_identity_policy_when_delegated(dev_server: RunningServer, kms: Any) -> None:
    """A policy with only the account statement keeps the admin in (through its identity policy)."""
    meta = new_key(kms)
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=key_policy(admin=False))
    kms.describe_key(KeyId=meta["KeyId"])


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    json.dumps({"Version": "2012-10-17"}),
    json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": {"AWS": ROOT},
                                                        "Action": "kms:*", "Resource": "*"}]}),
    json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}),
    json.dumps({"Version": "1999-01-01", "Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT},
                                                        "Action": "kms:*", "Resource": "*"}]}),
])
def test_put_key_policy_malformed(kms: Any, key: dict[str, Any], text: str) -> None:
    code, status, _ = error_of(kms.put_key_policy, KeyId=key["KeyId"], PolicyName="default", Policy=text)
    assert (code, status) == ("MalformedPolicyDocumentException", 400)


def test_put_key_policy_unknown_user_principal(kms: Any) -> None:
    meta = new_key(kms)
    ghost = f"arn:aws:iam::{ACCOUNT}:user/{unique('ghost')}"
    text = key_policy(statement("kms:Encrypt", principal=ghost))
    assert code_of(kms.put_key_policy, KeyId=meta["KeyId"], PolicyName="default",
                   Policy=text) == "MalformedPolicyDocumentException"
    assert code_of(kms.create_key, Policy=text) == "MalformedPolicyDocumentException"
    # an account principal needs no user to exist
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=key_policy(statement(
        "kms:Encrypt", principal=OTHER_ROOT)))


def test_put_key_policy_unknown_policy_name(kms: Any, key: dict[str, Any]) -> None:
    assert code_of(kms.put_key_policy, KeyId=key["KeyId"], PolicyName="custom",
                   Policy=key_policy()) == "NotFoundException"


def test_put_user_policy_malformed(dev_server: RunningServer) -> None:
    user = new_user(dev_server, "badpolicy")
    for text in ("{not json", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}]})):
        code, reply = iam_call(dev_server.endpoint, "PutUserPolicy",
                               {"UserName": user.name, "PolicyName": "bad", "PolicyDocument": text})
        assert (code, reply.get("__type")) == (400, "MalformedPolicyDocumentException"), reply


# -- aliases: permission on the alias and on the key ----------------------------------------------------
def test_alias_operations_need_alias_and_key_permission(dev_server: RunningServer, kms: Any) -> None:
    meta, second = new_key(kms), new_key(kms)
    prefix = unique("alias/ac-team")
    both = new_user(dev_server, "aliaser", statement(
        ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
        [alias_arn(prefix + "-*"), meta["Arn"], second["Arn"]]))
    alias_only = new_user(dev_server, "alias-only", statement(
        ["kms:CreateAlias", "kms:DeleteAlias"], alias_arn(prefix + "-*")))
    key_only = new_user(dev_server, "key-only", statement(["kms:CreateAlias", "kms:DeleteAlias"], meta["Arn"]))

    name = prefix + "-one"
    denied(alias_only.kms.create_alias, alias_only.arn, "kms:CreateAlias", meta["Arn"],
           AliasName=name, TargetKeyId=meta["KeyId"])
    denied(key_only.kms.create_alias, key_only.arn, "kms:CreateAlias", alias_arn(name),
           AliasName=name, TargetKeyId=meta["KeyId"])
    both.kms.create_alias(AliasName=name, TargetKeyId=meta["KeyId"])
    # outside the alias pattern
    outside = unique("alias/ac-elsewhere")
    denied(both.kms.create_alias, both.arn, "kms:CreateAlias", alias_arn(outside),
           AliasName=outside, TargetKeyId=meta["KeyId"])
    # UpdateAlias: the alias, the current key and the new key
    both.kms.update_alias(AliasName=name, TargetKeyId=second["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == second["KeyId"]
    denied(alias_only.kms.delete_alias, alias_only.arn, "kms:DeleteAlias", second["Arn"], AliasName=name)
    both.kms.delete_alias(AliasName=name)
    assert code_of(kms.describe_key, KeyId=name) == "NotFoundException"


def test_key_policy_does_not_give_alias_permission(dev_server: RunningServer, kms: Any) -> None:
    """An alias is authorized by identity policies only: a key policy naming the user is not enough."""
    user = new_user(dev_server, "kp-alias")
    meta = new_key(kms, key_policy(statement("kms:*", principal=user.arn)))
    name = unique("alias/ac-kp")
    denied(user.kms.create_alias, user.arn, "kms:CreateAlias", alias_arn(name),
           AliasName=name, TargetKeyId=meta["KeyId"])
    put_policy(dev_server, user, statement("kms:CreateAlias", alias_arn(name)))
    user.kms.create_alias(AliasName=name, TargetKeyId=meta["KeyId"])


# -- access keys and the admin API -------------------------------------------------------------------
def test_deactivated_access_key_is_refused_until_reactivated(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "inactive", statement("kms:Encrypt", key["Arn"]))
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    code, reply = iam_call(dev_server.endpoint, "UpdateAccessKey",
                           {"UserName": user.name, "AccessKeyId": user.access_key_id, "Status": "Inactive"})
    assert code == 200, reply
    code, status, _ = error_of(user.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x")
    assert (code, status) == ("UnrecognizedClientException", 400)
    code, reply = iam_call(dev_server.endpoint, "ListAccessKeys", {"UserName": user.name})
    assert [k["Status"] for k in reply["AccessKeyMetadata"]] == ["Inactive"]
    code, reply = iam_call(dev_server.endpoint, "UpdateAccessKey",
                           {"UserName": user.name, "AccessKeyId": user.access_key_id, "Status": "Active"})
    assert code == 200, reply
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")


def test_deleted_access_key_is_refused(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "deleted", statement("kms:Encrypt", key["Arn"]))
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    code, reply = iam_call(dev_server.endpoint, "DeleteAccessKey",
                           {"UserName": user.name, "AccessKeyId": user.access_key_id})
    assert code == 200, reply
    assert code_of(user.kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "UnrecognizedClientException"


def test_non_admin_cannot_use_the_admin_api(dev_server: RunningServer) -> None:
    user = new_user(dev_server, "wannabe", statement("*"))  # even with an allow-everything identity policy
    for action, body in [("CreateUser", {"UserName": unique("mallory")}), ("ListUsers", {}),
                         ("PutUserPolicy", {"UserName": user.name, "PolicyName": "x",
                                            "PolicyDocument": json.dumps(document(statement("*")))}),
                         ("CreateAccessKey", {"UserName": "admin"})]:
        code, reply = iam_call(dev_server.endpoint, action, body, user.access_key_id, user.secret)
        assert (code, reply.get("__type")) == (400, "AccessDeniedException"), (action, reply)
    code, reply = iam_call(dev_server.endpoint, "ListUsers", {})
    assert code == 200
    names = {u["UserName"] for u in reply["Users"]}
    assert user.name in names and not any(n.startswith("mallory") for n in names)


def test_admin_user_created_through_the_api_may_administer(dev_server: RunningServer) -> None:
    name = unique("second-admin")
    code, reply = iam_call(dev_server.endpoint, "CreateUser", {"UserName": name, "Admin": True})
    assert code == 200 and reply["User"]["Admin"] is True, reply
    code, reply = iam_call(dev_server.endpoint, "CreateAccessKey", {"UserName": name})
    assert code == 200, reply
    key_id, secret = reply["AccessKey"]["AccessKeyId"], reply["AccessKey"]["SecretAccessKey"]
    code, reply = iam_call(dev_server.endpoint, "GetUser", {"UserName": name}, key_id, secret)
    assert code == 200 and reply["User"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/{name}", reply


def test_unknown_access_key_is_unrecognized(dev_server: RunningServer) -> None:
    stranger = dev_server.client("AKIAUNKNOWNUNKNOWN00", "x" * 40)
    assert code_of(stranger.list_keys) == "UnrecognizedClientException"
    code, reply = iam_call(dev_server.endpoint, "ListUsers", {}, "AKIAUNKNOWNUNKNOWN00", "x" * 40)
    assert (code, reply.get("__type")) == (400, "UnrecognizedClientException"), reply


# -- changes take effect at once ----------------------------------------------------------------------
def test_identity_policy_changes_take_effect_at_once(dev_server: RunningServer, key: dict[str, Any]) -> None:
    user = new_user(dev_server, "changing")
    for _ in range(2):  # twice: a cached verdict must not outlive the change
        denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    put_policy(dev_server, user, statement("kms:Encrypt", key["Arn"]))
    for _ in range(2):
        user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    put_policy(dev_server, user, statement("kms:Encrypt", key["Arn"], effect="Deny"), name="deny")
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")
    code, reply = iam_call(dev_server.endpoint, "DeleteUserPolicy", {"UserName": user.name, "PolicyName": "deny"})
    assert code == 200, reply
    user.kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    code, reply = iam_call(dev_server.endpoint, "DeleteUserPolicy", {"UserName": user.name, "PolicyName": "p"})
    assert code == 200, reply
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", key["Arn"], KeyId=key["KeyId"], Plaintext=b"x")


def test_key_policy_changes_take_effect_at_once(dev_server: RunningServer, kms: Any) -> None:
    meta = new_key(kms)
    user = new_user(dev_server, "kp-changing", statement("kms:Encrypt", meta["Arn"]))
    user.kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=key_policy(delegate=False))
    denied(user.kms.encrypt, user.arn, "kms:Encrypt", meta["Arn"], KeyId=meta["KeyId"], Plaintext=b"x")
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=key_policy())
    user.kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
