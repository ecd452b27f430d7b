"""The AWS Encryption SDK's materials managers, feeding Keyhive's own message code.

The SDK keeps doing what it does well: KMS master key providers (strict or discovery),
data key caching (CachingCryptoMaterialsManager), the signing key pair of the signed
suite and its public key in the encryption context ("aws-crypto-public-key"). Its
materials are checked here and turned into plain values for _encrypt and _decrypt.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.materials_managers import DecryptionMaterialsRequest, EncryptionMaterialsRequest
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.structures import EncryptedDataKey, MasterKeyInfo

from keyhive.envelope import _format as fmt
from keyhive.envelope._encrypt import WriteMaterials
from keyhive.envelope._errors import BadMaterials

POLICY = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
SIGNED = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
UNSIGNED = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY


def for_encryption(manager: CryptoMaterialsManager, context: Mapping[str, str], *, signed: bool, frame_length: int,
                   size: int | None, max_data_keys: int) -> WriteMaterials:
    """A data key (fresh, or from the cache when ``size`` is known) and its encrypted copies."""
    algorithm = SIGNED if signed else UNSIGNED
    materials = manager.get_encryption_materials(EncryptionMaterialsRequest(
        encryption_context=dict(context), frame_length=frame_length, algorithm=algorithm,
        plaintext_length=size, commitment_policy=POLICY))
    data_key = materials.data_encryption_key.data_key
    if (materials.algorithm is not algorithm or len(data_key) != fmt.DATA_KEY_LENGTH
            or not 1 <= len(materials.encrypted_data_keys) <= max_data_keys
            or (materials.signing_key is not None) != signed):
        raise BadMaterials
    entries = sorted((fmt.DataKeyEntry(edk.key_provider.provider_id, bytes(edk.key_provider.key_info),
                                       edk.encrypted_data_key) for edk in materials.encrypted_data_keys),
                     key=lambda e: (e.provider_id, e.provider_info, e.ciphertext))
    return WriteMaterials(algorithm.algorithm_id, data_key, tuple(entries), dict(materials.encryption_context),
                          materials.signing_key)


def for_decryption(manager: CryptoMaterialsManager, header: fmt.Header) -> tuple[bytes, bytes | None]:
    """(the message's data key, its signature verification key (DER) for the signed suite)."""
    request = DecryptionMaterialsRequest(
        algorithm=Algorithm.get_by_id(header.suite_id),
        encrypted_data_keys={EncryptedDataKey(key_provider=MasterKeyInfo(provider_id=e.provider_id,
                                                                         key_info=e.provider_info),
                                              encrypted_data_key=e.ciphertext) for e in header.data_keys},
        encryption_context=dict(header.context),
        commitment_policy=POLICY)
    materials = manager.decrypt_materials(request)
    return materials.data_key.data_key, materials.verification_key
