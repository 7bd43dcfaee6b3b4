"""cos(π·t/d) for integer t and d, from exactly rounded IEEE operations only (for the ``dct`` scheme).

numpy's ``cos`` gives different last bits on different SIMD paths, so it is never used on generated
values. The argument is a rational multiple of π, which allows an *exact* range reduction in
integers; only the final angle in [0, π/4] is a float. The order of operations (docs/determinism.md):

1. u = t mod 2d (integers; cos has period 2d in t).
2. u > d → u = 2d − u            (cos(2π − x) = cos x)
3. 2u > d → u = d − u, sign = −1  (cos(π − x) = −cos x); now 0 ≤ u ≤ d/2, x = πu/d ∈ [0, π/2].
4. a = 2u; if 4u > d: a = d − 2u and the sine is used (cos x = sin(π/2 − x)); 0 ≤ a ≤ d/2.
5. y = a · PI_OVER_2D with PI_OVER_2D = fl(fl(π) / (2d)); y ∈ [0, π/4] (one rounding).
6. z = y·y; cos y = Horner in z of the Taylor coefficients 1/(2k)! (k = 11 … 0);
   sin y = y·(Horner in z of (−1)^k/(2k+1)! (k = 10 … 0)); the truncation error is below 1e-24.
7. result = sign · (cos y or sin y).

Accuracy: a few ulp (the rounding of π/(2d) and of a·π/(2d) dominates); the bits are fixed.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Horner order: highest power first. Coefficients are the correctly rounded rationals.
COS_COEFFS = tuple(float(Fraction((-1) ** k, math.factorial(2 * k))) for k in range(11, -1, -1))
SIN_COEFFS = tuple(float(Fraction((-1) ** k, math.factorial(2 * k + 1))) for k in range(10, -1, -1))
MAX_DENOMINATOR = 1 << 40  # 2d and the integer a stay exact in int64 and in float64


def _horner(coefficients: tuple[float, ...], z: F64) -> F64:
    acc = np.full(z.shape, coefficients[0])
    for coefficient in coefficients[1:]:
        np.multiply(acc, z, out=acc)
        np.add(acc, coefficient, out=acc)
    return acc


def cos_pi_ratio(t: I64, d: int) -> F64:
    """cos(π·t/d) for integers t ≥ 0 (any int64) and 1 ≤ d ≤ 2⁴⁰, elementwise; see the module docstring."""
    if not 1 <= d <= MAX_DENOMINATOR:
        raise ValueError(f"d must be in [1, 2**40], got {d}")
    u = np.mod(np.asarray(t, dtype=np.int64), 2 * d)
    u = np.where(u > d, 2 * d - u, u)
    negative = 2 * u > d
    u = np.where(negative, d - u, u)
    use_sine = 4 * u > d
    a = np.where(use_sine, d - 2 * u, 2 * u)
    y = a.astype(np.float64) * (math.pi / (2 * d))
    z = y * y
    cosine = _horner(COS_COEFFS, z)
    sine = _horner(SIN_COEFFS, z)
    np.multiply(sine, y, out=sine)
    result: F64 = np.where(use_sine, sine, cosine)
    np.negative(result, out=result, where=negative)
    return result
