"""The AWS Encryption SDK message format, version 2, for the two key-committing suites: pure bytes.

Sources: the AWS Encryption SDK developer guide, "Message format reference", "Body
additional authenticated data (AAD) reference" and "Algorithms reference". Integers are
unsigned and big-endian::

    header   version 0x02 | suite id u16 | message id (32) | context length u16 | context
             | data key count u16 | data keys | content type u8 | frame length u32 | commitment (32)
    auth     AES-GCM tag (16) over the header bytes: IV of 12 zero bytes, no plaintext
    frame    sequence number u32 | IV (12) | ciphertext (frame length) | tag (16)
    final    0xFFFFFFFF | sequence number u32 | IV (12) | length u32 | ciphertext (length) | tag (16)
    footer   signed suite only: length u16 | DER ECDSA P-384 signature of everything before it

    context    empty: nothing; else pair count u16, then (length u16 | key | length u16 | value),
               UTF-8, sorted by key
    data key   length u16 | provider id | length u16 | provider info | length u16 | encrypted key
    frame IV   8 zero bytes | sequence number u32
    frame AAD  message id | "AWSKMSEncryptionClient Frame" (or "... Final Frame") | sequence number u32
               | plaintext length u64

Content type 0x02 is framed. Type 0x01 (one block, no frames) is read for compatibility
and never written: IV (12) | length u64 | ciphertext | tag (16), AAD string
"AWSKMSEncryptionClient Single Block", sequence number 1.

Parsing is bounded: every length is a u16 except the frame length, which the reader caps.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from keyhive.envelope._errors import FieldTooLong, MessageCorrupt, NotCommitting, ReaderLimitExceeded

VERSION = 2

# Algorithm suite ids (Algorithms reference). Both derive the AES-256-GCM key with
# HKDF-SHA512 and commit to the data key; the second also signs with ECDSA P-384.
SUITE_COMMIT_KEY = 0x0478  # AES_256_GCM_HKDF_SHA512_COMMIT_KEY
SUITE_COMMIT_KEY_ECDSA_P384 = 0x0578  # AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
COMMITTING_SUITES = frozenset({SUITE_COMMIT_KEY, SUITE_COMMIT_KEY_ECDSA_P384})
# Suites that exist but do not commit to their data key: refused on read.
NON_COMMITTING_SUITES = frozenset({0x0014, 0x0046, 0x0078, 0x0114, 0x0146, 0x0178, 0x0214, 0x0346, 0x0378})

CONTENT_SINGLE_BLOCK = 0x01
CONTENT_FRAMED = 0x02

MESSAGE_ID_LENGTH = 32
COMMITMENT_LENGTH = 32
DATA_KEY_LENGTH = 32  # AES-256
IV_LENGTH = 12
TAG_LENGTH = 16
FINAL_FRAME_MARKER = 0xFFFFFFFF
MAX_SEQUENCE_NUMBER = 0xFFFFFFFF  # sequence numbers are u32 and start at 1
MAX_FIELD = 0xFFFF  # every length-prefixed header field is at most u16

FRAME_AAD = b"AWSKMSEncryptionClient Frame"
FINAL_FRAME_AAD = b"AWSKMSEncryptionClient Final Frame"
SINGLE_BLOCK_AAD = b"AWSKMSEncryptionClient Single Block"

# Bytes before a regular frame's ciphertext, and before a final frame's.
FRAME_PREFIX = 4 + IV_LENGTH
FINAL_FRAME_PREFIX = 4 + 4 + IV_LENGTH + 4

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_AAD_TAIL = struct.Struct(">IQ")
_FRAME_HEAD = struct.Struct(">I8xI")  # sequence number, then the IV: 8 zero bytes and the sequence number
_FINAL_HEAD = struct.Struct(">II8xII")  # marker, sequence number, IV, length


@dataclass(frozen=True)
class DataKeyEntry:
    """One encrypted data key as the header stores it."""

    provider_id: str
    provider_info: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Header:
    suite_id: int
    message_id: bytes
    context: Mapping[str, str]
    data_keys: tuple[DataKeyEntry, ...]
    frame_length: int
    commitment: bytes
    framed: bool = True

    @property
    def signed(self) -> bool:
        return self.suite_id == SUITE_COMMIT_KEY_ECDSA_P384


# -- writing ----------------------------------------------------------------------------------
def encode_header(header: Header) -> bytes:
    """The header's bytes (without its authentication tag)."""
    context = encode_context(header.context)
    parts = [struct.pack(">BH", VERSION, header.suite_id), header.message_id, _field(context),
             _U16.pack(len(header.data_keys))]
    for entry in header.data_keys:
        parts += [_field(entry.provider_id.encode()), _field(entry.provider_info), _field(entry.ciphertext)]
    parts += [struct.pack(">BI", CONTENT_FRAMED if header.framed else CONTENT_SINGLE_BLOCK, header.frame_length),
              header.commitment]
    return b"".join(parts)


def encode_context(context: Mapping[str, str]) -> bytes:
    """The canonical serialization: sorted by key (UTF-8 order is code point order)."""
    if not context:
        return b""
    pairs = sorted((k.encode(), v.encode()) for k, v in context.items())
    return _U16.pack(len(pairs)) + b"".join(_field(k) + _field(v) for k, v in pairs)


def _field(value: bytes) -> bytes:
    if len(value) > MAX_FIELD:
        raise FieldTooLong
    return _U16.pack(len(value)) + value


def frame_head(sequence_number: int) -> bytes:
    return _FRAME_HEAD.pack(sequence_number, sequence_number)


def final_frame_head(sequence_number: int, length: int) -> bytes:
    return _FINAL_HEAD.pack(FINAL_FRAME_MARKER, sequence_number, sequence_number, length)


def frame_iv(sequence_number: int) -> bytes:
    return bytes(8) + _U32.pack(sequence_number)


def frame_aad(prefix: bytes, sequence_number: int, length: int) -> bytes:
    """``prefix`` is the message id followed by the frame kind's string."""
    return prefix + _AAD_TAIL.pack(sequence_number, length)


def signature_field(signature: bytes) -> bytes:
    return _U16.pack(len(signature)) + signature


# -- reading ----------------------------------------------------------------------------------
Take = Callable[[int], "bytes | memoryview"]  # exactly n bytes, or MessageCorrupt at the end of the input


def read_header(take: Take, *, max_data_keys: int, max_frame_length: int) -> tuple[Header, bytes]:
    """Parse a header from ``take``; return it with its exact bytes (what its tag authenticates).

    Refuses (MessageCorrupt) anything malformed; (NotCommitting) a suite without key
    commitment; (ReaderLimitExceeded) more than ``max_data_keys`` data keys or frames over
    ``max_frame_length``, before any data key is used.
    """
    raw = bytearray()

    def grab(n: int) -> bytes:
        data = bytes(take(n))
        raw.extend(data)
        return data

    def u16() -> int:
        return int(_U16.unpack(grab(2))[0])

    version = grab(1)[0]
    if version == 1:  # every version-1 suite predates key commitment
        grab(1)  # message type
        suite_id = u16()
        raise NotCommitting if suite_id in NON_COMMITTING_SUITES else MessageCorrupt
    if version != VERSION:
        raise MessageCorrupt
    suite_id = u16()
    if suite_id in NON_COMMITTING_SUITES:
        raise NotCommitting
    if suite_id not in COMMITTING_SUITES:
        raise MessageCorrupt
    message_id = grab(MESSAGE_ID_LENGTH)
    context = decode_context(grab(u16()))
    count = u16()
    if count > max_data_keys:
        raise ReaderLimitExceeded
    if count == 0:
        raise MessageCorrupt
    data_keys = tuple(DataKeyEntry(_text(grab(u16())), grab(u16()), grab(u16())) for _ in range(count))
    content_type = grab(1)[0]
    (frame_length,) = _U32.unpack(grab(4))
    if content_type == CONTENT_FRAMED:
        if frame_length == 0:
            raise MessageCorrupt
        if frame_length > max_frame_length:
            raise ReaderLimitExceeded
    elif content_type != CONTENT_SINGLE_BLOCK or frame_length != 0:
        raise MessageCorrupt
    commitment = grab(COMMITMENT_LENGTH)
    header = Header(suite_id, message_id, context, data_keys, frame_length, commitment,
                    framed=content_type == CONTENT_FRAMED)
    return header, bytes(raw)


def decode_context(data: bytes) -> dict[str, str]:
    if not data:
        return {}
    view, at = memoryview(data), 2
    if len(data) < 2:
        raise MessageCorrupt
    (count,) = _U16.unpack_from(view)
    context: dict[str, str] = {}
    for _ in range(count):
        key, at = _sized(view, at)
        value, at = _sized(view, at)
        if key in context:
            raise MessageCorrupt
        context[key] = value
    if at != len(data):
        raise MessageCorrupt
    return context


def _sized(view: memoryview, at: int) -> tuple[str, int]:
    if at + 2 > len(view):
        raise MessageCorrupt
    (length,) = _U16.unpack_from(view, at)
    end = at + 2 + length
    if end > len(view):
        raise MessageCorrupt
    return _text(view[at + 2: end]), end


def _text(data: bytes | memoryview) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise MessageCorrupt from None


def u16(data: bytes | memoryview) -> int:
    return int(_U16.unpack(data)[0])


def u32(data: bytes | memoryview) -> int:
    return int(_U32.unpack(data)[0])


def final_frame_fields(data: bytes | memoryview) -> tuple[int, bytes, int]:
    """(sequence number, IV, length) from the 20 bytes after a final frame's marker."""
    sequence_number, iv, length = struct.unpack(">I12sI", data)
    return int(sequence_number), bytes(iv), int(length)


def single_block_fields(data: bytes | memoryview) -> tuple[bytes, int]:
    """(IV, length) of a single-block (unframed) body."""
    iv, length = struct.unpack(">12sQ", data)
    return bytes(iv), int(length)
