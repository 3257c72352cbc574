"""uint8 inputs are read as float32(x) / 255 correctly rounded -- the value torch computes
(uint8 -> float32, then / 255) -- for every one of the 256 inputs.

The CUDA kernels do not divide (the IEEE float division compiles to a slow-path subroutine call):
load_input of csrc/masked_perturb/math.h computes, in float32,

    q = RN(x * r)   with r = RN(1 / 255)
    e = RN(x - q * 255)        (one fma)
    result = RN(q + e * r)     (one fma)

test_device_quotient_is_correctly_rounded proves that formula exact for all 256 inputs in exact
rational arithmetic (each RN a round-to-nearest-even to float32); test_uint8_reads_exactly checks
the value each backend runnable here produces (the C++ CPU path divides; on a GPU the CUDA kernels
run the formula above)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from reprogram_ext import masked_perturb
from backend_params import backend_device_params


def _rn32(q: Fraction) -> Fraction:
    """q rounded to the nearest float32 (ties to even); q = 0 or |q| in the normal range."""
    if q == 0:
        return Fraction(0)
    sign, q = (-1 if q < 0 else 1), abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()  # 2^e <= q < 2^(e+1) after the fix-up
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    assert -126 <= e <= 127, q
    scaled = q / Fraction(2) ** (e - 23)  # in [2^23, 2^24): the 24-bit significand with a fraction
    n = scaled.numerator // scaled.denominator
    rem = scaled - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    return sign * n * Fraction(2) ** (e - 23)


def test_rn32_matches_numpy_float32():
    """The exact rounding helper agrees with numpy's float32 on quotients and products."""
    for a, b in [(1, 3), (2, 7), (1, 255), (254, 255), (10**9 + 7, 3 * 10**8), (5, 2 ** 30 + 1)]:
        assert Fraction(float(np.float32(a) / np.float32(b))) == _rn32(Fraction(a, b)), (a, b)
    assert _rn32(Fraction(1) + Fraction(1, 2 ** 24)) == 1  # a tie rounds to even
    assert _rn32(Fraction(1) + Fraction(3, 2 ** 24)) == 1 + Fraction(2, 2 ** 23)


def test_device_quotient_is_correctly_rounded():
    r = _rn32(Fraction(1, 255))
    assert r == Fraction(float(np.float32(1.0) / np.float32(255.0)))  # the float literal 1.0f / 255.0f
    naive_wrong = 0
    for x in range(256):
        want = _rn32(Fraction(x, 255))
        assert Fraction(float(np.float32(x) / np.float32(255))) == want  # torch's value, via numpy float32
        q = _rn32(x * r)
        naive_wrong += q != want
        e = _rn32(x - q * 255)
        assert e == x - q * 255  # the fma's remainder is exact
        assert _rn32(q + e * r) == want, x
    assert naive_wrong > 0  # x * r alone is not enough: the correction step matters


@pytest.mark.parametrize("bd", backend_device_params(include_reference=False))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_uint8_reads_exactly(bd, dtype):
    """All 256 values on a 16x16 canvas (no resize, no mask, zero program, no normalisation): the
    output is the input read, bit for bit: float32(x) / 255, then rounded to delta's dtype."""
    backend, device = bd
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    delta = torch.zeros(1, 16, 16, dtype=dtype)
    out = masked_perturb(x.to(device), delta.to(device), normalize="none", backend=backend)
    expected = (x.float() / 255).to(dtype)
    assert out.dtype == dtype
    assert torch.equal(out.cpu(), expected)
