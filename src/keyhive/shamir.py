"""Shamir's secret sharing over GF(2^8), in OpenBao's share layout.

Each byte of the secret is the constant term of its own random polynomial of
degree ``threshold - 1``.  A share holds every polynomial's value at one point
x, then x itself.  OpenBao ``sdk/helper/shamir/shamir.go`` uses the same layout
and field, so its Combine should accept these shares (not tested against it)::

    share = y[0] y[1] ... y[len(secret) - 1] || x        x: one byte, 1..255

Any ``threshold`` shares give the secret back by Lagrange interpolation at
x = 0.  Fewer give bytes that say nothing about it; plain Shamir shares carry
no integrity check, so wrong or too few parts give wrong bytes, not an error.

Field arithmetic indexes tables by secret bytes and branches on zero.  Python
makes no constant-time guarantees, so this module does not attempt any.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

__all__ = ["ShamirError", "combine", "split"]

MAX_SHARES = 255  # x is one byte and x = 0 would be the secret itself
_POLYNOMIAL = 0x11B  # x^8 + x^4 + x^3 + x + 1, the AES field (FIPS 197, section 4.2)
_GENERATOR = 3  # x + 1 generates the multiplicative group of that field


class ShamirError(ValueError):
    """Bad arguments, or parts that are malformed or do not belong together.

    Messages give counts and positions only, never share or secret bytes.
    """


def _mul_slow(a: int, b: int) -> int:
    """Shift-and-add product in GF(2^8), to build the tables (and check them in tests)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = (a << 1) ^ (_POLYNOMIAL if a & 0x80 else 0)
        b >>= 1
    return product


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Powers of the generator, listed twice so a sum of two logs needs no modulo, and logs."""
    exp, log = [0] * 510, [0] * 256
    value = 1
    for power in range(255):
        exp[power] = exp[power + 255] = value
        log[value] = power
        value = _mul_slow(value, _GENERATOR)
    return tuple(exp), tuple(log)


_EXP, _LOG = _build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    """``a / b`` for ``b != 0``."""
    if a == 0:
        return 0
    return _EXP[_LOG[a] + 255 - _LOG[b]]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Value at ``x`` of the polynomial with ``coefficients``, constant term first (Horner)."""
    y = 0
    for coefficient in reversed(coefficients):
        y = _mul(y, x) ^ coefficient
    return y


def _basis_at_zero(xs: Sequence[int], j: int) -> int:
    """The j-th Lagrange basis polynomial at 0: the product of x_m / (x_m - x_j) over m != j."""
    weight = 1
    for m, x in enumerate(xs):
        if m != j:
            weight = _mul(weight, _div(x, x ^ xs[j]))  # subtraction is XOR in GF(2^8)
    return weight


def split(
    secret: bytes,
    shares: int,
    threshold: int,
    *,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> list[bytes]:
    """Split ``secret`` into ``shares`` parts, any ``threshold`` of which recover it.

    Needs ``2 <= threshold <= shares <= 255``, or 1-of-1 (the share is then the
    secret and its x byte).  Share i (from 0) has x-coordinate i + 1.
    """
    if not secret:
        raise ShamirError("cannot split an empty secret")
    if not (threshold == shares == 1 or 2 <= threshold <= shares <= MAX_SHARES):
        raise ShamirError(
            f"threshold {threshold} and shares {shares} must satisfy "
            f"2 <= threshold <= shares <= {MAX_SHARES}, or both be 1"
        )
    degree = threshold - 1
    randomness = randbytes(len(secret) * degree)
    if len(randomness) != len(secret) * degree:
        raise ShamirError("randbytes returned the wrong number of bytes")
    polynomials = [
        (byte, *randomness[i * degree : (i + 1) * degree]) for i, byte in enumerate(secret)
    ]
    return [
        bytes(_evaluate(polynomial, x) for polynomial in polynomials) + bytes([x])
        for x in range(1, shares + 1)
    ]


def combine(parts: Sequence[bytes]) -> bytes:
    """Recover the secret from at least ``threshold`` parts of one :func:`split`.

    One part alone returns its y bytes, which is the secret for a 1-of-1 split.
    """
    if not parts:
        raise ShamirError("no parts to combine")
    length = len(parts[0])
    if length < 2:
        raise ShamirError("a part needs at least one secret byte and the x-coordinate byte")
    if any(len(part) != length for part in parts):
        raise ShamirError("parts differ in length")
    xs = [part[-1] for part in parts]
    if 0 in xs:
        raise ShamirError(f"part {xs.index(0)} has x-coordinate 0")
    if len(set(xs)) != len(xs):
        raise ShamirError("two parts have the same x-coordinate")
    secret = bytearray(length - 1)
    for j, part in enumerate(parts):
        weight = _basis_at_zero(xs, j)
        for i in range(length - 1):
            secret[i] ^= _mul(part[i], weight)
    return bytes(secret)
