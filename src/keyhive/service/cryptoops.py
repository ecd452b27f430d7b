"""Cryptographic operations on symmetric keys.

Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext,
GenerateRandom.  Every way a ciphertext can fail to decrypt is the same
InvalidCiphertextException.
"""

from __future__ import annotations

from typing import Any, Mapping

from keyhive import crypto, keyspecs, limits
from keyhive.blob import (
    MalformedBlob,
    open_kms_blob,
    parse_kms_blob,
    seal_kms_blob,
)
from keyhive.crypto import asymmetric
from keyhive.errors import (
    CustomKeyStoreNotFoundException,
    DryRunOperationException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import authorize_key, find_key, lookup_key

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
# The policy actions each operation needs, per key it names (ReEncrypt names two).
_PERMISSIONS = {"Decrypt": ("Decrypt",), "ReEncrypt": ("ReEncryptFrom", "ReEncryptTo")}


def _check_context(context: Mapping[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in context.items())
    if size > limits.MAX_ENCRYPTION_CONTEXT_BYTES:
        raise ValidationException(
            f"Encryption context must be at most {limits.MAX_ENCRYPTION_CONTEXT_BYTES} bytes"
        )


def _check_usage(key: KeyRecord, algorithm: str | None, *, symmetric_only: bool = False) -> str:
    """The encryption algorithm to use with ``key``; InvalidKeyUsageException if there is none."""
    if key.key_usage != keyspecs.ENCRYPT_DECRYPT or (symmetric_only and key.key_spec != SYMMETRIC_DEFAULT):
        raise InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage} which is not valid for this operation.")
    if key.key_spec == SYMMETRIC_DEFAULT:
        algorithm = algorithm or SYMMETRIC_DEFAULT
    if algorithm not in keyspecs.SPECS[key.key_spec].algorithms(keyspecs.ENCRYPT_DECRYPT):
        raise InvalidKeyUsageException(
            f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}." if algorithm else
            f"{key.arn} is an asymmetric key: specify an EncryptionAlgorithm."
        )
    return algorithm


def _no_context_for_asymmetric(key: KeyRecord, context: Mapping[str, str]) -> None:
    if context and key.key_spec != SYMMETRIC_DEFAULT:
        raise ValidationException("EncryptionContext is supported only with symmetric encryption KMS keys.")


def refuse_recipient(req: dict[str, Any]) -> None:
    """Nitro Enclaves attestation documents are not supported."""
    if req.get("Recipient"):
        raise UnsupportedOperationException("Recipient (Nitro Enclaves attestation) is not supported.")


def _seal(ctx: Context, key: KeyRecord, plaintext: bytes, context: Mapping[str, str],
          algorithm: str = SYMMETRIC_DEFAULT) -> bytes:
    current = key.current.version
    material = ctx.keystore.material(key, current)
    if material is None:
        raise NotFoundException(f"Key '{key.arn}' does not exist")
    if algorithm == SYMMETRIC_DEFAULT:
        return seal_kms_blob(material, key.key_id, current, plaintext, context)
    limit = keyspecs.RSA_OAEP_MAX_PLAINTEXT[(keyspecs.SPECS[key.key_spec].rsa_bits, algorithm)]
    if len(plaintext) > limit:
        raise ValidationException(f"Plaintext of {key.key_spec} with {algorithm} must be at most {limit} bytes.")
    return asymmetric.rsa_encrypt(material, algorithm, plaintext)


def _open(
    ctx: Context, blob_bytes: bytes, context: Mapping[str, str], key_ref: str | None, operation_name: str,
    permission: str, algorithm: str | None,
) -> tuple[KeyRecord, int, bytes, str]:
    """(key, material version, plaintext, algorithm) of a ciphertext, once the caller may decrypt it."""
    if key_ref:
        key = lookup_key(ctx, key_ref, operation=operation_name)
        if key.key_spec != SYMMETRIC_DEFAULT:  # raw RSA ciphertext: the request names key and algorithm
            return _open_asymmetric(ctx, key, blob_bytes, context, key_ref, operation_name, permission, algorithm)
    try:
        blob = parse_kms_blob(blob_bytes)
    except MalformedBlob:
        raise InvalidCiphertextException() from None
    if key_ref:
        if key.key_id != blob.key_id:
            raise IncorrectKeyException()
    else:  # the blob names the key; another account's key is found through the key index
        where = ctx.keystore.locate(blob.key_id)
        found = ctx.keystore.get_key(where[0], where[1], blob.key_id) if where and where[1] == ctx.region else None
        if found is None:
            raise InvalidCiphertextException()
        key = found
    authorize_key(ctx, key, operation_name, permission=permission, encryption_context=context,
                  conditions=_request_alias(key_ref))
    algorithm = _check_usage(key, algorithm)
    material = ctx.keystore.material(key, blob.material_version)
    if material is None:
        raise InvalidCiphertextException()
    try:
        return key, blob.material_version, open_kms_blob(material, blob, context), algorithm
    except crypto.DecryptionFailed:
        raise InvalidCiphertextException() from None


def _open_asymmetric(
    ctx: Context, key: KeyRecord, ciphertext: bytes, context: Mapping[str, str], key_ref: str,
    operation_name: str, permission: str, algorithm: str | None,
) -> tuple[KeyRecord, int, bytes, str]:
    authorize_key(ctx, key, operation_name, permission=permission,
                  conditions={**_request_alias(key_ref), "kms:EncryptionAlgorithm": algorithm or ""})
    algorithm = _check_usage(key, algorithm)
    _no_context_for_asymmetric(key, context)
    material = ctx.keystore.material(key, key.current.version)
    if material is None:
        raise InvalidCiphertextException()
    try:
        return key, key.current.version, asymmetric.rsa_decrypt(material, algorithm, ciphertext), algorithm
    except asymmetric.CryptoInputError:
        raise InvalidCiphertextException() from None


def _request_alias(key_ref: str | None) -> dict[str, str]:
    if key_ref and (key_ref.startswith("alias/") or ":alias/" in key_ref):
        return {"kms:RequestAlias": "alias/" + key_ref.split("alias/", 1)[1]}
    return {}


def _material_id(key: KeyRecord, version: int) -> str | None:
    return next((v.material_id for v in key.versions if v.version == version), None)


def dry_run(req: dict[str, Any]) -> None:
    """DryRunOperationException once every check has passed, when the request is a dry run."""
    if req.get("DryRun"):
        raise DryRunOperationException()


def _ciphertext_blob(ctx: Context, req: dict[str, Any], key_fields: tuple[str, ...], operation_name: str) -> bytes:
    """The CiphertextBlob: the model leaves it optional only for a DryRun with IGNORE_CIPHERTEXT.

    Such a dry run checks the keys ``key_fields`` name (all required then) and stops.
    """
    blob = req.get("CiphertextBlob")
    if blob is not None:
        return blob
    if req.get("DryRun") and "IGNORE_CIPHERTEXT" in req.get("DryRunModifiers", ()):
        if all(req.get(f) for f in key_fields):
            for f, permission in zip(key_fields, _PERMISSIONS[operation_name]):
                key = find_key(ctx, req[f], operation_name, permission=permission)
                if key.key_usage != keyspecs.ENCRYPT_DECRYPT:
                    _check_usage(key, None)
            raise DryRunOperationException()
        raise ValidationException(
            f"{' and '.join(key_fields)} must be specified when DryRunModifiers is IGNORE_CIPHERTEXT."
        )
    raise ValidationException(
        "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null"
    )


@operation("Encrypt")
def encrypt(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    context = req.get("EncryptionContext", {})
    _check_context(context)
    key = find_key(ctx, req["KeyId"], "Encrypt", encryption_context=context,
                   conditions={"kms:EncryptionAlgorithm": req.get("EncryptionAlgorithm", SYMMETRIC_DEFAULT)})
    algorithm = _check_usage(key, req.get("EncryptionAlgorithm"))
    _no_context_for_asymmetric(key, context)
    dry_run(req)
    return {
        "CiphertextBlob": _seal(ctx, key, req["Plaintext"], context, algorithm),
        "KeyId": key.arn,
        "EncryptionAlgorithm": algorithm,
    }


@operation("Decrypt")
def decrypt(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    refuse_recipient(req)
    context = req.get("EncryptionContext", {})
    _check_context(context)
    ciphertext = _ciphertext_blob(ctx, req, ("KeyId",), "Decrypt")
    key, version, plaintext, algorithm = _open(
        ctx, ciphertext, context, req.get("KeyId"), "Decrypt", "Decrypt", req.get("EncryptionAlgorithm"))
    dry_run(req)
    return {
        "KeyId": key.arn,
        "Plaintext": plaintext,
        "EncryptionAlgorithm": algorithm,
        "KeyMaterialId": _material_id(key, version),
    }


@operation("ReEncrypt")
def re_encrypt(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    destination_context = req.get("DestinationEncryptionContext", {})
    _check_context(destination_context)
    ciphertext = _ciphertext_blob(ctx, req, ("SourceKeyId", "DestinationKeyId"), "ReEncrypt")
    destination = lookup_key(ctx, req["DestinationKeyId"], operation="ReEncrypt")
    source, version, plaintext, source_algorithm = _open(
        ctx, ciphertext, req.get("SourceEncryptionContext", {}), req.get("SourceKeyId"), "ReEncrypt", "ReEncryptFrom",
        req.get("SourceEncryptionAlgorithm"),
    )
    authorize_key(ctx, destination, "ReEncrypt", permission="ReEncryptTo", encryption_context=destination_context,
                  conditions={"kms:ReEncryptOnSameKey": source.key_id == destination.key_id,
                              **_request_alias(req["DestinationKeyId"])})
    algorithm = _check_usage(destination, req.get("DestinationEncryptionAlgorithm"))
    _no_context_for_asymmetric(destination, destination_context)
    dry_run(req)
    return {
        "CiphertextBlob": _seal(ctx, destination, plaintext, destination_context, algorithm),
        "SourceKeyId": source.arn,
        "KeyId": destination.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": algorithm,
        "SourceKeyMaterialId": _material_id(source, version),
        "DestinationKeyMaterialId": destination.current.material_id,
    }


def _data_key_length(req: dict[str, Any]) -> int:
    number, spec = req.get("NumberOfBytes"), req.get("KeySpec")
    if (number is None) == (spec is None):
        raise ValidationException("Please specify either number of bytes or key spec.")
    return number if number is not None else limits.DATA_KEY_SPEC_BYTES[spec]


def _generate_data_key(ctx: Context, req: dict[str, Any], operation_name: str) -> dict[str, Any]:
    refuse_recipient(req)
    length = _data_key_length(req)
    context = req.get("EncryptionContext", {})
    _check_context(context)
    key = find_key(ctx, req["KeyId"], operation_name, encryption_context=context)
    _check_usage(key, None, symmetric_only=True)
    dry_run(req)
    data_key = crypto.random_bytes(length)
    return {
        "CiphertextBlob": _seal(ctx, key, data_key, context),
        "Plaintext": data_key,
        "KeyId": key.arn,
        "KeyMaterialId": key.current.material_id,
    }


@operation("GenerateDataKey")
def generate_data_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    return _generate_data_key(ctx, req, "GenerateDataKey")


@operation("GenerateDataKeyWithoutPlaintext")
def generate_data_key_without_plaintext(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    reply = _generate_data_key(ctx, req, "GenerateDataKeyWithoutPlaintext")
    del reply["Plaintext"]
    return reply


@operation("GenerateRandom")
def generate_random(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    ctx.authz.check(ctx, "GenerateRandom")
    refuse_recipient(req)
    if req.get("CustomKeyStoreId"):
        raise CustomKeyStoreNotFoundException()
    number = req.get("NumberOfBytes")
    if number is None:
        raise ValidationException("1 validation error detected: Value null at 'numberOfBytes' failed to satisfy constraint: Member must not be null")
    return {"Plaintext": crypto.random_bytes(number)}
