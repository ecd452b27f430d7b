"""EnvelopeError, and the one place where the SDK's, botocore's and cryptography's errors become it.

Every message is written here, for people, from the exception's class: never from the
text of a lower error, so no plaintext, data key or key material can reach a message.
The lower exception is not chained (``from None``) for the same reason: a traceback
printer that shows causes or their locals must not find a data key there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions
from aws_encryption_sdk import exceptions as sdk
from cryptography.exceptions import InvalidSignature, InvalidTag


class EnvelopeError(Exception):
    """Encryption or decryption failed; the message says why, and holds no secret."""


# Failures raised by Keyhive's own message code (_format, _encrypt, _decrypt); each class
# has one message below. They never leave the package: ``translated`` turns them into
# EnvelopeError.
class MessageCorrupt(Exception):
    """Malformed, truncated, reordered or tampered bytes, a failed commitment, or bytes after the end."""


class ReaderLimitExceeded(Exception):
    """A message declares a frame or a number of data keys beyond this reader's limits."""


class NotCommitting(Exception):
    """A message in an algorithm suite without key commitment."""


class InputLongerThanStated(Exception):
    """``encrypt_stream`` read more bytes than its ``size`` said."""


class FieldTooLong(Exception):
    """A header field (the serialized encryption context, a key ARN, an encrypted data key) over 65535 bytes."""


class BadMaterials(Exception):
    """The materials manager returned materials this writer cannot use (wrong suite, key size, key count)."""


CORRUPT = "the message is corrupt, truncated or was tampered with"

# Failures of the message itself: any bit flip, truncation or reordering lands here.
_CORRUPT_ERRORS = (sdk.SerializationError, InvalidTag, InvalidSignature, sdk.NotSupportedError)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn any failure of ``action`` ("encrypt" or "decrypt") into one EnvelopeError."""
    try:
        yield
    except EnvelopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure leaves as EnvelopeError, by class
        raise EnvelopeError(message_for(exc, action)) from None


def message_for(exc: BaseException, action: str) -> str:
    if isinstance(exc, MessageCorrupt):
        return CORRUPT
    if isinstance(exc, ReaderLimitExceeded):
        return "the message exceeds this reader's limits (frame length or number of data keys)"
    if isinstance(exc, NotCommitting):
        return "the message's algorithm suite does not commit to its data key; refused"
    if isinstance(exc, InputLongerThanStated):
        return "the input is longer than its stated size"
    if isinstance(exc, FieldTooLong):
        return "the encryption context is too large for a message header (at most 65535 bytes serialized)"
    if isinstance(exc, BadMaterials):
        return "the materials manager returned unusable materials (suite, data key or number of keys)"
    if isinstance(exc, sdk.CustomMaximumValueExceeded):  # before the SerializationError it extends
        if action == "encrypt":
            return "the input is longer than its stated size, or there are too many keys to encrypt under"
        return "the message exceeds this reader's limits (frame length or number of data keys)"
    if isinstance(exc, _CORRUPT_ERRORS):
        return CORRUPT
    if isinstance(exc, sdk.UnknownIdentityError) and action == "decrypt":
        return CORRUPT  # an algorithm suite or content type id that does not exist
    if isinstance(exc, sdk.ActionNotAllowedError) and action == "decrypt":
        return "the message's algorithm suite does not commit to its data key; refused"
    if isinstance(exc, (sdk.DecryptKeyError, sdk.MasterKeyProviderError)) and action == "decrypt":
        return ("no allowed KMS key could decrypt the message's data key"
                f"{_kms_reason(exc)} (not an allowed key, access denied, or the key is disabled or deleted)")
    if isinstance(exc, (sdk.GenerateKeyError, sdk.EncryptKeyError, sdk.MasterKeyProviderError)):
        return f"KMS could not make or wrap a data key{_kms_reason(exc)}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, (botocore.exceptions.NoRegionError, sdk.UnknownRegionError)):
        return "no AWS region: give key ARNs, a region, or set AWS_DEFAULT_REGION"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot reach KMS at {exc.kwargs.get('endpoint_url', 'its endpoint')}"
    if isinstance(exc, botocore.exceptions.ClientError):
        return f"KMS refused the request: {exc.response.get('Error', {}).get('Code', 'error')}"
    if isinstance(exc, OSError):
        return f"I/O error: {exc.strerror or type(exc).__name__}"
    if action == "decrypt" and isinstance(exc, (ValueError, KeyError, IndexError, OverflowError, TypeError)):
        return CORRUPT  # a parse of hostile bytes that failed below the SDK's own checks
    return f"{action} failed: {type(exc).__name__}"


def _kms_reason(exc: BaseException) -> str:
    """The AWS error code behind an SDK key error, when the SDK kept it as the cause."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, botocore.exceptions.ClientError):
            return f" ({cause.response.get('Error', {}).get('Code', 'error')})"
        if isinstance(cause, botocore.exceptions.EndpointConnectionError):
            return f" (cannot reach {cause.kwargs.get('endpoint_url', 'KMS')})"
        if isinstance(cause, botocore.exceptions.NoCredentialsError):
            return " (no AWS credentials)"
        cause = cause.__cause__ or cause.__context__
    return ""
