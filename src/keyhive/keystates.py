"""Which KMS operations a key's state allows, and the exact error AWS gives when it doesn't.

Source: AWS KMS Developer Guide, "Key states of AWS KMS keys", section "Key state table"
(https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html#key-state-table;
markdown source ``doc_source/key-state.md`` in awsdocs/aws-kms-developer-guide).
The footnotes of that page are reproduced in ``_REFUSALS`` below under their numbers.

The table is for the keys Keyhive has: symmetric encryption keys with ``AWS_KMS`` origin,
held in the AWS KMS key store (no custom key store).  Where the page's answer depends
on the key ("?" cells and "[n] or [m]" cells) it is resolved for such a key:

* footnote [7] ("imported key material or custom key store: UnsupportedOperationException")
  does not apply, so "? [7]" is allowed and "X [1] or [7]" is [1];
* footnote [9] ("cannot or does not have imported key material: UnsupportedOperationException")
  does apply, so the three import operations are refused with UnsupportedOperationException
  in every state an ``AWS_KMS`` key can be in;
* "[2] or [3]" in Pending deletion (DisabledException vs KMSInvalidStateException, both
  "<arn> is pending deletion.") is resolved to [3], KMSInvalidStateException, which is
  what AWS is observed to send (e.g. "KMSInvalidStateException: arn:aws:kms:...:key/...
  is pending deletion.").

The ``PendingImport`` column is kept for completeness as the page gives it, although only
an ``EXTERNAL``-origin key can be in that state.  Cells the page marks N/A (for instance
Sign in PendingImport) are filled with what the rest of their row class does, and
operations the page's stored revision predates (RotateKeyOnDemand, ListKeyRotations,
DeriveSharedSecret) are given the row of their nearest sibling; each is marked below.

Operations not in the table are allowed when the key is ``Enabled`` and refused with
KMSInvalidStateException ("<arn> is <state>.") in every other state.  An unknown state
is a programming error (ValueError), not something to put on the wire.

This module is pure: no I/O, no clock, no key lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from keyhive.errors import (
    DisabledException,
    KeyhiveError,
    KMSInvalidStateException,
    UnsupportedOperationException,
)

KEY_STATES = ("Creating", "Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable", "Updating")


@dataclass(frozen=True)
class Refusal:
    """One failing cell of the key state table: the error class and AWS's message shape."""

    footnote: str
    error: type[KeyhiveError]
    template: str  # formatted with arn=<key ARN>

    def exception(self, key_id_arn: str) -> KeyhiveError:
        return self.error(self.template.format(arn=key_id_arn))


# The footnotes of the key state table ("Table Details").  [2] ("DisabledException: <key ARN>
# is pending deletion.") and [8] (KMSInvalidStateException for imported material pending
# deletion) never apply to an AWS_KMS key as resolved above; [10], [12] and [13] are notes
# on cells that succeed; they are recorded where they are used.
_F1 = Refusal("1", DisabledException, "{arn} is disabled.")
_F3 = Refusal("3", KMSInvalidStateException, "{arn} is pending deletion.")
_F4 = Refusal("4", KMSInvalidStateException, "{arn} is not pending deletion.")
_F5 = Refusal("5", KMSInvalidStateException, "{arn} is pending import.")
_F6 = Refusal("6", UnsupportedOperationException, "{arn} origin is EXTERNAL which is not valid for this operation.")
# [7]: the page gives only the class; the message is ours.
_F7 = Refusal("7", UnsupportedOperationException, "{arn} is in a custom key store, which is not valid for this operation.")
# [9]: the page gives only the class; the message follows the shape of [6] for origin AWS_KMS.
_F9 = Refusal("9", UnsupportedOperationException, "{arn} origin is AWS_KMS which is not valid for this operation.")
_F11 = Refusal("11", KMSInvalidStateException, "{arn} is unavailable.")
_F14 = Refusal("14", KMSInvalidStateException, "{arn} is creating.")
_F15 = Refusal("15", KMSInvalidStateException, "{arn} is updating.")

_REFUSALS: Mapping[str, Refusal] = MappingProxyType(
    {r.footnote: r for r in (_F1, _F3, _F4, _F5, _F6, _F7, _F9, _F11, _F14, _F15)}
)

OK = None  # the operation is allowed in this state

# Wording for operations not in the table, refused in any state but Enabled.
_STATE_PHRASE = {
    "Creating": "creating",
    "Disabled": "disabled",
    "PendingDeletion": "pending deletion",
    "PendingImport": "pending import",
    "Unavailable": "unavailable",
    "Updating": "updating",
}


def _row(
    enabled: Refusal | None,
    disabled: Refusal | None,
    pending_deletion: Refusal | None,
    pending_import: Refusal | None,
    unavailable: Refusal | None,
    creating: Refusal | None,
    updating: Refusal | None,
) -> Mapping[str, Refusal | None]:
    """One row, its cells in the page's column order."""
    return MappingProxyType(
        {
            "Enabled": enabled,
            "Disabled": disabled,
            "PendingDeletion": pending_deletion,
            "PendingImport": pending_import,
            "Unavailable": unavailable,
            "Creating": creating,
            "Updating": updating,
        }
    )


# Rows shared by several operations.
#                      Enabled Disabled PendDel PendImp Unavail Creating Updating
_ALWAYS = _row(OK, OK, OK, OK, OK, OK, OK)
_CRYPTO = _row(OK, _F1, _F3, _F5, _F11, _F14, OK)
# Asymmetric / HMAC operations: the page marks PendingImport and Unavailable N/A;
# filled as for _CRYPTO.
_CRYPTO_NA = _CRYPTO
_MANAGE = _row(OK, OK, _F3, OK, OK, OK, OK)  # UpdateKeyDescription, TagResource, ...
_ENABLE_DISABLE = _row(OK, OK, _F3, _F5, OK, _F14, _F15)  # Unavailable: [12], succeeds
_ROTATION_SET = _row(OK, _F1, _F3, _F6, _F7, _F14, OK)  # Enabled/Updating: "? [7]"

KEY_STATE_TABLE: Mapping[str, Mapping[str, Refusal | None]] = MappingProxyType(
    {
        # -- aliases ------------------------------------------------------------------
        "CreateAlias": _MANAGE,
        # [10]: only the *target* key's state matters; "If the source KMS key is pending
        # deletion, the command succeeds".  Check the target key only.
        "UpdateAlias": _MANAGE,
        "DeleteAlias": _ALWAYS,
        "ListAliases": _ALWAYS,
        # -- key lifecycle --------------------------------------------------------------
        "DescribeKey": _ALWAYS,
        "EnableKey": _ENABLE_DISABLE,  # EnableKey on a Disabled or Enabled key succeeds
        "DisableKey": _ENABLE_DISABLE,  # DisableKey on a Disabled key succeeds
        "ScheduleKeyDeletion": _row(OK, OK, _F3, OK, OK, OK, _F15),
        # [13] (custom key stores): a pending-deletion key stays PendingDeletion even if unavailable.
        "CancelKeyDeletion": _row(_F4, _F4, OK, _F4, _F4, _F4, _F4),
        "UpdateKeyDescription": _MANAGE,
        # -- tags -----------------------------------------------------------------------
        "TagResource": _MANAGE,
        "UntagResource": _MANAGE,
        "ListResourceTags": _ALWAYS,
        # -- cryptographic operations (ReEncrypt: check source and destination key) -----
        "Encrypt": _CRYPTO,
        "Decrypt": _CRYPTO,
        "ReEncrypt": _CRYPTO,
        "GenerateDataKey": _CRYPTO,
        "GenerateDataKeyWithoutPlaintext": _CRYPTO,
        "GenerateDataKeyPair": _CRYPTO,
        "GenerateDataKeyPairWithoutPlaintext": _CRYPTO,
        "Sign": _CRYPTO_NA,
        "Verify": _CRYPTO_NA,
        "GetPublicKey": _CRYPTO_NA,
        "GenerateMac": _CRYPTO_NA,
        "VerifyMac": _CRYPTO_NA,
        # Not in the stored revision of the page; row of Sign (same error list in the model).
        "DeriveSharedSecret": _CRYPTO_NA,
        # -- rotation -------------------------------------------------------------------
        "EnableKeyRotation": _ROTATION_SET,
        "DisableKeyRotation": _ROTATION_SET,
        "GetKeyRotationStatus": _row(OK, OK, OK, _F6, _F7, OK, OK),
        # Not in the stored revision of the page: RotateKeyOnDemand takes EnableKeyRotation's
        # row, except PendingImport, where imported keys may rotate on demand now, so the
        # refusal is the key state's ([5]) rather than the origin's ([6]).
        "RotateKeyOnDemand": _row(OK, _F1, _F3, _F5, _F7, _F14, OK),
        # Not in the stored revision of the page: GetKeyRotationStatus's row (no
        # DisabledException in its error list), except PendingImport, which it must serve
        # (its entries report ImportState PENDING_IMPORT).
        "ListKeyRotations": _row(OK, OK, OK, OK, _F7, OK, OK),
        # -- policies and grants --------------------------------------------------------
        "GetKeyPolicy": _ALWAYS,
        "PutKeyPolicy": _ALWAYS,
        "ListKeyPolicies": _ALWAYS,
        "CreateGrant": _row(OK, _F1, _F3, _F5, OK, _F14, OK),
        "ListGrants": _ALWAYS,
        "RetireGrant": _ALWAYS,
        "RevokeGrant": _ALWAYS,
        # -- imported key material ([9]: refused for an AWS_KMS key whatever its state;
        #    the PendingImport cell is the page's, for an EXTERNAL key) -----------------
        "GetParametersForImport": _row(_F9, _F9, _F9, OK, _F9, _F14, _F15),
        "ImportKeyMaterial": _row(_F9, _F9, _F9, OK, _F9, _F14, _F9),
        # PendingImport: succeeds with no effect.  Unavailable: N/A on the page, [9] here.
        "DeleteImportedKeyMaterial": _row(_F9, _F9, _F9, OK, _F9, _F14, _F15),
        # -- multi-Region (Unavailable is N/A on the page; [11] here) -------------------
        "ReplicateKey": _row(OK, _F1, _F3, _F5, _F11, _F14, _F15),
        "UpdatePrimaryRegion": _row(OK, _F1, _F3, _F5, _F11, _F14, OK),
    }
)


def check_key_state(operation: str, state: str, key_id_arn: str) -> None:
    """Raise the error AWS returns for ``operation`` on a key in ``state``; return if allowed.

    ``key_id_arn`` is the key ARN, formatted into the message as AWS does.  An
    operation not in the table is allowed in ``Enabled`` only and refused with
    KMSInvalidStateException otherwise.  An unknown ``state`` raises ValueError.
    """
    if state not in KEY_STATES:
        raise ValueError(f"unknown key state {state!r}")
    row = KEY_STATE_TABLE.get(operation)
    if row is None:
        if state == "Enabled":
            return None
        raise KMSInvalidStateException(f"{key_id_arn} is {_STATE_PHRASE[state]}.")
    refusal = row[state]
    if refusal is not None:
        raise refusal.exception(key_id_arn)
    return None
