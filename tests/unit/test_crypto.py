"""keyhive.crypto: known answers for its primitives and the one opaque failure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhive import crypto

h = bytes.fromhex

# AES-256-GCM: "The Galois/Counter Mode of Operation (GCM)", McGrew & Viega, test cases 13, 14, 16.
GCM_CASES = [
    ("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    ("00" * 32, "00" * 12, "00" * 16, "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"),
    (
        "feffe9928665731c6d6a8f9467308308" * 2,
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


@pytest.mark.parametrize("key, nonce, plaintext, aad, ciphertext, tag", GCM_CASES)
def test_aes_gcm_known_answers(key: str, nonce: str, plaintext: str, aad: str, ciphertext: str, tag: str) -> None:
    sealed = crypto.seal_from_parts(h(key), h(nonce), h(plaintext), h(aad))
    assert sealed.hex() == ciphertext + tag
    assert crypto.open_sealed(h(key), h(nonce), sealed, h(aad)) == h(plaintext)


def test_hkdf_sha256_known_answer() -> None:
    # RFC 5869 A.1 (L = 42); a 32-byte derivation is the first 32 bytes of its OKM.
    okm = crypto.derive_message_key(b"\x0b" * 22, h("000102030405060708090a0b0c"), h("f0f1f2f3f4f5f6f7f8f9"))
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"


def test_derived_keys_depend_on_every_input() -> None:
    base = crypto.derive_message_key(b"m" * 32, b"s" * 16, b"i")
    assert len(base) == crypto.KEY_BYTES
    assert crypto.derive_message_key(b"M" + b"m" * 31, b"s" * 16, b"i") != base
    assert crypto.derive_message_key(b"m" * 32, b"S" + b"s" * 15, b"i") != base
    assert crypto.derive_message_key(b"m" * 32, b"s" * 16, b"j") != base


def test_seal_draws_a_fresh_nonce() -> None:
    key = crypto.new_key()
    (n1, c1), (n2, c2) = crypto.seal(key, b"same", b"aad"), crypto.seal(key, b"same", b"aad")
    assert len(n1) == crypto.NONCE_BYTES and n1 != n2 and c1 != c2
    assert crypto.open_sealed(key, n1, c1, b"aad") == crypto.open_sealed(key, n2, c2, b"aad") == b"same"


def test_every_mismatch_is_the_same_opaque_failure() -> None:
    key = crypto.new_key()
    nonce, sealed = crypto.seal(key, b"secret", b"aad")
    attempts = [
        (crypto.new_key(), nonce, sealed, b"aad"),  # wrong key
        (key, bytes(12), sealed, b"aad"),  # wrong nonce
        (key, nonce, sealed, b"aaD"),  # wrong associated data
        (key, nonce, sealed[:-1], b"aad"),  # truncated tag
        (key, nonce, b"", b"aad"),  # nothing at all
        (key, nonce, sealed + b"\x00", b"aad"),  # extended
        (key[:16], nonce, sealed, b"aad"),  # AES-128-sized key
        (b"short", nonce, sealed, b"aad"),  # not a key length at all
        (key, b"", sealed, b"aad"),  # empty nonce
    ]
    for i, args in enumerate(attempts):
        with pytest.raises(crypto.DecryptionFailed) as info:
            crypto.open_sealed(*args)
        assert str(info.value) == "decryption failed", i
        assert info.value.__cause__ is None and info.value.__suppress_context__, i


def test_keys_and_random_bytes() -> None:
    keys = {crypto.new_key() for _ in range(32)}
    assert len(keys) == 32 and all(len(k) == crypto.KEY_BYTES == 32 for k in keys)
    assert len(crypto.random_bytes(0)) == 0 and len(crypto.random_bytes(1000)) == 1000


def test_constant_time_equal() -> None:
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal(b"abc", b"ab")


@settings(max_examples=100, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), plaintext=st.binary(max_size=2048), aad=st.binary(max_size=64),
       flip=st.integers(min_value=0))
def test_round_trip_and_tamper(key: bytes, plaintext: bytes, aad: bytes, flip: int) -> None:
    nonce, sealed = crypto.seal(key, plaintext, aad)
    assert len(sealed) == len(plaintext) + crypto.TAG_BYTES
    assert crypto.open_sealed(key, nonce, sealed, aad) == plaintext
    bad = bytearray(sealed)
    bad[flip % len(bad)] ^= 1 << (flip % 8)
    with pytest.raises(crypto.DecryptionFailed):
        crypto.open_sealed(key, nonce, bytes(bad), aad)
