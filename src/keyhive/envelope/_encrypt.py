"""Writing one message (docs/envelope.md, "Message format"): header, frames, signature.

The input comes in frame-sized chunks (read ahead on a thread for a regular file); the
calling thread holds one frame more than it encrypts, to know which frame is the last,
and encrypts each frame straight into an output block. A writer thread writes the blocks
and, for the signed suite, a hashing thread feeds them to SHA-384 at the same time.
Memory: four input frames and four output blocks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from keyhive.envelope import _format as fmt
from keyhive.envelope._errors import InputLongerThanStated
from keyhive.envelope._pipeline import Block, Chunks, Pool, Readable, Worker, Writable, writer
from keyhive.envelope._primitives import FrameCipher, derive, sign_digest

_INPUT_BLOCKS = 4  # two in hand (a frame and the one after it), two read ahead
_OUTPUT_BLOCKS = 4
# A final frame's head is 8 bytes longer than a regular one's: blocks keep the ciphertext
# at the same offset and start a regular frame 8 bytes in.
_CIPHERTEXT_AT = fmt.FINAL_FRAME_PREFIX
_REGULAR_AT = fmt.FINAL_FRAME_PREFIX - fmt.FRAME_PREFIX


@dataclass(frozen=True)
class WriteMaterials:
    """What a materials manager gives a writer: the suite, the data key and its encrypted copies,
    the context to store (with the public key, for the signed suite) and the signing key."""

    suite_id: int
    data_key: bytes = field(repr=False)
    data_keys: tuple[fmt.DataKeyEntry, ...]
    context: Mapping[str, str]
    signing_key: bytes | None = field(default=None, repr=False)  # DER PKCS#8, signed suite only


def write_message(src: Readable, dst: Writable, materials: WriteMaterials, *, frame_length: int,
                  size: int | None = None, message_id: bytes | None = None) -> None:
    """Encrypt all of ``src`` into one message on ``dst``.

    ``size``: refuse (InputLongerThanStated) a ``src`` holding more. ``message_id`` is for
    known-answer tests only; every message otherwise gets 32 random bytes.
    """
    message_id = os.urandom(fmt.MESSAGE_ID_LENGTH) if message_id is None else message_id
    cipher, commitment = derive(materials.data_key, message_id, materials.suite_id)
    header = fmt.encode_header(fmt.Header(materials.suite_id, message_id, materials.context, materials.data_keys,
                                          frame_length, commitment))
    out = _Output(dst, signed=materials.signing_key is not None)
    try:
        out.put(header + cipher.header_tag(header))
        _frames(src, out, cipher, message_id, frame_length, size)
        if materials.signing_key is not None:
            out.put_footer(fmt.signature_field(sign_digest(materials.signing_key, out.digest())))
        out.close()
    except BaseException:
        out.abort()
        raise


def _frames(src: Readable, out: _Output, cipher: FrameCipher, message_id: bytes, frame_length: int,
            size: int | None) -> None:
    chunks = Chunks(src, _INPUT_BLOCKS, frame_length)
    chunks.ahead(frame_length, frame_length)
    blocks = Pool(_OUTPUT_BLOCKS, _CIPHERTEXT_AT + frame_length + fmt.TAG_LENGTH)
    regular_aad, final_aad = message_id + fmt.FRAME_AAD, message_id + fmt.FINAL_FRAME_AAD
    seal = cipher.seal_into
    current: Block | None = None
    following: Block | None = None
    try:
        current, length = chunks.next()
        total, number = length, 1
        while True:
            # Read one frame ahead: only then is it known whether this frame is the last.
            following, more = chunks.next() if length == frame_length else (None, 0)
            total += more
            if size is not None and total > size:
                raise InputLongerThanStated
            plain = current.view[:length] if current is not None else memoryview(b"")
            block = blocks.get()
            view = block.view
            end = _CIPHERTEXT_AT + length + fmt.TAG_LENGTH
            # The final frame holds less than a full frame: data that ends on a frame boundary
            # gets an empty final frame after it (AWS Encryption SDK 3.x refuses a full one).
            if not more and length < frame_length:
                view[:_CIPHERTEXT_AT] = fmt.final_frame_head(number, length)
                seal(fmt.frame_iv(number), plain, fmt.frame_aad(final_aad, number, length), view[_CIPHERTEXT_AT:end])
                out.put_block(block, 0, end)
                return
            if number == fmt.MAX_SEQUENCE_NUMBER:  # only a final frame can take the last number
                raise OverflowError("a message holds at most 2**32 - 1 frames")  # pragma: no cover - 4 PiB
            view[_REGULAR_AT:_CIPHERTEXT_AT] = fmt.frame_head(number)
            seal(fmt.frame_iv(number), plain, fmt.frame_aad(regular_aad, number, length), view[_CIPHERTEXT_AT:end])
            out.put_block(block, _REGULAR_AT, end)
            if current is not None:
                current.release()
            current, following, length = following, None, more
            number += 1
    finally:
        for held in (current, following):
            if held is not None:
                held.release()
        chunks.close()


class _Output:
    """Writes the message's bytes in order; for the signed suite, hashes them on another thread."""

    def __init__(self, dst: Writable, *, signed: bool) -> None:
        self._writer = Worker(writer(dst), "keyhive-envelope-write")
        self._hash = hashlib.sha384() if signed else None
        self._hasher = Worker(self._hash.update, "keyhive-envelope-hash") if self._hash else None

    def put(self, data: bytes) -> None:
        self._writer.put((data, None))
        if self._hasher is not None:
            self._hasher.put((data, None))

    def put_block(self, block: Block, start: int, end: int) -> None:
        data = block.view[start:end]
        if self._hasher is not None:
            block.share()
            self._hasher.put((data, block))
        self._writer.put((data, block))

    def digest(self) -> bytes:
        """SHA-384 of everything put so far (waits for the hashing thread)."""
        assert self._hash is not None and self._hasher is not None
        self._hasher.close()
        return self._hash.digest()

    def put_footer(self, data: bytes) -> None:
        self._writer.put((data, None))

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()
        if self._hasher is not None:
            self._hasher.abort()
