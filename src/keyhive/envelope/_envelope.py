"""Envelope: encrypt and decrypt bytes and streams under KMS keys, in the AWS Encryption SDK's format."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import botocore.session
from aws_encryption_sdk import CachingCryptoMaterialsManager, LocalCryptoMaterialsCache
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager

from keyhive.envelope import _kms, _materials
from keyhive.envelope._decrypt import MessageReader
from keyhive.envelope._encrypt import write_message
from keyhive.envelope._errors import EnvelopeError, translated
from keyhive.envelope._pipeline import Readable, Writable

# Plaintext bytes per frame of the messages Keyhive writes. Each frame is authenticated
# on its own, so streaming memory is a few frames. At 1 MiB the per-frame cost of Python
# vanishes (1024 frames per GiB), and it is a quarter of the largest frame Keyhive reads;
# the AWS Encryption SDKs read any frame length unless given a limit, and write 4 KiB
# frames unless told otherwise (docs/envelope.md).
FRAME_LENGTH = 1024 * 1024

# The largest frame a message may declare for us to read it: the decryptor holds one
# frame in memory before releasing it, so this bounds memory against a hostile header.
# The AWS Encryption SDKs and their CLI write 4 KiB frames unless told otherwise.
MAX_FRAME_LENGTH = 4 * 1024 * 1024

# Encrypted data keys per message, written or read: each one read may cost a KMS call,
# so a hostile message with thousands would turn one decrypt into thousands of calls
# (AWS Encryption SDK developer guide, "Limiting encrypted data keys").
MAX_ENCRYPTED_DATA_KEYS = 16

# Encryption context keys the SDK reserves for itself ("aws-crypto-public-key" holds a
# signed message's verification key).
RESERVED_CONTEXT_PREFIX = "aws-crypto-"

# Beyond these the SDK refuses to cache (aws_encryption_sdk.internal.defaults).
MAX_MESSAGES_PER_DATA_KEY = 2**32
MAX_BYTES_PER_DATA_KEY = 2**63 - 1

# Materials managers kept per Envelope: one for encryption, one per distinct allow-list.
_MAX_MANAGERS = 32


@dataclass(frozen=True)
class CacheLimits:
    """Reuse a data key across messages, within these limits (the SDK's caching materials manager).

    A data key is reused for at most ``max_age_seconds``, ``max_messages_encrypted`` messages
    and ``max_bytes_encrypted`` bytes; ``capacity`` bounds the entries held. Only messages
    whose length is known up front (bytes, or a stream with ``size``) use the cache.
    """

    max_age_seconds: float
    max_messages_encrypted: int = MAX_MESSAGES_PER_DATA_KEY
    max_bytes_encrypted: int = MAX_BYTES_PER_DATA_KEY
    capacity: int = 100

    def __post_init__(self) -> None:
        if not self.max_age_seconds > 0:
            raise ValueError("max_age_seconds must be positive")
        if not 1 <= self.max_messages_encrypted <= MAX_MESSAGES_PER_DATA_KEY:
            raise ValueError(f"max_messages_encrypted must be 1..{MAX_MESSAGES_PER_DATA_KEY}")
        if not 0 <= self.max_bytes_encrypted <= MAX_BYTES_PER_DATA_KEY:
            raise ValueError(f"max_bytes_encrypted must be 0..{MAX_BYTES_PER_DATA_KEY}")
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")


class Envelope:
    """Envelope encryption under one or more KMS keys, any of which can decrypt.

    ``key_ids`` (ids, ARNs or aliases) are the keys every message is encrypted under: a
    fresh data key per message (or per cache entry, with ``cache``), wrapped by each of
    them. Decryption trusts ``allowed_key_ids`` if given, else ``key_ids``, else (an
    Envelope made with no keys) any KMS key the caller's credentials may use.

    KMS is reached at ``endpoint_url`` (Keyhive, or AWS when None), signed with the
    standard AWS credential chain; or through ``botocore_session`` as it is configured
    (its endpoint too: AWS_ENDPOINT_URL_KMS or the config file). ``region`` is where key
    ids that are not ARNs live (default: the AWS configuration's); an ARN names its own.

    ``signed`` (default True) writes the SDK's default suite,
    AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: an ECDSA P-384 signature proves that the
    message was written by whoever made it, not by someone who can merely decrypt its
    data key. ``signed=False`` writes AES_256_GCM_HKDF_SHA512_COMMIT_KEY, several times
    faster (no SHA-384 over every byte), for writers and readers that trust each other
    equally: anyone allowed to decrypt a message's data key can then forge a message
    under it. Decryption reads both.
    """

    def __init__(self, key_ids: Sequence[str] = (), *, endpoint_url: str | None = None, region: str | None = None,
                 botocore_session: botocore.session.Session | None = None, cache: CacheLimits | None = None,
                 signed: bool = True) -> None:
        if isinstance(key_ids, str):
            raise EnvelopeError("key_ids is a list of key ids, not one string")
        if len(key_ids) > MAX_ENCRYPTED_DATA_KEYS:
            raise EnvelopeError(f"at most {MAX_ENCRYPTED_DATA_KEYS} keys per message")
        try:
            self._session = _kms.make_session(endpoint_url, botocore_session)
        except ValueError as exc:
            raise EnvelopeError(str(exc)) from None
        self._key_ids = tuple(key_ids)
        self._region = region
        self._limits = cache
        self._cache = LocalCryptoMaterialsCache(cache.capacity) if cache else None
        self._signed = bool(signed)
        self._managers: OrderedDict[tuple[str, tuple[str, ...]], CryptoMaterialsManager] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._key_ids

    @property
    def signed(self) -> bool:
        return self._signed

    # -- bytes ------------------------------------------------------------------------------
    def encrypt(self, data: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """One message holding ``data``, bound to ``context`` (authenticated, not secret)."""
        out = io.BytesIO()
        self.encrypt_stream(io.BytesIO(data), out, context, size=len(data))
        return out.getvalue()

    def decrypt(self, message: bytes, *, expected_context: Mapping[str, str] | None = None,
                allowed_key_ids: Sequence[str] | None = None) -> tuple[bytes, dict[str, str]]:
        """(plaintext, the message's encryption context) after every check has passed."""
        out = io.BytesIO()
        context = self.decrypt_stream(io.BytesIO(message), out, expected_context=expected_context,
                                      allowed_key_ids=allowed_key_ids)
        return out.getvalue(), context

    # -- streams ----------------------------------------------------------------------------
    def encrypt_stream(self, src: Readable, dst: Writable, context: Mapping[str, str] | None = None, *,
                       size: int | None = None) -> None:
        """Read ``src`` to its end and write one message to ``dst``, in constant memory.

        ``size``, when known, is the number of bytes ``src`` holds: the data key cache serves
        only messages of known size, and a ``src`` that turns out longer is refused.
        """
        if not self._key_ids:
            raise EnvelopeError("no KMS key to encrypt under")
        pairs = _context(context)
        with translated("encrypt"):
            manager = self._manager("encrypt", self._key_ids)
            materials = _materials.for_encryption(manager, pairs, signed=self._signed, frame_length=FRAME_LENGTH,
                                                  size=size, max_data_keys=MAX_ENCRYPTED_DATA_KEYS)
            write_message(src, dst, materials, frame_length=FRAME_LENGTH, size=size)

    def decrypt_stream(self, src: Readable, dst: Writable, *, expected_context: Mapping[str, str] | None = None,
                       allowed_key_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Read one message from ``src`` (and nothing after it), write its plaintext to ``dst``; return its context.

        Nothing is written before the header, its data key and the expected context are
        checked. Each frame is authenticated before it is written; truncation, reordering
        and the signature are known only at the end, so if this raises, discard what
        ``dst`` received (``keyhive decrypt`` writes to a temporary file and renames it).
        """
        if isinstance(allowed_key_ids, str):
            raise EnvelopeError("allowed_key_ids is a list of key ids, not one string")
        expected = _context(expected_context, reserved_ok=True)
        allowed = self._key_ids if allowed_key_ids is None else tuple(allowed_key_ids)
        if allowed_key_ids is not None and not allowed:
            raise EnvelopeError("allowed_key_ids is empty: no key may decrypt")
        reader = MessageReader(src, max_frame_length=MAX_FRAME_LENGTH, max_data_keys=MAX_ENCRYPTED_DATA_KEYS)
        try:
            with translated("decrypt"):
                header = reader.read_header()  # bounded: no KMS call for a message over the limits
                reader.open(*_materials.for_decryption(self._manager("decrypt", allowed), header))
                found = dict(header.context)
                _check_context(expected, found)  # after the header is authenticated, before any plaintext
                reader.copy_body(dst)
        finally:
            reader.close()
        return {k: v for k, v in found.items() if not k.startswith(RESERVED_CONTEXT_PREFIX)}

    # -- materials ----------------------------------------------------------------------------
    def _manager(self, purpose: str, key_ids: tuple[str, ...]) -> CryptoMaterialsManager:
        """The materials manager for encrypting under, or decrypting with, ``key_ids``.

        Each gets its own cache partition (the SDK draws a random one per manager), so data
        keys decrypted under one allow-list are never served to a call with another.
        """
        with self._lock:
            found = self._managers.get((purpose, key_ids))
            if found is not None:
                self._managers.move_to_end((purpose, key_ids))
                return found
        ids = _kms.key_arns(self._session, self._region, key_ids) if purpose == "decrypt" else key_ids
        backing = _kms.provider(self._session, self._region, ids)
        manager: CryptoMaterialsManager
        if self._limits is None or self._cache is None:
            manager = DefaultCryptoMaterialsManager(master_key_provider=backing)
        else:
            manager = CachingCryptoMaterialsManager(
                cache=self._cache,
                master_key_provider=backing,
                max_age=float(self._limits.max_age_seconds),
                max_messages_encrypted=self._limits.max_messages_encrypted,
                max_bytes_encrypted=self._limits.max_bytes_encrypted,
            )
        with self._lock:
            self._managers[(purpose, key_ids)] = manager
            while len(self._managers) > _MAX_MANAGERS:
                self._managers.popitem(last=False)
        return manager


def _context(context: Mapping[str, str] | None, *, reserved_ok: bool = False) -> dict[str, str]:
    pairs = dict(context or {})
    for key, value in pairs.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise EnvelopeError("the encryption context maps non-empty strings to strings")
        if key.startswith(RESERVED_CONTEXT_PREFIX) and not reserved_ok:
            raise EnvelopeError(f"encryption context keys starting {RESERVED_CONTEXT_PREFIX!r} are reserved")
    return pairs


def _check_context(expected: Mapping[str, str], found: Mapping[str, str]) -> None:
    """Every expected pair must be in the message; names appear in the error, values never do."""
    for key, value in sorted(expected.items()):
        if key not in found:
            raise EnvelopeError(f"encryption context mismatch: the message has no {key!r}")
        if found[key] != value:
            raise EnvelopeError(f"encryption context mismatch: the message's {key!r} differs")
