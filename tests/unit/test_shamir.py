"""Shamir secret sharing: field, known answers, round trips, and what must fail."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhive import shamir
from keyhive.shamir import ShamirError, combine, split

SECRET = bytes(range(32))


def fixed(randomness: bytes) -> Callable[[int], bytes]:
    """A randbytes that returns ``randomness`` and checks it was asked for all of it."""

    def randbytes(n: int) -> bytes:
        assert n == len(randomness)
        return randomness

    return randbytes


# -- the field ----------------------------------------------------------------
def test_field_known_answers() -> None:
    assert shamir._mul(0x57, 0x83) == 0xC1  # FIPS 197, section 4.2
    assert shamir._mul(3, 7) == 9  # OpenBao shamir_test.go TestField_Mult
    assert shamir._div(6, 3) == 2 and shamir._div(0, 7) == 0


def test_tables_agree_with_shift_and_add() -> None:
    for a, b in itertools.product(range(256), repeat=2):
        assert shamir._mul(a, b) == shamir._mul_slow(a, b)
    for a in range(1, 256):
        assert shamir._mul(a, shamir._div(1, a)) == 1


# -- known answers --------------------------------------------------------------
def test_known_answer_degree_one() -> None:
    # y = s + a*x per byte: s = 01, a = 03 and s = 02, a = 05, worked by hand.
    parts = split(b"\x01\x02", 3, 2, randbytes=fixed(b"\x03\x05"))
    assert parts == [bytes.fromhex("020701"), bytes.fromhex("070802"), bytes.fromhex("040d03")]
    assert combine(parts[1:]) == b"\x01\x02"


def test_known_answer_degree_two_reduces_mod_polynomial() -> None:
    # y = 2a + 80*x + 57*x^2; 80*2 = 1b exercises the reduction by 0x11b.
    parts = split(b"\x2a", 3, 3, randbytes=fixed(b"\x80\x57"))
    assert parts == [bytes.fromhex("fd01"), bytes.fromhex("7602"), bytes.fromhex("a103")]
    assert combine(parts) == b"\x2a"


def test_one_of_one_is_the_secret_and_x() -> None:
    assert split(SECRET, 1, 1, randbytes=fixed(b"")) == [SECRET + b"\x01"]
    assert combine([SECRET + b"\x01"]) == SECRET


# -- round trips ----------------------------------------------------------------
@st.composite
def splits(draw: st.DrawFn) -> tuple[bytes, int, int]:
    threshold = draw(st.integers(2, 8))
    shares = draw(st.integers(threshold, 12))
    return draw(st.binary(min_size=1, max_size=48)), shares, threshold


@settings(max_examples=60, deadline=None)
@given(splits(), st.randoms(use_true_random=False))
def test_round_trip_any_threshold_subset_in_any_order(
    case: tuple[bytes, int, int], rng: random.Random
) -> None:
    secret, shares, threshold = case
    parts = split(secret, shares, threshold)
    assert len(parts) == shares and all(len(p) == len(secret) + 1 for p in parts)
    assert sorted(p[-1] for p in parts) == list(range(1, shares + 1))
    subset = rng.sample(parts, rng.randint(threshold, shares))
    assert combine(subset) == secret


def test_every_threshold_subset_recovers() -> None:
    parts = split(SECRET, 5, 3)
    for subset in itertools.combinations(parts, 3):
        assert combine(subset) == SECRET
    assert combine(parts) == SECRET


def test_maximum_shares() -> None:
    parts = split(b"k", 255, 255)
    assert combine(parts) == b"k"


# -- confidentiality and what plain Shamir does not promise -----------------------
def test_below_threshold_does_not_recover() -> None:
    parts = split(SECRET, 5, 3)
    for subset in itertools.combinations(parts, 2):
        assert combine(subset) != SECRET  # equal with probability 2**-256


def test_shares_differ_between_splits_of_one_secret() -> None:
    assert split(SECRET, 3, 2) != split(SECRET, 3, 2)


def test_tampered_or_mixed_parts_give_wrong_bytes_not_an_error() -> None:
    a, b = split(SECRET, 2, 2), split(SECRET, 2, 2)
    assert combine([a[0], b[1]]) != SECRET
    flipped = bytes([a[0][0] ^ 1]) + a[0][1:]
    assert combine([flipped, a[1]]) != SECRET


# -- bad arguments ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("shares", "threshold"),
    [(0, 0), (2, 1), (1, 2), (2, 3), (3, 0), (256, 2), (256, 256), (-1, -1)],
)
def test_split_rejects_bad_counts(shares: int, threshold: int) -> None:
    with pytest.raises(ShamirError):
        split(SECRET, shares, threshold)


def test_split_rejects_empty_secret() -> None:
    with pytest.raises(ShamirError):
        split(b"", 3, 2)


def test_split_rejects_short_randomness() -> None:
    with pytest.raises(ShamirError):
        split(SECRET, 3, 2, randbytes=lambda n: os.urandom(n - 1))


GOOD = split(SECRET, 3, 2)
BAD_PARTS = {
    "none": [],
    "too short": [b"\x01", b"\x02"],
    "lengths differ": [GOOD[0], GOOD[1][:-2] + GOOD[1][-1:]],
    "x is zero": [GOOD[0], GOOD[1][:-1] + b"\x00"],
    "duplicate x": [GOOD[0], GOOD[1][:-1] + GOOD[0][-1:]],
    "same part twice": [GOOD[0], GOOD[0]],
}


@pytest.mark.parametrize("name", BAD_PARTS)
def test_combine_rejects_malformed_parts(name: str) -> None:
    with pytest.raises(ShamirError):
        combine(BAD_PARTS[name])


@pytest.mark.parametrize("name", BAD_PARTS)
def test_errors_never_carry_share_or_secret_bytes(name: str) -> None:
    with pytest.raises(ShamirError) as caught:
        combine(BAD_PARTS[name])
    shown = str(caught.value) + repr(caught.value)
    for value in [SECRET, *BAD_PARTS[name]]:
        for rendering in (value.hex(), value.hex().upper(), repr(value)[2:-1]):
            assert len(value) < 2 or rendering not in shown


def test_the_key_seal_passes_the_seal_conformance_suite() -> None:
    from keyhive import crypto
    from keyhive.seal import KeySeal
    from keyhive.seal.conformance import exercise_seal

    exercise_seal(KeySeal(crypto.new_key()))
