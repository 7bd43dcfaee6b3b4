"""The exact-operation building blocks: quantile, log, CDF, and the one rounding rule per dtype."""

from __future__ import annotations

import struct
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from initserve.engine.dtypes import DTYPES, bfloat16_bits_to_float64, cast_into, float64_to_bfloat16_bits
from initserve.engine.special import log_exact_ops, normal_cdf, normal_quantile
from scipy import special as scipy_special


def _probabilities() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.concatenate(
        [
            rng.random(200_000),
            10.0 ** -rng.uniform(0, 300, 20_000),
            1.0 - 10.0 ** -rng.uniform(1, 15.9, 20_000),
            [2.0**-53, 0.5 + 2**-53, 1 - 2.0**-53],
        ]
    )


def test_quantile_matches_scipy_to_a_few_ulp_everywhere() -> None:
    p = _probabilities()
    z, reference = normal_quantile(p), scipy_special.ndtri(p)
    relative = np.abs(z - reference) / np.maximum(np.abs(reference), 1e-300)
    assert relative.max() < 5e-15


def test_quantile_is_odd_about_one_half() -> None:
    k = np.random.default_rng(2).integers(0, 2**52, 100_000, dtype=np.uint64)
    p = (2 * k + 1).astype(np.float64) * 2.0**-53  # the values uniform_open can take
    assert np.array_equal(normal_quantile(p), -normal_quantile(1.0 - p))


def test_log_matches_numpy_log_to_an_ulp_or_two() -> None:
    x = _probabilities()
    x = x[x <= 1.0]
    reference = np.log(x)
    nonzero = reference != 0
    assert np.max(np.abs(log_exact_ops(x)[nonzero] - reference[nonzero]) / np.abs(reference[nonzero])) < 5e-16


@pytest.mark.parametrize("x", [-37.5, -30.0, -8.3, -5.0, -2.0, -1.0, -0.1, 0.0, 0.3, 2.0, 3.0, 5.0, 8.0, 9.0])
def test_cdf_is_correctly_rounded(x: float) -> None:
    mpmath.mp.dps = 60
    assert normal_cdf(x) == float(mpmath.ncdf(mpmath.mpf(x)))


def _nearest(value: float, grid: list[float], bits: list[int]) -> float:
    """Round-to-nearest-even onto a sorted grid of non-negative representable values, exactly."""
    import bisect

    magnitude = abs(value)
    i = bisect.bisect_left(grid, magnitude)
    if i == 0:
        result = grid[0]
    else:
        lower, upper = grid[i - 1], grid[min(i, len(grid) - 1)]
        below, above = Fraction(magnitude) - Fraction(lower), Fraction(upper) - Fraction(magnitude)
        result = lower if below < above or (below == above and bits[i - 1] % 2 == 0) else upper
    return -result if value < 0 else result


def _tie_cases(grid_values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mids = (grid_values[1:] + grid_values[:-1]) / 2
    chosen = mids[rng.choice(mids.size, 4000)]
    return np.concatenate([chosen, np.nextafter(chosen, 0), np.nextafter(chosen, np.inf), -chosen])


def test_bfloat16_is_one_round_to_nearest_even_of_the_double() -> None:
    rng = np.random.default_rng(5)
    bits = np.arange(0, 0x7F80, dtype=np.uint32)
    grid = (bits << 16).view(np.float32).astype(np.float64)
    values = np.concatenate([_tie_cases(grid, rng), rng.standard_normal(5000) * np.exp2(rng.integers(-140, 120, 5000))])
    got = bfloat16_bits_to_float64(float64_to_bfloat16_bits(values))
    grid_list, bits_list = grid.tolist(), bits.tolist()
    expected = [_nearest(float(v), grid_list, bits_list) for v in values]
    assert got.tolist() == expected


def test_bfloat16_differs_from_rounding_through_float32() -> None:
    # 1 + 2^-8 + 2^-30: float32 first rounds it to the tie 1 + 2^-8, which then rounds to even (1.0);
    # one direct rounding sees it above the tie and rounds up. Double rounding would be wrong.
    value = np.array([1 + 2.0**-8 + 2.0**-30])
    direct = bfloat16_bits_to_float64(float64_to_bfloat16_bits(value))[0]
    via_float32 = float(value.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)[0])
    assert direct == 1 + 2.0**-7 and via_float32 == 1.0


def test_bfloat16_agrees_with_ml_dtypes_for_float32_inputs() -> None:
    values = np.random.default_rng(8).standard_normal(100_000).astype(np.float32)
    ours = float64_to_bfloat16_bits(values.astype(np.float64))
    theirs = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(ours, theirs)


def test_bfloat16_keeps_the_sign_of_zero() -> None:
    assert float64_to_bfloat16_bits(np.array([-0.0, 0.0, -1e-45, 1e-45])).tolist() == [0x8000, 0, 0x8000, 0]


def test_float16_cast_is_one_round_to_nearest_even_of_the_double() -> None:
    rng = np.random.default_rng(6)
    bits = np.arange(0, 0x7C00, dtype=np.uint16)
    grid = bits.view(np.float16).astype(np.float64)
    values = np.concatenate([_tie_cases(grid, rng), rng.standard_normal(5000) * np.exp2(rng.integers(-26, 15, 5000))])
    values = values[np.abs(values) < 65504]
    out = np.empty(values.size, dtype=DTYPES["float16"].storage)
    cast_into(values, out, DTYPES["float16"])
    grid_list, bits_list = grid.tolist(), bits.tolist()
    assert out.astype(np.float64).tolist() == [_nearest(float(v), grid_list, bits_list) for v in values]


def test_float32_cast_matches_the_c_conversion() -> None:
    values = np.random.default_rng(9).standard_normal(20_000) * 1e3
    out = np.empty(values.size, dtype=DTYPES["float32"].storage)
    cast_into(values, out, DTYPES["float32"])
    assert out.tobytes() == b"".join(struct.pack("<f", float(v)) for v in values)
