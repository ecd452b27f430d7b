"""The key state table: every operation in Disabled and PendingDeletion, and representative rows."""

from __future__ import annotations

import pytest

from keyhive.errors import (
    DisabledException,
    KeyhiveError,
    KMSInvalidStateException,
    UnsupportedOperationException,
)
from keyhive.keystates import KEY_STATE_TABLE, KEY_STATES, check_key_state

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

DISABLED = (DisabledException, f"{ARN} is disabled.")
PENDING_DELETION = (KMSInvalidStateException, f"{ARN} is pending deletion.")
NOT_PENDING_DELETION = (KMSInvalidStateException, f"{ARN} is not pending deletion.")
PENDING_IMPORT = (KMSInvalidStateException, f"{ARN} is pending import.")
ORIGIN_EXTERNAL = (UnsupportedOperationException, f"{ARN} origin is EXTERNAL which is not valid for this operation.")
ORIGIN_AWS_KMS = (UnsupportedOperationException, f"{ARN} origin is AWS_KMS which is not valid for this operation.")
OK = None

# The operations of the brief, for a symmetric AWS_KMS-origin key:
#                                    Enabled          Disabled          PendingDeletion   PendingImport
EXPECTED: dict[str, tuple[object, object, object, object]] = {
    "CreateAlias":                   (OK,             OK,               PENDING_DELETION, OK),
    "UpdateAlias":                   (OK,             OK,               PENDING_DELETION, OK),
    "DeleteAlias":                   (OK,             OK,               OK,               OK),
    "DescribeKey":                   (OK,             OK,               OK,               OK),
    "EnableKey":                     (OK,             OK,               PENDING_DELETION, PENDING_IMPORT),
    "DisableKey":                    (OK,             OK,               PENDING_DELETION, PENDING_IMPORT),
    "ScheduleKeyDeletion":           (OK,             OK,               PENDING_DELETION, OK),
    "CancelKeyDeletion":             (NOT_PENDING_DELETION, NOT_PENDING_DELETION, OK,   NOT_PENDING_DELETION),
    "UpdateKeyDescription":          (OK,             OK,               PENDING_DELETION, OK),
    "TagResource":                   (OK,             OK,               PENDING_DELETION, OK),
    "UntagResource":                 (OK,             OK,               PENDING_DELETION, OK),
    "ListResourceTags":              (OK,             OK,               OK,               OK),
    "Encrypt":                       (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "Decrypt":                       (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "ReEncrypt":                     (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GenerateDataKey":               (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GenerateDataKeyWithoutPlaintext": (OK,           DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "EnableKeyRotation":             (OK,             DISABLED,         PENDING_DELETION, ORIGIN_EXTERNAL),
    "DisableKeyRotation":            (OK,             DISABLED,         PENDING_DELETION, ORIGIN_EXTERNAL),
    "GetKeyRotationStatus":          (OK,             OK,               OK,               ORIGIN_EXTERNAL),
    "RotateKeyOnDemand":             (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "ListKeyRotations":              (OK,             OK,               OK,               OK),
    "GetKeyPolicy":                  (OK,             OK,               OK,               OK),
    "PutKeyPolicy":                  (OK,             OK,               OK,               OK),
    "ListKeyPolicies":               (OK,             OK,               OK,               OK),
    "CreateGrant":                   (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "ListGrants":                    (OK,             OK,               OK,               OK),
    "RetireGrant":                   (OK,             OK,               OK,               OK),
    "RevokeGrant":                   (OK,             OK,               OK,               OK),
    "Sign":                          (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "Verify":                        (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GetPublicKey":                  (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GenerateMac":                   (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "VerifyMac":                     (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GenerateDataKeyPair":           (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GenerateDataKeyPairWithoutPlaintext": (OK,       DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "DeriveSharedSecret":            (OK,             DISABLED,         PENDING_DELETION, PENDING_IMPORT),
    "GetParametersForImport":        (ORIGIN_AWS_KMS, ORIGIN_AWS_KMS,   ORIGIN_AWS_KMS,   OK),
    "ImportKeyMaterial":             (ORIGIN_AWS_KMS, ORIGIN_AWS_KMS,   ORIGIN_AWS_KMS,   OK),
    "DeleteImportedKeyMaterial":     (ORIGIN_AWS_KMS, ORIGIN_AWS_KMS,   ORIGIN_AWS_KMS,   OK),
}  # fmt: skip

CASES = [
    pytest.param(op, state, outcome, id=f"{op}-{state}")
    for op, row in EXPECTED.items()
    for state, outcome in zip(("Enabled", "Disabled", "PendingDeletion", "PendingImport"), row)
]


def assert_outcome(operation: str, state: str, outcome: object) -> None:
    if outcome is None:
        assert check_key_state(operation, state, ARN) is None
        return
    error, message = outcome  # type: ignore[misc]
    with pytest.raises(KeyhiveError) as info:
        check_key_state(operation, state, ARN)
    assert type(info.value) is error
    assert info.value.message == message


@pytest.mark.parametrize(("operation", "state", "outcome"), CASES)
def test_brief_operations(operation: str, state: str, outcome: object) -> None:
    assert_outcome(operation, state, outcome)


def test_every_brief_operation_is_in_the_table() -> None:
    assert set(EXPECTED) <= set(KEY_STATE_TABLE)


def test_every_row_covers_every_state() -> None:
    for operation, row in KEY_STATE_TABLE.items():
        assert set(row) == set(KEY_STATES), operation


def test_key_states() -> None:
    assert KEY_STATES == ("Creating", "Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable", "Updating")


def test_enabled_allows_every_key_state_checked_operation() -> None:
    # Only the import operations (origin AWS_KMS, footnote [9]) and CancelKeyDeletion ([4])
    # are refused on an Enabled key.
    refused = {op for op in KEY_STATE_TABLE if KEY_STATE_TABLE[op]["Enabled"] is not None}
    assert refused == {"CancelKeyDeletion", "GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial"}


# -- the other columns: Unavailable (custom key stores), Creating, Updating (multi-Region) --
@pytest.mark.parametrize(
    ("operation", "state", "outcome"),
    [
        ("Encrypt", "Unavailable", (KMSInvalidStateException, f"{ARN} is unavailable.")),
        ("Decrypt", "Creating", (KMSInvalidStateException, f"{ARN} is creating.")),
        ("Decrypt", "Updating", OK),
        ("EnableKey", "Unavailable", OK),  # [12]: succeeds, state changes when available
        ("EnableKey", "Updating", (KMSInvalidStateException, f"{ARN} is updating.")),
        ("ScheduleKeyDeletion", "Updating", (KMSInvalidStateException, f"{ARN} is updating.")),
        ("CancelKeyDeletion", "Unavailable", NOT_PENDING_DELETION),
        ("CreateGrant", "Unavailable", OK),
        ("CreateGrant", "Creating", (KMSInvalidStateException, f"{ARN} is creating.")),
        ("EnableKeyRotation", "Unavailable", (UnsupportedOperationException, f"{ARN} is in a custom key store, which is not valid for this operation.")),
        ("DescribeKey", "Creating", OK),
        ("TagResource", "Updating", OK),
    ],
)
def test_other_states(operation: str, state: str, outcome: object) -> None:
    assert_outcome(operation, state, outcome)


# -- operations not in the table, and bad input -----------------------------------------------
@pytest.mark.parametrize("state", KEY_STATES)
def test_unlisted_operation_is_enabled_only(state: str) -> None:
    if state == "Enabled":
        assert check_key_state("SomeFutureOperation", state, ARN) is None
        return
    with pytest.raises(KMSInvalidStateException) as info:
        check_key_state("SomeFutureOperation", state, ARN)
    assert info.value.message.startswith(f"{ARN} is ")
    assert info.value.message.endswith(".")


def test_unlisted_operation_messages() -> None:
    with pytest.raises(KMSInvalidStateException, match=r" is disabled\.$"):
        check_key_state("SomeFutureOperation", "Disabled", ARN)
    with pytest.raises(KMSInvalidStateException, match=r" is pending deletion\.$"):
        check_key_state("SomeFutureOperation", "PendingDeletion", ARN)


def test_unknown_state_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check_key_state("Encrypt", "PendingReplicaDeletion", ARN)
    with pytest.raises(ValueError):
        check_key_state("Encrypt", "enabled", ARN)


def test_wire_types() -> None:
    with pytest.raises(DisabledException) as d:
        check_key_state("Encrypt", "Disabled", ARN)
    assert d.value.wire_type == "DisabledException" and d.value.status == 400
    with pytest.raises(KMSInvalidStateException) as s:
        check_key_state("Encrypt", "PendingDeletion", ARN)
    assert s.value.wire_type == "KMSInvalidStateException" and s.value.status == 400


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        KEY_STATE_TABLE["Encrypt"] = KEY_STATE_TABLE["DescribeKey"]  # type: ignore[index]
    with pytest.raises(TypeError):
        KEY_STATE_TABLE["Encrypt"]["Disabled"] = None  # type: ignore[index]
