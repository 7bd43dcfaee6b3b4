"""Normal quantile and CDF built only from exactly rounded IEEE operations.

numpy's ``log``/``exp``/``sin`` give different last bits on different SIMD paths, so they are never
used on generated values. Everything here is + - × ÷ sqrt, comparisons, ``frexp`` and bit operations,
applied in the fixed order written below; that order is part of the algorithm (docs/determinism.md).
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# --- natural log on (0, 1] ---------------------------------------------------------------------
# log(m * 2**e) = e*ln2 + 2*atanh(s), s = (m-1)/(m+1), m in [sqrt(1/2), sqrt(2)), |s| <= 0.1716.
# 2*atanh(s) = 2*s*(1 + s²/3 + s⁴/5 + ... + s²²/23); the next term is below 2e-20 relative.
LN2_HI = 6.93147180369123816490e-01  # 0x3FE62E42FEE00000: trailing zeros make e*LN2_HI exact
LN2_LO = 1.90821492927058770002e-10  # 0x3DEA39EF35793C76: ln 2 - LN2_HI
SQRT_HALF = 0.70710678118654752440  # 0x3FE6A09E667F3BCD
ATANH_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(11, 0, -1))  # 1/23, 1/21, ..., 1/3 (then 1)


def log_exact_ops(x: F64) -> F64:
    """ln(x) for 0 < x <= 1, accurate to a few ulp, from exact operations only."""
    result = np.array(x, dtype=np.float64)
    n = result.shape[0]
    _log_in_place(result, np.empty(n, dtype=np.int32), np.empty(n, dtype=bool), np.empty(n), np.empty(n))
    return result


def _log_in_place(r: F64, e: npt.NDArray[np.int32], low: npt.NDArray[np.bool_], s: F64, z: F64) -> None:
    """r ← ln r, using the scratch arrays e, low, s, z (same length as r). The order of operations:
    (m, e) = frexp(r); m < √½ → (2m, e − 1); s = (m−1)/(m+1); z = s²; P = Horner in z of 1/23 … 1/3, 1;
    ln r = e·LN2_HI + (e·LN2_LO + 2·(s·P))."""
    np.frexp(r, out=(r, e))  # r becomes the mantissa m in [0.5, 1)
    np.less(r, SQRT_HALF, out=low)
    np.multiply(r, 2.0, out=r, where=low)
    np.subtract(e, low, out=e)
    np.subtract(r, 1.0, out=s)
    np.add(r, 1.0, out=z)
    np.divide(s, z, out=s)  # s = (m − 1)/(m + 1)
    np.multiply(s, s, out=z)  # z = s²
    np.multiply(z, ATANH_COEFFS[0], out=r)
    np.add(r, ATANH_COEFFS[1], out=r)
    for coefficient in ATANH_COEFFS[2:]:
        np.multiply(r, z, out=r)
        np.add(r, coefficient, out=r)
    np.multiply(r, z, out=r)
    np.add(r, 1.0, out=r)  # P
    np.multiply(s, r, out=r)
    np.multiply(r, 2.0, out=r)  # 2·(s·P)
    np.copyto(s, e, casting="unsafe")  # e as binary64
    np.multiply(s, LN2_LO, out=z)
    np.add(z, r, out=z)  # e·LN2_LO + 2·(s·P)
    np.multiply(s, LN2_HI, out=s)
    np.add(s, z, out=r)


# --- normal quantile: Wichura (1988), algorithm AS 241 (PPND16), relative accuracy ~1e-16 --------
A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)
CENTRAL_LIMIT = 0.425
CENTRAL_R0 = 0.180625  # 0.425²
TAIL_SPLIT = 5.0
TAIL_SHIFT_NEAR = 1.6


def _horner(coefficients: tuple[float, ...], r: F64) -> F64:
    """c0 + c1 r + ... + c7 r⁷, evaluated as ((((c7·r + c6)·r + ...)·r + c1)·r + c0)."""
    acc = coefficients[-1] * r
    for coefficient in coefficients[-2:0:-1]:
        acc = (acc + coefficient) * r
    result: F64 = acc + coefficients[0]
    return result


_CENTRAL_STACK = np.array([A, B], dtype=np.float64).T.copy()  # row k: (a_k, b_k)


class QuantileWorkspace:
    """Reusable buffers for :func:`normal_quantile_into` on up to ``size`` elements.

    The transform allocates nothing per call: 256 KiB temporaries would otherwise cross glibc's
    mmap threshold and page-fault on every operation, which costs more than the arithmetic.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.q = np.empty(size)
        self.r = np.empty(size)
        self.acc = np.empty((2, size))
        self.tmp = np.empty(size)
        self.mask = np.empty(size, dtype=bool)
        # the tail branch (|q| > 0.425, ~15% of elements)
        self.tail_p = np.empty(size)
        self.tail_r = np.empty(size)
        self.tail_s = np.empty(size)
        self.tail_z = np.empty(size)
        self.tail_e = np.empty(size, dtype=np.int32)
        self.tail_lower = np.empty(size, dtype=bool)
        self.tail_low = np.empty(size, dtype=bool)
        self.tail_acc = np.empty((2, size))


def normal_quantile_into(p: F64, out: F64, work: QuantileWorkspace) -> F64:
    """Φ⁻¹(p) for 0 < p < 1 into ``out`` (which may be ``p``), allocating nothing.

    Numerator and denominator of the central rational function are evaluated together as one
    (2, n) Horner recurrence: each element still sees exactly the scalar operation sequence.
    """
    n = p.shape[0]
    q, r, acc, tmp, mask = work.q[:n], work.r[:n], work.acc[:, :n], work.tmp[:n], work.mask[:n]
    np.subtract(p, 0.5, out=q)
    np.multiply(q, q, out=r)
    np.subtract(CENTRAL_R0, r, out=r)
    np.multiply(_CENTRAL_STACK[7][:, None], r, out=acc)
    for k in range(6, 0, -1):
        np.add(acc, _CENTRAL_STACK[k][:, None], out=acc)
        np.multiply(acc, r, out=acc)
    np.add(acc, _CENTRAL_STACK[0][:, None], out=acc)
    np.abs(q, out=tmp)
    np.greater(tmp, CENTRAL_LIMIT, out=mask)
    index = np.flatnonzero(mask)
    tail = _tail_quantile_into(p, q, index, work) if index.size else None
    np.multiply(q, acc[0], out=out)
    np.divide(out, acc[1], out=out)
    if tail is not None:
        out[index] = tail
    return out


_TAIL_NEAR_STACK = np.array([C, D], dtype=np.float64).T.copy()  # row k: (c_k, d_k)


def _tail_quantile_into(p: F64, q: F64, index: npt.NDArray[np.intp], work: QuantileWorkspace) -> F64:
    """The tail branch (|q| > 0.425) for ``p[index]``, in workspace buffers: r = √(−ln min(p, 1−p));
    r ≤ 5: C(r−1.6)/D(r−1.6), else E(r−5)/F(r−5); negated where q < 0."""
    n = index.shape[0]
    lower, low = work.tail_lower[:n], work.tail_low[:n]
    r, s, z, e = work.tail_r[:n], work.tail_s[:n], work.tail_z[:n], work.tail_e[:n]
    tail_p = work.tail_p[:n]
    np.take(q, index, out=s)
    np.less(s, 0.0, out=lower)
    np.take(p, index, out=tail_p)
    np.subtract(1.0, tail_p, out=r)
    np.copyto(r, tail_p, where=lower)  # r = p if q < 0 else 1 − p
    _log_in_place(r, e, low, s, z)
    np.negative(r, out=r)
    np.sqrt(r, out=r)
    # near branch for every tail element; the rare far ones (r > 5, p < 1.4e-11) are redone below
    np.subtract(r, TAIL_SHIFT_NEAR, out=s)
    stack = work.tail_acc[:, :n]
    np.multiply(_TAIL_NEAR_STACK[7][:, None], s, out=stack)
    for k in range(6, 0, -1):
        np.add(stack, _TAIL_NEAR_STACK[k][:, None], out=stack)
        np.multiply(stack, s, out=stack)
    np.add(stack, _TAIL_NEAR_STACK[0][:, None], out=stack)
    np.divide(stack[0], stack[1], out=z)
    far = np.flatnonzero(r > TAIL_SPLIT)
    if far.size:
        r_far = r[far] - TAIL_SPLIT
        z[far] = _horner(E, r_far) / _horner(F, r_far)
    np.negative(z, out=z, where=lower)
    return z


def normal_quantile(p: F64) -> F64:
    """Φ⁻¹(p) for 0 < p < 1 (AS 241, in the order documented in docs/determinism.md), fresh buffers."""
    return normal_quantile_into(p, np.empty_like(p), QuantileWorkspace(p.shape[0]))


# --- normal CDF for scalars (truncation bounds) ----------------------------------------------------
_PRECISION = 60
_PI = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863")
_SERIES_LIMIT = decimal.Decimal(3)
_CONTINUED_FRACTION_TERMS = 400


def normal_cdf(x: float) -> float:
    """Φ(x) rounded to the nearest double, from a 60-digit decimal evaluation.

    Python's decimal arithmetic (exp, sqrt, + - × ÷) is correctly rounded and platform independent;
    the series/continued-fraction truncation error is below 1e-50, so the result is the correctly
    rounded Φ(x) except for values within 1e-50 of a rounding boundary.
    """
    if math.isinf(x):
        return 0.0 if x < 0 else 1.0
    with decimal.localcontext() as context:
        context.prec = _PRECISION
        value = _cdf_decimal(decimal.Decimal(x))
    return float(value)


def _cdf_decimal(x: decimal.Decimal) -> decimal.Decimal:
    return _erfc(-x / decimal.Decimal(2).sqrt()) / 2


def _pdf_decimal(x: decimal.Decimal) -> decimal.Decimal:
    return (-x * x / 2).exp() / (2 * _PI).sqrt()


def truncated_normal_moments(alpha: float, beta: float) -> tuple[float, float]:
    """Mean and standard deviation of N(0, 1) conditioned on [alpha, beta] (either may be infinite).

    Statistics only (never generated bytes). Evaluated in 60-digit decimal on the interval mirrored
    into the lower half when alpha ≥ 0, so neither the mass Φ(β) − Φ(α) nor the variance
    1 + (αφ(α) − βφ(β))/Z − shift² loses its digits to cancellation, even 30σ into a tail.
    """
    mirrored = alpha >= 0.0
    if mirrored:
        alpha, beta = -beta, -alpha
    with decimal.localcontext() as context:
        context.prec = _PRECISION
        a = None if math.isinf(alpha) else decimal.Decimal(alpha)
        b = None if math.isinf(beta) else decimal.Decimal(beta)
        cdf_a = decimal.Decimal(0) if a is None else _cdf_decimal(a)
        cdf_b = decimal.Decimal(1) if b is None else _cdf_decimal(b)
        pdf_a = decimal.Decimal(0) if a is None else _pdf_decimal(a)
        pdf_b = decimal.Decimal(0) if b is None else _pdf_decimal(b)
        mass = cdf_b - cdf_a
        shift = (pdf_a - pdf_b) / mass
        a_term = decimal.Decimal(0) if a is None else a * pdf_a
        b_term = decimal.Decimal(0) if b is None else b * pdf_b
        variance = 1 + (a_term - b_term) / mass - shift * shift
        mean = -shift if mirrored else shift
        return float(mean), float(max(variance, decimal.Decimal(0)).sqrt())


def _erfc(t: decimal.Decimal) -> decimal.Decimal:
    if t < 0:
        return 2 - _erfc(-t)
    if t < _SERIES_LIMIT:
        return 1 - _erf_series(t)
    return _erfc_continued_fraction(t)


def _erf_series(t: decimal.Decimal) -> decimal.Decimal:
    """erf(t) = 2/√π Σ (-1)ⁿ t^(2n+1) / (n! (2n+1))."""
    total = decimal.Decimal(0)
    term = t  # (-1)^n t^(2n+1) / n!
    n = 0
    epsilon = decimal.Decimal(10) ** -(_PRECISION + 5)
    while True:
        contribution = term / (2 * n + 1)
        total += contribution
        if abs(contribution) < epsilon:
            break
        n += 1
        term = -term * t * t / n
    return 2 * total / _PI.sqrt()


def _erfc_continued_fraction(t: decimal.Decimal) -> decimal.Decimal:
    """erfc(t) = exp(-t²)/√π · 1/(t + (1/2)/(t + 1/(t + (3/2)/(t + ...)))) for t >= 3."""
    denominator = t
    for k in range(_CONTINUED_FRACTION_TERMS, 0, -1):
        denominator = t + decimal.Decimal(k) / 2 / denominator
    return (-t * t).exp() / _PI.sqrt() / denominator
