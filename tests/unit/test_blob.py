"""KMS ciphertext blob, format 1: known answers, attacks and a round-trip property.

The vectors in tests/vectors/kms_blob_v1.json are checked three ways: ``blob.py``
reproduces them byte for byte, opens them, and an independent implementation
written from docs/ciphertext-format.md with ``cryptography`` alone agrees.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhive import blob, crypto, limits

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "kms_blob_v1.json"
DOC = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = DOC["vectors"]
BY_NAME = {v["name"]: v for v in VECTORS}
h = bytes.fromhex


def plaintext_of(v: dict[str, Any]) -> bytes:
    if "plaintext_repeat" in v:
        return h(v["plaintext_repeat"]["pattern"]) * v["plaintext_repeat"]["count"]
    return h(v["plaintext"])


def seal_vector(v: dict[str, Any]) -> bytes:
    return blob.seal_kms_blob_from_parts(
        h(v["material"]), v["key_id"], v["material_version"], plaintext_of(v), v["context"],
        salt=h(v["salt"]), nonce=h(v["nonce"]),
    )


def open_bytes(material: bytes, data: bytes, context: dict[str, str]) -> bytes:
    return blob.open_kms_blob(material, blob.parse_kms_blob(data), context)


ids = pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])


# -- the vector file itself -------------------------------------------------------------

def test_vector_file_covers_what_the_format_promises() -> None:
    assert DOC["format"] == blob.KMS_BLOB_FORMAT == 1
    assert DOC["message_key_info"].encode() == blob.KMS_MESSAGE_KEY_INFO
    sizes = {len(plaintext_of(v)) for v in VECTORS}
    assert {0, 1, limits.MAX_PLAINTEXT_BYTES} <= sizes
    assert any(v["context"] == {} for v in VECTORS)
    assert any(len(v["context"]) > 2 and any(not k.isascii() for k in v["context"]) for v in VECTORS)
    assert {"context-ab-c", "context-a-bc"} <= BY_NAME.keys()


# -- known answers --------------------------------------------------------------------

@ids
def test_seal_reproduces_the_exact_bytes(v: dict[str, Any]) -> None:
    sealed = seal_vector(v)
    assert sealed.hex() == v["blob"]
    assert sealed[: blob.KMS_HEADER.size].hex() == v["header"]
    assert sealed[-crypto.TAG_BYTES :].hex() == v["tag"]
    assert len(sealed) == blob.KMS_HEADER.size + len(plaintext_of(v)) + crypto.TAG_BYTES


@ids
def test_open_returns_the_plaintext(v: dict[str, Any]) -> None:
    parsed = blob.parse_kms_blob(h(v["blob"]))
    assert (parsed.key_id, parsed.material_version) == (v["key_id"], v["material_version"])
    assert (parsed.salt.hex(), parsed.nonce.hex()) == (v["salt"], v["nonce"])
    assert parsed.to_bytes().hex() == v["blob"]
    assert blob.open_kms_blob(h(v["material"]), parsed, v["context"]) == plaintext_of(v)


@ids
def test_intermediate_values(v: dict[str, Any]) -> None:
    assert blob.encode_context(v["context"]).hex() == v["context_encoding"]
    message_key = crypto.derive_message_key(h(v["material"]), h(v["salt"]), blob.KMS_MESSAGE_KEY_INFO)
    assert message_key.hex() == v["message_key"]
    if "plaintext_sha256" in v:
        assert hashlib.sha256(plaintext_of(v)).hexdigest() == v["plaintext_sha256"]


@ids
def test_an_implementation_written_from_the_docs_agrees(v: dict[str, Any]) -> None:
    """docs/ciphertext-format.md, re-implemented with cryptography alone."""
    header = (
        b"\x01" + uuid.UUID(v["key_id"]).bytes + v["material_version"].to_bytes(4, "big")
        + h(v["salt"]) + h(v["nonce"])
    )
    pairs = sorted((k.encode(), val.encode()) for k, val in v["context"].items())
    context = len(pairs).to_bytes(4, "big") + b"".join(
        len(k).to_bytes(4, "big") + k + len(val).to_bytes(4, "big") + val for k, val in pairs
    )
    key = HKDF(hashes.SHA256(), 32, h(v["salt"]), b"keyhive/kms/v1").derive(h(v["material"]))
    assert header + AESGCM(key).encrypt(h(v["nonce"]), plaintext_of(v), header + context) == h(v["blob"])


@pytest.mark.parametrize("e", DOC["context_encodings"], ids=[e["name"] for e in DOC["context_encodings"]])
def test_canonical_context_encoding(e: dict[str, Any]) -> None:
    assert blob.encode_context(e["context"]).hex() == e["encoding"]
    # insertion order must not matter
    assert blob.encode_context(dict(reversed(list(e["context"].items())))).hex() == e["encoding"]


def test_ab_c_and_a_bc_differ_only_in_the_tag() -> None:
    ab_c, a_bc = h(BY_NAME["context-ab-c"]["blob"]), h(BY_NAME["context-a-bc"]["blob"])
    assert blob.encode_context({"ab": "c"}) != blob.encode_context({"a": "bc"})
    assert ab_c[: -crypto.TAG_BYTES] == a_bc[: -crypto.TAG_BYTES]
    assert ab_c[-crypto.TAG_BYTES :] != a_bc[-crypto.TAG_BYTES :]
    material = h(BY_NAME["context-ab-c"]["material"])
    with pytest.raises(crypto.DecryptionFailed):
        open_bytes(material, ab_c, {"a": "bc"})
    with pytest.raises(crypto.DecryptionFailed):
        open_bytes(material, a_bc, {"ab": "c"})


# -- attacks --------------------------------------------------------------------------

@ids
def test_every_flipped_bit_fails(v: dict[str, Any]) -> None:
    material, good = h(v["material"]), bytearray(h(v["blob"]))
    for i in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            try:
                open_bytes(material, bytes(bad), v["context"])
            except (crypto.DecryptionFailed, blob.MalformedBlob):
                continue
            pytest.fail(f"flipping bit {bit} of byte {i} went unnoticed")


@ids
def test_wrong_context_fails(v: dict[str, Any]) -> None:
    material, data, context = h(v["material"]), h(v["blob"]), v["context"]
    wrong = [{**context, "extra": "pair"}, {"k": "v"} if context != {"k": "v"} else {}]
    for key in context:
        wrong.append({k: val for k, val in context.items() if k != key})  # a pair missing
        wrong.append({**context, key: context[key] + "x"})  # a value changed
        wrong.append({(k + "x" if k == key else k): val for k, val in context.items()})  # a key changed
    for ctx in wrong:
        with pytest.raises(crypto.DecryptionFailed):
            open_bytes(material, data, ctx)


def test_wrong_material_or_version_fails() -> None:
    v = BY_NAME["empty-context"]
    data = h(v["blob"])
    with pytest.raises(crypto.DecryptionFailed):
        open_bytes(bytes(32), data, {})
    other_version = data[:17] + (2).to_bytes(4, "big") + data[21:]
    with pytest.raises(crypto.DecryptionFailed):
        open_bytes(h(v["material"]), other_version, {})


@ids
def test_truncations_fail(v: dict[str, Any]) -> None:
    material, data = h(v["material"]), h(v["blob"])
    minimum = blob.KMS_HEADER.size + crypto.TAG_BYTES
    for n in range(min(len(data), 200)):  # every short prefix; the long vector's tail adds nothing
        if n < minimum:
            with pytest.raises(blob.MalformedBlob):
                blob.parse_kms_blob(data[:n])
        else:
            with pytest.raises(crypto.DecryptionFailed):
                open_bytes(material, data[:n], v["context"])
    for n in range(len(data) - 40, len(data)):
        with pytest.raises((blob.MalformedBlob, crypto.DecryptionFailed)):
            open_bytes(material, data[: max(n, 0)], v["context"])


def test_length_bounds() -> None:
    v = BY_NAME["empty-context"]
    data, material = h(v["blob"]), h(v["material"])
    minimum = blob.KMS_HEADER.size + crypto.TAG_BYTES
    assert minimum == 65
    blob.parse_kms_blob(data[:minimum])  # shortest that parses
    blob.parse_kms_blob(data[:49] + bytes(limits.MAX_CIPHERTEXT_BLOB_BYTES - 49))  # longest that parses
    for n in (limits.MAX_CIPHERTEXT_BLOB_BYTES + 1, 2 * limits.MAX_CIPHERTEXT_BLOB_BYTES, 1 << 20):
        with pytest.raises(blob.MalformedBlob):
            blob.parse_kms_blob(data[:49] + bytes(n - 49))
    with pytest.raises(crypto.DecryptionFailed):  # appended bytes become part of the ciphertext
        open_bytes(material, data + b"\x00", {})


@pytest.mark.parametrize("fmt", [f for f in range(256) if f != blob.KMS_BLOB_FORMAT])
def test_unknown_format_byte_is_malformed(fmt: int) -> None:
    data = h(BY_NAME["empty-context"]["blob"])
    with pytest.raises(blob.MalformedBlob):
        blob.parse_kms_blob(bytes([fmt]) + data[1:])


def test_material_version_zero_is_malformed() -> None:
    data = h(BY_NAME["empty-context"]["blob"])
    with pytest.raises(blob.MalformedBlob):
        blob.parse_kms_blob(data[:17] + bytes(4) + data[21:])


def test_errors_say_nothing() -> None:
    assert str(blob.MalformedBlob()) == "malformed blob"
    assert str(crypto.DecryptionFailed()) == "decryption failed"


# -- records (the barrier's format; the barrier tests cover the crypto) -----------------

def test_record_parse_bounds() -> None:
    record = blob.Record(7, bytes(range(12)), bytes(16))
    data = record.to_bytes()
    assert data[:5] == b"\x01\x00\x00\x00\x07" and len(data) == 33
    assert blob.parse_record(data) == record
    for n in range(len(data)):
        with pytest.raises(blob.MalformedBlob):
            blob.parse_record(data[:n])
    for fmt in (0, 2, 255):
        with pytest.raises(blob.MalformedBlob):
            blob.parse_record(bytes([fmt]) + data[1:])


# -- properties -----------------------------------------------------------------------

contexts = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    material=st.binary(min_size=32, max_size=32),
    key_id=st.uuids().map(str),
    version=st.integers(1, 2**32 - 1),
    plaintext=st.binary(max_size=limits.MAX_PLAINTEXT_BYTES),
    context=contexts,
)
def test_round_trip(material: bytes, key_id: str, version: int, plaintext: bytes, context: dict[str, str]) -> None:
    data = blob.seal_kms_blob(material, key_id, version, plaintext, context)
    parsed = blob.parse_kms_blob(data)
    assert (parsed.key_id, parsed.material_version) == (key_id, version)
    assert blob.open_kms_blob(material, parsed, dict(reversed(list(context.items())))) == plaintext


@settings(max_examples=300, deadline=None)
@given(a=contexts, b=contexts)
def test_context_encoding_is_injective(a: dict[str, str], b: dict[str, str]) -> None:
    assert (blob.encode_context(a) == blob.encode_context(b)) == (a == b)


def test_two_seals_of_the_same_input_differ() -> None:
    v = BY_NAME["empty-context"]
    one, two = (blob.seal_kms_blob(h(v["material"]), v["key_id"], 1, b"x", {}) for _ in range(2))
    assert one[21:49] != two[21:49] and one[49:] != two[49:]
