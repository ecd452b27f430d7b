"""Bring your own key: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial.

GetParametersForImport makes a fresh RSA wrapping key pair for one KMS key; its
private half stays under the barrier, the public half goes to the caller with an
import token valid 24 hours.  The token names the key and that pair; it works
once, for that key, and a newer GetParametersForImport replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

from keyhive import keyspecs
from keyhive.crypto import asymmetric
from keyhive.errors import (
    ExpiredImportTokenException,
    IncorrectKeyMaterialException,
    InvalidCiphertextException,
    InvalidImportTokenException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from keyhive.keystore import KeyRecord, MaterialVersion
from keyhive.service.context import Context
from keyhive.service.registry import operation
from keyhive.service.resolve import lookup_key

IMPORT_TOKEN_LIFETIME = 24 * 3600  # "The public key and import token ... are valid for 24 hours"
MAX_VALID_TO_DAYS = 365  # ValidTo: "The maximum value is 365 days from the request date"
_TOKEN_MAGIC = b"KHIT\x01"
_WRAPPING_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
# SM2PKE: no SM2 here.  RSAES_PKCS1_V1_5: AWS stopped accepting it in October 2023, and with
# OpenSSL's implicit rejection a corrupted blob decrypts to random "material" instead of failing.
_REFUSED_WRAPPINGS = frozenset({"SM2PKE", "RSAES_PKCS1_V1_5"})


def _external_key(ctx: Context, req: dict[str, Any], operation_name: str) -> KeyRecord:
    """The key, if it takes imported material; imports are refused for AWS_KMS keys, as on AWS."""
    key = lookup_key(ctx, req["KeyId"], allow_alias=False, operation=operation_name)
    ctx.keys_used.append((key.account, key.arn))
    ctx.authz.check(ctx, operation_name, key)
    if key.origin != "EXTERNAL":
        raise UnsupportedOperationException(f"{key.arn} origin is {key.origin} which is not valid for this operation.")
    if key.state == "PendingDeletion" and operation_name != "DeleteImportedKeyMaterial":
        raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
    return key


@operation("GetParametersForImport")
def get_parameters_for_import(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _external_key(ctx, req, "GetParametersForImport")
    algorithm, wrapping_spec = req["WrappingAlgorithm"], req["WrappingKeySpec"]
    if wrapping_spec not in _WRAPPING_BITS or algorithm in _REFUSED_WRAPPINGS:
        raise UnsupportedOperationException(f"{wrapping_spec} / {algorithm} wrapping is not supported by this Keyhive server.")
    # "To import an RSA private key, you must use an RSA_AES wrapping algorithm"; RSAES_OAEP
    # wraps every other kind of material, ECC and Ed25519 private keys included.
    if keyspecs.SPECS[key.key_spec].rsa_bits and not algorithm.startswith("RSA_AES_KEY_WRAP"):
        raise ValidationException(f"{key.key_spec} key material must be wrapped with RSA_AES_KEY_WRAP_SHA_1 or _SHA_256.")
    wrapping = asymmetric.generate(wrapping_spec, rsa_bits=_WRAPPING_BITS[wrapping_spec])
    token_id = os.urandom(16)
    valid_to = ctx.now + IMPORT_TOKEN_LIFETIME
    ctx.keystore.put_import(key, json.dumps({
        "token": token_id.hex(), "algorithm": algorithm, "valid_to": valid_to, "wrapping_key": wrapping.hex(),
    }).encode())
    return {
        "KeyId": key.arn,
        "ImportToken": _TOKEN_MAGIC + token_id + uuid.UUID(key.key_id).bytes,
        "PublicKey": asymmetric.public_key(wrapping),
        "ParametersValidTo": valid_to,
    }


def _parameters(ctx: Context, key: KeyRecord, token: bytes) -> dict[str, Any]:
    if len(token) != len(_TOKEN_MAGIC) + 32 or not token.startswith(_TOKEN_MAGIC):
        raise InvalidImportTokenException("The import token is not valid.")
    token_id, key_bytes = token[len(_TOKEN_MAGIC):][:16], token[-16:]
    stored = ctx.keystore.get_import(key)
    parameters = json.loads(stored) if stored else None
    if key_bytes != uuid.UUID(key.key_id).bytes or parameters is None or parameters["token"] != token_id.hex():
        raise InvalidImportTokenException("The import token is not valid for this KMS key.")
    if parameters["valid_to"] <= ctx.now:
        raise ExpiredImportTokenException("The import token has expired.")
    return parameters


def _check_material(key: KeyRecord, material: bytes) -> None:
    spec = keyspecs.SPECS[key.key_spec]
    if spec.symmetric:
        ok = len(material) == 32
    elif spec.hmac_bytes:
        ok = spec.hmac_bytes <= len(material) <= 64
    else:
        ok = asymmetric.matches_spec(material, rsa_bits=spec.rsa_bits, curve=spec.curve)
    if not ok:
        raise IncorrectKeyMaterialException(f"The key material is not valid for a {key.key_spec} key.")


def _expiry(ctx: Context, req: dict[str, Any]) -> tuple[str, float | None]:
    model = req.get("ExpirationModel", "KEY_MATERIAL_EXPIRES")
    valid_to = req.get("ValidTo")
    if model == "KEY_MATERIAL_DOES_NOT_EXPIRE":
        if valid_to is not None:
            raise ValidationException("ValidTo is not valid when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.")
        return model, None
    if valid_to is None:
        raise ValidationException("ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.")
    if not ctx.now < valid_to <= ctx.now + MAX_VALID_TO_DAYS * 86400:
        raise ValidationException(f"ValidTo must be in the future and at most {MAX_VALID_TO_DAYS} days away.")
    return model, valid_to


@operation("ImportKeyMaterial")
def import_key_material(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _external_key(ctx, req, "ImportKeyMaterial")
    parameters = _parameters(ctx, key, req["ImportToken"])
    model, valid_to = _expiry(ctx, req)
    try:
        material = asymmetric.unwrap_import(bytes.fromhex(parameters["wrapping_key"]), parameters["algorithm"],
                                            req["EncryptedKeyMaterial"])
    except asymmetric.CryptoInputError:
        raise InvalidCiphertextException() from None
    _check_material(key, material)
    digest = hashlib.sha256(material).hexdigest()
    if key.material_digest is not None and key.material_digest != digest:
        raise IncorrectKeyMaterialException("Key material differs from the material imported into this key before.")
    material_id = hashlib.sha256(key.key_id.encode() + material).hexdigest()
    if req.get("KeyMaterialId") not in (None, material_id):
        raise IncorrectKeyMaterialException("KeyMaterialId does not identify this key material.")
    key.material_digest, key.expiration_model, key.valid_to = digest, model, valid_to
    if key.state == "PendingImport":
        key.state = "Enabled"
    ctx.keystore.import_material(key, material, MaterialVersion(1, material_id, ctx.now, None))
    return {"KeyId": key.arn, "KeyMaterialId": material_id}


@operation("DeleteImportedKeyMaterial")
def delete_imported_key_material(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = _external_key(ctx, req, "DeleteImportedKeyMaterial")
    material_id = key.current.material_id if key.versions else None
    if req.get("KeyMaterialId") not in (None, material_id):
        raise ValidationException("KeyMaterialId does not identify this key's material.")
    if key.versions:  # in PendingImport this succeeds with no effect, as on AWS
        ctx.keystore.drop_material(key)
    return {"KeyId": key.arn, "KeyMaterialId": material_id}
