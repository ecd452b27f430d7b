"""Reading one message: header, frames, signature, and nothing after it.

    reader = MessageReader(src, max_frame_length=..., max_data_keys=...)
    header = reader.read_header()          # parsed and bounded, not yet authenticated
    reader.open(data_key, verification_key)  # key commitment and header tag checked
    reader.copy_body(dst)                  # each frame authenticated, then written
    reader.close()                         # always: stops the threads

After the header, the input is read in chunks of whole frames (read ahead on a thread
for a regular file), so frames are decrypted from the chunk they were read into. For
the signed suite, a hashing thread feeds every byte before the footer to SHA-384 while
the calling thread decrypts; a writer thread writes the plaintext. Plaintext reaches
``dst`` only after its frame's tag has been checked. Truncation, frame order and the
signature are known at the end; the caller discards the output if this raises.
"""

from __future__ import annotations

import hashlib

from keyhive.envelope import _format as fmt
from keyhive.envelope._errors import MessageCorrupt, ReaderLimitExceeded
from keyhive.envelope._pipeline import Block, Chunks, Pool, Readable, Worker, Writable, writer
from keyhive.envelope._primitives import FrameCipher, check_commitment, derive, verify_digest

_FIRST_BLOCK = 64 * 1024  # read at a time until the header has been parsed
_BLOCK_TARGET = 2 * 1024 * 1024  # then chunks of whole frames, about this size
_INPUT_BLOCKS = 4  # one being decrypted, the others being hashed or read ahead
_OUTPUT_BLOCKS = 3
_OUTPUT_BLOCK = 2 * 1024 * 1024
_REGULAR_TAIL = fmt.IV_LENGTH + fmt.TAG_LENGTH  # a regular frame after its sequence number: IV, ciphertext, tag
_FINAL_FIELDS = 4 + fmt.IV_LENGTH + 4  # a final frame after its marker: number, IV, length


class MessageReader:
    def __init__(self, src: Readable, *, max_frame_length: int, max_data_keys: int) -> None:
        self._source = _Source(src)
        self._max_frame_length = max_frame_length
        self._max_data_keys = max_data_keys
        self._header: fmt.Header | None = None
        self._raw_header = b""
        self._tag = b""
        self._cipher: FrameCipher | None = None
        self._verification_key: bytes | None = None
        self._writer: Worker | None = None

    def read_header(self) -> fmt.Header:
        header, raw = fmt.read_header(self._source.take, max_data_keys=self._max_data_keys,
                                      max_frame_length=self._max_frame_length)
        self._header, self._raw_header = header, raw
        self._tag = bytes(self._source.take(fmt.TAG_LENGTH))
        if not header.signed:
            self._source.stop_hashing(keep=False)
        return header

    def open(self, data_key: bytes, verification_key: bytes | None) -> None:
        """Check the data key against the header's commitment, then the header's tag."""
        header = self._require_header()
        if len(data_key) != fmt.DATA_KEY_LENGTH or header.signed != (verification_key is not None):
            raise MessageCorrupt
        cipher, commitment = derive(data_key, header.message_id, header.suite_id)
        check_commitment(commitment, header.commitment)
        cipher.check_header_tag(self._raw_header, self._tag)
        self._cipher, self._verification_key = cipher, verification_key

    def copy_body(self, dst: Writable) -> None:
        header = self._require_header()
        if self._cipher is None:
            raise RuntimeError("open() the message first")
        self._writer = Worker(writer(dst), "keyhive-envelope-write")
        out = _Plaintext(self._writer, max(header.frame_length, _OUTPUT_BLOCK))
        if header.framed:
            self._source.align(fmt.FRAME_PREFIX + header.frame_length + fmt.TAG_LENGTH)
            _frames(self._source, out, self._cipher, header)
        else:
            _single_block(self._source, out, self._cipher, header, self._max_frame_length)
        out.flush()
        if self._verification_key is not None:
            digest = self._source.stop_hashing(keep=True)
            signature = bytes(self._source.take(fmt.u16(self._source.take(2))))
            verify_digest(self._verification_key, signature, digest)
        if not self._source.at_end():
            raise MessageCorrupt  # bytes after the message
        self._writer.close()

    def close(self) -> None:
        """Stop the threads; nothing more reaches ``dst``. Safe to call more than once."""
        if self._writer is not None:
            self._writer.abort()
        self._source.close()

    def _require_header(self) -> fmt.Header:
        if self._header is None:
            raise RuntimeError("read_header() first")
        return self._header


def _frames(source: _Source, out: _Plaintext, cipher: FrameCipher, header: fmt.Header) -> None:
    take, open_into = source.take, cipher.open_into
    frame_length = header.frame_length
    regular_aad = header.message_id + fmt.FRAME_AAD
    final_aad = header.message_id + fmt.FINAL_FRAME_AAD
    number = 1
    while True:
        marker = fmt.u32(take(4))
        if marker != fmt.FINAL_FRAME_MARKER:
            if marker != number:
                raise MessageCorrupt  # reordered, dropped or repeated
            frame = take(frame_length + _REGULAR_TAIL)
            open_into(frame[:fmt.IV_LENGTH], frame[fmt.IV_LENGTH:], fmt.frame_aad(regular_aad, number, frame_length),
                      out.space(frame_length))
            out.commit(frame_length)
            number += 1
            continue
        found, iv, length = fmt.final_frame_fields(take(_FINAL_FIELDS))
        if found != number or length > frame_length:
            raise MessageCorrupt
        body = take(length + fmt.TAG_LENGTH)
        open_into(iv, body, fmt.frame_aad(final_aad, number, length), out.space(length))
        out.commit(length)
        return


def _single_block(source: _Source, out: _Plaintext, cipher: FrameCipher, header: fmt.Header, limit: int) -> None:
    iv, length = fmt.single_block_fields(source.take(fmt.IV_LENGTH + 8))
    if length > limit:
        raise ReaderLimitExceeded
    body = source.take(length + fmt.TAG_LENGTH)
    cipher.open_into(iv, body, fmt.frame_aad(header.message_id + fmt.SINGLE_BLOCK_AAD, 1, length), out.space(length))
    out.commit(length)


class _Plaintext:
    """Authenticated plaintext gathered into blocks for the writer thread."""

    def __init__(self, writer_: Worker, size: int) -> None:
        self._writer = writer_
        self._pool = Pool(_OUTPUT_BLOCKS, size)
        self._block: Block | None = None
        self._used = 0

    def space(self, n: int) -> memoryview:
        """Room for ``n`` bytes of plaintext; not written unless ``commit``ted."""
        block = self._block
        if block is None or self._used + n > len(block.buf):
            self.flush()
            if n > self._pool.size:
                self._pool.resize(n)
            block = self._block = self._pool.get()
        return block.view[self._used: self._used + n]

    def commit(self, n: int) -> None:
        self._used += n

    def flush(self) -> None:
        block, self._block = self._block, None
        if block is None:
            return
        if self._used:
            self._writer.put((block.view[: self._used], block))
        else:
            block.release()
        self._used = 0


class _Source:
    """``src`` in chunks. ``take(n)``: the next n bytes as one view, valid until the next ``take``.

    A view lies in the chunk it was read into, except when a chunk boundary cuts it: then
    it is copied into a scratch buffer. After ``align``, chunks end on frame boundaries,
    so that happens about once per message. Until ``stop_hashing``, every chunk goes to
    SHA-384 on the hashing thread, in order, once this reader has moved past it.
    """

    def __init__(self, src: Readable) -> None:
        self._chunks = Chunks(src, _INPUT_BLOCKS, _FIRST_BLOCK)
        self._block: Block | None = None
        self._view = memoryview(b"")
        self._pos = self._end = 0
        self._aligned = False
        self._scratch = bytearray()
        self._hash: hashlib._Hash | None = hashlib.sha384()
        self._hasher: Worker | None = Worker(self._hash.update, "keyhive-envelope-hash")
        self._hashed_from = 0

    def align(self, record: int) -> None:
        """Read the rest in chunks that end where a ``record``-byte frame ends, and read them ahead."""
        size = record * max(1, -(-_BLOCK_TARGET // record))
        first = (self._pos - self._end) % record or size  # makes every later chunk end on a frame boundary
        self._chunks.ahead(first, size)
        self._aligned = True

    def take(self, n: int) -> memoryview:
        pos = self._pos
        if self._end - pos >= n:
            self._pos = pos + n
            return self._view[pos: pos + n]
        return self._take_across(n)

    def _take_across(self, n: int) -> memoryview:
        if len(self._scratch) < n:
            self._scratch = bytearray(n)
        scratch = memoryview(self._scratch)
        have = self._end - self._pos
        scratch[:have] = self._view[self._pos: self._end]
        while have < n:
            if not self._next_chunk():
                raise MessageCorrupt  # truncated
            part = min(n - have, self._end)
            scratch[have: have + part] = self._view[:part]
            have += part
            self._pos = part
        return scratch[:n]

    def _next_chunk(self) -> bool:
        """Move past the current chunk (to the hashing thread or the pool) to the next; False at the end."""
        if self._block is not None:
            self._leave(self._block, self._end)
            self._block, self._view, self._pos, self._end = None, memoryview(b""), 0, 0
        block, n = self._chunks.next() if self._aligned else self._chunks.read_now(_FIRST_BLOCK)
        if block is None:
            return False
        if n == 0:
            block.release()
            return False
        self._block, self._view, self._pos, self._end, self._hashed_from = block, block.view, 0, n, 0
        return True

    def _leave(self, block: Block, consumed_to: int) -> None:
        if self._hasher is not None and consumed_to > self._hashed_from:
            self._hasher.put((block.view[self._hashed_from: consumed_to], block))
        else:
            block.release()

    def stop_hashing(self, *, keep: bool) -> bytes:
        """End the hashed part at the current position; its SHA-384 if ``keep``."""
        hasher, hash_ = self._hasher, self._hash
        self._hasher = self._hash = None
        if hasher is None or hash_ is None:
            return b""
        if not keep:
            hasher.abort()
            return b""
        if self._block is not None and self._pos > self._hashed_from:
            self._block.share()
            hasher.put((self._view[self._hashed_from: self._pos], self._block))
        hasher.close()
        return hash_.digest()

    def at_end(self) -> bool:
        """Whether the input ends here (reads further if it must)."""
        return self._pos == self._end and not self._next_chunk()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.abort()
            self._hasher = self._hash = None
        if self._block is not None:
            self._block.release()
            self._block = None
        self._chunks.close()
