"""Byte formats: KMS ciphertext blobs and barrier-encrypted storage records.

Both are versioned by a leading format byte, fixed-size headers, and bounded
parsing: a parse either returns a fully-checked value or raises
:class:`MalformedBlob`, which callers turn into one opaque error.

KMS ciphertext blob, format 1 (docs/ciphertext-format.md has vectors)::

    offset  size  field
    0       1     format = 0x01
    1       16    KMS key id (the UUID's 16 bytes)
    17      4     material version (uint32, big-endian)
    21      16    salt: message key = HKDF-SHA256(material, salt, "keyhive/kms/v1")
    37      12    AES-GCM nonce
    49      n+16  AES-256-GCM ciphertext || tag
    associated data = bytes 0..49 || canonical(encryption context)

Barrier record, format 1::

    0       1     format = 0x01
    1       4     barrier key term (uint32, big-endian; 0 = sealed by the root key)
    5       12    AES-GCM nonce
    17      n+16  AES-256-GCM ciphertext || tag
    associated data = bytes 0..17 || the record's storage path (UTF-8)
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Mapping

from keyhive import crypto, limits
from keyhive.crypto import NONCE_BYTES, SALT_BYTES, TAG_BYTES

KMS_BLOB_FORMAT = 1
KMS_HEADER = struct.Struct(">B16sI16s12s")  # format, key id, version, salt, nonce
KMS_MESSAGE_KEY_INFO = b"keyhive/kms/v1"

RECORD_FORMAT = 1
RECORD_HEADER = struct.Struct(">BI12s")  # format, term, nonce

_U32 = struct.Struct(">I")


class MalformedBlob(ValueError):
    """The bytes are not a well-formed blob. Says nothing about which check failed."""

    def __init__(self) -> None:
        super().__init__("malformed blob")


@dataclass(frozen=True, slots=True)
class KmsBlob:
    key_id: str
    material_version: int
    salt: bytes
    nonce: bytes
    sealed: bytes  # ciphertext || tag

    @property
    def header(self) -> bytes:
        return KMS_HEADER.pack(
            KMS_BLOB_FORMAT, uuid.UUID(self.key_id).bytes, self.material_version, self.salt, self.nonce
        )

    def to_bytes(self) -> bytes:
        return self.header + self.sealed


def parse_kms_blob(data: bytes) -> KmsBlob:
    if not KMS_HEADER.size + TAG_BYTES <= len(data) <= limits.MAX_CIPHERTEXT_BLOB_BYTES:
        raise MalformedBlob()
    fmt, key_bytes, version, salt, nonce = KMS_HEADER.unpack_from(data)
    if fmt != KMS_BLOB_FORMAT or version == 0:
        raise MalformedBlob()
    return KmsBlob(str(uuid.UUID(bytes=key_bytes)), version, salt, nonce, data[KMS_HEADER.size :])


def encode_context(context: Mapping[str, str]) -> bytes:
    """Canonical, unambiguous bytes for an encryption context.

    count, then each pair sorted by key bytes as (len, key, len, value), all
    lengths uint32 big-endian: ``{"ab": "c"}`` and ``{"a": "bc"}`` differ.
    """
    pairs = sorted((k.encode(), v.encode()) for k, v in context.items())
    out = [_U32.pack(len(pairs))]
    for k, v in pairs:
        out += (_U32.pack(len(k)), k, _U32.pack(len(v)), v)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Record:
    term: int
    nonce: bytes
    sealed: bytes

    @property
    def header(self) -> bytes:
        return RECORD_HEADER.pack(RECORD_FORMAT, self.term, self.nonce)

    def to_bytes(self) -> bytes:
        return self.header + self.sealed


def parse_record(data: bytes) -> Record:
    if len(data) < RECORD_HEADER.size + TAG_BYTES:
        raise MalformedBlob()
    fmt, term, nonce = RECORD_HEADER.unpack_from(data)
    if fmt != RECORD_FORMAT:
        raise MalformedBlob()
    return Record(term, nonce, data[RECORD_HEADER.size :])


assert KMS_HEADER.size == 1 + 16 + 4 + SALT_BYTES + NONCE_BYTES == 49


def seal_kms_blob(
    material: bytes, key_id: str, version: int, plaintext: bytes, context: Mapping[str, str]
) -> bytes:
    """A format-1 ciphertext blob of ``plaintext`` under one material version."""
    return seal_kms_blob_from_parts(
        material, key_id, version, plaintext, context,
        salt=crypto.random_bytes(SALT_BYTES), nonce=crypto.random_bytes(NONCE_BYTES),
    )


def seal_kms_blob_from_parts(
    material: bytes, key_id: str, version: int, plaintext: bytes, context: Mapping[str, str],
    *, salt: bytes, nonce: bytes,
) -> bytes:
    header = KmsBlob(key_id, version, salt, nonce, b"").header
    message_key = crypto.derive_message_key(material, salt, KMS_MESSAGE_KEY_INFO)
    return header + crypto.seal_from_parts(message_key, nonce, plaintext, header + encode_context(context))


def open_kms_blob(material: bytes, blob: KmsBlob, context: Mapping[str, str]) -> bytes:
    """The plaintext, or crypto.DecryptionFailed for any mismatch (wrong context included)."""
    message_key = crypto.derive_message_key(material, blob.salt, KMS_MESSAGE_KEY_INFO)
    return crypto.open_sealed(message_key, blob.nonce, blob.sealed, blob.header + encode_context(context))
