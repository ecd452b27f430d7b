"""Every error Keyhive puts on the wire: one class per AWS error type.

The wire name (``__type``) and HTTP status of each error come from one table,
keyed by class, never by message text.  Names follow botocore's KMS model
(``botocore/data/kms/2014-11-01/service-2.json``) and AWS's common errors for
JSON 1.1 services; statuses are 400 except where AWS documents otherwise.

    KeyhiveError                      base; never sent as itself
     ├─ KMSInternalException          500, internal faults (detail goes to the log only)
     ├─ ValidationException, SerializationException, UnknownOperationException ...
     ├─ NotFoundException, DisabledException, KMSInvalidStateException ...
     └─ IncompleteSignatureException, InvalidSignatureException, ...  (authentication)

Messages are for people and never carry a secret: no key material, plaintext,
data key or access-key secret is ever formatted into one.
"""

from __future__ import annotations


class KeyhiveError(Exception):
    """An error with an AWS wire type. ``message`` is safe to show to the caller."""

    default_message: str | None = ""
    log_detail: str | None = None  # for the server log only, never the wire; never a secret

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)

    @property
    def wire_type(self) -> str:
        return type(self).__name__

    @property
    def status(self) -> int:
        for cls in type(self).__mro__:  # a subclass inherits its wire error's status
            if cls in _STATUS:
                return _STATUS[cls]
        return 400


# -- protocol and input -------------------------------------------------------
class SerializationException(KeyhiveError):
    default_message = "Malformed request body"


class ValidationException(KeyhiveError):
    pass


class UnknownOperationException(KeyhiveError):
    default_message = "The requested operation is not recognized"


class UnsupportedOperationException(KeyhiveError):
    pass


class InvalidArnException(KeyhiveError):
    pass


class InvalidMarkerException(KeyhiveError):
    default_message = "The marker is invalid"


class DryRunOperationException(KeyhiveError):
    default_message = "The request would have succeeded, but the DryRun option is set."


# -- authentication (Signature Version 4) ---------------------------------------
class MissingAuthenticationTokenException(KeyhiveError):
    default_message = "Missing Authentication Token"


class IncompleteSignatureException(KeyhiveError):
    pass


class UnrecognizedClientException(KeyhiveError):
    default_message = "The security token included in the request is invalid."


class InvalidSignatureException(KeyhiveError):
    default_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. "
        "Consult the service documentation for details."
    )


class AccessDeniedException(KeyhiveError):
    pass


# -- keys, aliases, tags ----------------------------------------------------------
class NotFoundException(KeyhiveError):
    pass


class AlreadyExistsException(KeyhiveError):
    pass


class DisabledException(KeyhiveError):
    pass


class KMSInvalidStateException(KeyhiveError):
    pass


class InvalidAliasNameException(KeyhiveError):
    pass


class InvalidKeyUsageException(KeyhiveError):
    pass


class IncorrectKeyException(KeyhiveError):
    default_message = "The key ID in the request does not identify a CMK that can perform this operation."


class KMSInvalidSignatureException(KeyhiveError):
    default_message = None  # AWS sends this error without a message


class KMSInvalidMacException(KeyhiveError):
    default_message = None


class InvalidImportTokenException(KeyhiveError):
    pass


class ExpiredImportTokenException(KeyhiveError):
    pass


class IncorrectKeyMaterialException(KeyhiveError):
    pass


class InvalidCiphertextException(KeyhiveError):
    """The one error for every way a ciphertext can fail to decrypt."""

    default_message = None  # AWS sends this error without a message


class InvalidGrantTokenException(KeyhiveError):
    pass


class InvalidGrantIdException(KeyhiveError):
    pass


class LimitExceededException(KeyhiveError):
    pass


class MalformedPolicyDocumentException(KeyhiveError):
    pass


class TagException(KeyhiveError):
    pass


class ConflictException(KeyhiveError):
    pass


class CustomKeyStoreNotFoundException(KeyhiveError):
    default_message = "Keyhive has no custom key stores."


# -- the admin API's IAM operations (names as IAM's own errors) ---------------------
class NoSuchEntityException(KeyhiveError):
    pass


class EntityAlreadyExistsException(KeyhiveError):
    pass


class DeleteConflictException(KeyhiveError):
    pass


# -- faults (5xx) -----------------------------------------------------------------
class KMSInternalException(KeyhiveError):
    default_message = "An internal error occurred."


class StoredRecordCorrupt(KMSInternalException):
    """A stored record did not decrypt under its own path: moved, edited or corrupt."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.log_detail = f"stored record {path} failed its integrity check"

    @property
    def wire_type(self) -> str:
        return "KMSInternalException"


class DependencyTimeoutException(KeyhiveError):
    default_message = "The system timed out while trying to fulfill the request."


class KeyUnavailableException(KeyhiveError):
    pass


class SealedException(KeyUnavailableException):
    """The server is sealed: it holds no root key and can decrypt nothing.

    On the wire this is KeyUnavailableException, which clients treat as retryable.
    """

    default_message = "Keyhive is sealed; unseal it with a quorum of key shares."

    @property
    def wire_type(self) -> str:
        return "KeyUnavailableException"


_STATUS: dict[type[KeyhiveError], int] = {
    KMSInternalException: 500,
    DependencyTimeoutException: 500,
    KeyUnavailableException: 500,
    DryRunOperationException: 412,
    MissingAuthenticationTokenException: 403,
    NoSuchEntityException: 404,
    EntityAlreadyExistsException: 409,
    DeleteConflictException: 409,
}


def wire_error(exc: KeyhiveError) -> tuple[int, dict[str, str]]:
    """The HTTP status and JSON body AWS clients expect for ``exc``."""
    body = {"__type": exc.wire_type}
    if exc.message is not None:
        body["message"] = exc.message
    return exc.status, body
