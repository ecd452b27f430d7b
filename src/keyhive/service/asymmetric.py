"""Asymmetric, HMAC and key-agreement operations.

Sign, Verify, GetPublicKey, GenerateMac, VerifyMac, DeriveSharedSecret,
GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.  A signature or MAC
that does not verify is an error (KMSInvalidSignatureException,
KMSInvalidMacException), never ``SignatureValid: false``, as AWS does.
"""

from __future__ import annotations

from typing import Any

from keyhive import keyspecs
from keyhive.blob import seal_kms_blob
from keyhive.crypto import asymmetric
from keyhive.errors import (
    InvalidKeyUsageException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    UnsupportedOperationException,
    ValidationException,
)
from keyhive.keystore import KeyRecord
from keyhive.service.context import Context
from keyhive.service.cryptoops import dry_run, refuse_recipient
from keyhive.service.keys import algorithm_lists
from keyhive.service.registry import operation
from keyhive.service.resolve import find_key


def _material(ctx: Context, key: KeyRecord) -> bytes:
    material = ctx.keystore.material(key, key.current.version)
    assert material is not None, "a key's current material exists while the key does"
    return material


def _algorithm(key: KeyRecord, usage: str, algorithm: str) -> str:
    if key.key_usage != usage:
        raise InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage} which is not valid for this operation.")
    if algorithm not in keyspecs.SPECS[key.key_spec].algorithms(usage):
        raise InvalidKeyUsageException(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
    return algorithm


def _signing_input(req: dict[str, Any], algorithm: str) -> tuple[bytes, str]:
    message, message_type = req["Message"], req.get("MessageType", "RAW")
    if message_type == "RAW" and len(message) > keyspecs.MAX_SIGN_MESSAGE_BYTES:
        raise ValidationException(f"Message must be at most {keyspecs.MAX_SIGN_MESSAGE_BYTES} bytes when MessageType is RAW.")
    if message_type == "EXTERNAL_MU" and algorithm != "ML_DSA_SHAKE_256":
        raise ValidationException("MessageType EXTERNAL_MU is valid only with ML_DSA_SHAKE_256.")
    if message_type == "DIGEST" and algorithm in ("ED25519_SHA_512", "ML_DSA_SHAKE_256"):
        raise ValidationException(f"MessageType DIGEST is not valid with {algorithm}.")
    if message_type != "DIGEST" and algorithm == "ED25519_PH_SHA_512":  # Sign: "requires KMS MessageType:DIGEST"
        raise ValidationException("ED25519_PH_SHA_512 requires MessageType DIGEST.")
    if message_type in ("DIGEST", "EXTERNAL_MU") and len(message) != keyspecs.DIGEST_BYTES[algorithm]:
        raise ValidationException(
            f"Digest is invalid length for algorithm {algorithm}: expected {keyspecs.DIGEST_BYTES[algorithm]} bytes."
        )
    if algorithm == "ED25519_PH_SHA_512":
        raise UnsupportedOperationException("ED25519_PH_SHA_512 (Ed25519ph) is not supported by this Keyhive server.")
    return message, message_type


@operation("Sign")
def sign(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "Sign", conditions={
        "kms:SigningAlgorithm": req["SigningAlgorithm"], "kms:MessageType": req.get("MessageType", "RAW")})
    algorithm = _algorithm(key, keyspecs.SIGN_VERIFY, req["SigningAlgorithm"])
    message, message_type = _signing_input(req, algorithm)
    dry_run(req)
    return {"KeyId": key.arn, "Signature": asymmetric.sign(_material(ctx, key), algorithm, message, message_type),
            "SigningAlgorithm": algorithm}


@operation("Verify")
def verify(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "Verify", conditions={
        "kms:SigningAlgorithm": req["SigningAlgorithm"], "kms:MessageType": req.get("MessageType", "RAW")})
    algorithm = _algorithm(key, keyspecs.SIGN_VERIFY, req["SigningAlgorithm"])
    message, message_type = _signing_input(req, algorithm)
    dry_run(req)
    if not asymmetric.verify(_material(ctx, key), algorithm, message, message_type, req["Signature"]):
        raise KMSInvalidSignatureException()
    return {"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


@operation("GetPublicKey")
def get_public_key(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "GetPublicKey")
    spec = keyspecs.SPECS[key.key_spec]
    if spec.symmetric or spec.hmac_bytes:
        raise UnsupportedOperationException(f"{key.arn} key spec {key.key_spec} has no public key.")
    return {
        "KeyId": key.arn,
        "PublicKey": asymmetric.public_key(_material(ctx, key)),
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "KeyUsage": key.key_usage,
        **algorithm_lists(key),
    }


@operation("GenerateMac")
def generate_mac(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "GenerateMac", conditions={"kms:MacAlgorithm": req["MacAlgorithm"]})
    algorithm = _algorithm(key, keyspecs.GENERATE_VERIFY_MAC, req["MacAlgorithm"])
    dry_run(req)
    return {"Mac": asymmetric.mac(_material(ctx, key), algorithm, req["Message"]), "MacAlgorithm": algorithm,
            "KeyId": key.arn}


@operation("VerifyMac")
def verify_mac(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    key = find_key(ctx, req["KeyId"], "VerifyMac", conditions={"kms:MacAlgorithm": req["MacAlgorithm"]})
    algorithm = _algorithm(key, keyspecs.GENERATE_VERIFY_MAC, req["MacAlgorithm"])
    dry_run(req)
    if not asymmetric.mac_valid(_material(ctx, key), algorithm, req["Message"], req["Mac"]):
        raise KMSInvalidMacException()
    return {"KeyId": key.arn, "MacValid": True, "MacAlgorithm": algorithm}


@operation("DeriveSharedSecret")
def derive_shared_secret(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    refuse_recipient(req)
    key = find_key(ctx, req["KeyId"], "DeriveSharedSecret",
                   conditions={"kms:KeyAgreementAlgorithm": req["KeyAgreementAlgorithm"]})
    algorithm = _algorithm(key, keyspecs.KEY_AGREEMENT, req["KeyAgreementAlgorithm"])
    dry_run(req)
    try:
        secret = asymmetric.ecdh(_material(ctx, key), req["PublicKey"])
    except asymmetric.CryptoInputError:
        raise ValidationException("PublicKey is not a valid DER SubjectPublicKeyInfo on the key's curve.") from None
    return {"KeyId": key.arn, "SharedSecret": secret, "KeyAgreementAlgorithm": algorithm, "KeyOrigin": key.origin}


def _data_key_pair(ctx: Context, req: dict[str, Any], operation_name: str) -> dict[str, Any]:
    refuse_recipient(req)
    pair_spec = keyspecs.SPECS.get(req["KeyPairSpec"])
    if pair_spec is None or not pair_spec.pair_for_data_keys:
        raise UnsupportedOperationException(f"KeyPairSpec {req['KeyPairSpec']} is not supported by this Keyhive server.")
    context = req.get("EncryptionContext", {})
    key = find_key(ctx, req["KeyId"], operation_name, encryption_context=context,
                   conditions={"kms:DataKeyPairSpec": pair_spec.name})
    if key.key_spec != "SYMMETRIC_DEFAULT" or key.key_usage != keyspecs.ENCRYPT_DECRYPT:
        raise InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage} which is not valid for this operation.")
    dry_run(req)
    private = asymmetric.generate(pair_spec.name, rsa_bits=pair_spec.rsa_bits, curve=pair_spec.curve)
    version = key.current.version
    material = ctx.keystore.material(key, version)
    assert material is not None
    return {
        "PrivateKeyCiphertextBlob": seal_kms_blob(material, key.key_id, version, private, context),
        "PrivateKeyPlaintext": private,
        "PublicKey": asymmetric.public_key(private),
        "KeyId": key.arn,
        "KeyPairSpec": pair_spec.name,
        "KeyMaterialId": key.current.material_id,
    }


@operation("GenerateDataKeyPair")
def generate_data_key_pair(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    return _data_key_pair(ctx, req, "GenerateDataKeyPair")


@operation("GenerateDataKeyPairWithoutPlaintext")
def generate_data_key_pair_without_plaintext(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    reply = _data_key_pair(ctx, req, "GenerateDataKeyPairWithoutPlaintext")
    del reply["PrivateKeyPlaintext"]
    return reply
