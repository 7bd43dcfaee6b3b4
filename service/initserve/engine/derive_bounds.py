"""Overflow rules of derive actions: the largest |x| an action can write, known before any byte is read.

Every source float tensor's largest finite |x| (M) and count of non-finite values are in its checkpoint's
manifest (:mod:`.magnitudes`). From them and the rule's fields each action's output has an upper bound;
a request is refused (422 naming the field) when that bound would round to infinity in the target dtype
or overflow the float64 (or, for ``channel_adapt``, float32) arithmetic on the way. The bounds are upper
bounds of exact arithmetic, widened by the rounding error of the few IEEE operations that produce a value
(:data:`F64_SLACK` per float64 operation), so an accepted request never writes an infinity; they are
exact for conversions, and within the listed factors of the true maximum for the arithmetic actions.
Formulas: docs/pretrained.md, "Overflow".
"""

from __future__ import annotations

import math

import numpy as np

from .dtypes import DTYPES

F64_SLACK = 2.0**-52  # relative rounding error allowed per float64 operation (2 ulps of 2^-53)
F32_SLACK = 2.0**-23  # per float32 operation
F64_MAX = float(np.finfo(np.float64).max)


def widened(bound: float, operations: int, slack: float = F64_SLACK) -> float:
    """``bound`` grown by the rounding error of ``operations`` rounded operations (each ≤ ``slack`` relative)."""
    return bound * (1.0 + operations * slack)


def fits(bound: float, dtype: str) -> bool:
    """True iff every |x| ≤ ``bound`` rounds to a finite ``dtype`` value (float64: ``bound`` is finite)."""
    return math.isfinite(bound) and bound < DTYPES[dtype].overflow


def beyond(dtype: str) -> str:
    """How the rule reads: ``beyond float16's largest finite 65504 (values from 65520 round to infinity)``."""
    info = DTYPES[dtype]
    if not math.isfinite(info.overflow):
        return f"beyond {dtype}'s largest finite {info.max_finite:.6g}"
    return f"beyond {dtype}'s largest finite {info.max_finite:.6g} (values from {info.overflow:.6g} round to infinity)"


def mean_rows_bound(max_abs: float, noise: float, z_reach: float) -> float:
    """|μ + noise·σ·z| ≤ M + noise·M·max|z|: |μ| ≤ M and the population std σ ≤ √(E[x²]) ≤ M."""
    return widened(max_abs, 8) + widened(noise * max_abs * z_reach, 8)


def mean_rows_sums(max_abs: float, rows: int, noise: float) -> float:
    """The largest partial row sum the float64 arithmetic meets: V·M, or V·(2M)² for the squared deviations."""
    total = widened(rows * max_abs, 2)
    if noise > 0:
        total = max(total, widened(rows * (2.0 * max_abs) * (2.0 * max_abs), 4))
    return total


def shrink_perturb_terms(max_abs: float, shrink: float, noise: float, eps_reach: float) -> tuple[float, float]:
    """The two terms of |λθ + σε| ≤ λ·M + σ·max|ε|, each widened by its rounded product."""
    return widened(shrink * max_abs, 2), widened(noise * eps_reach, 2)


def channel_sum_bound(max_abs: float, summed: int, in_float32: bool) -> float:
    """|Σ of ``summed`` channels| ≤ summed·M, widened by the rounding of its summed − 1 additions."""
    return widened(summed * max_abs, summed + 1, F32_SLACK if in_float32 else F64_SLACK)


def channel_repeat_bound(max_abs: float, base_chans: int, in_chans: int, in_float32: bool) -> float:
    """|S · fl(base/in_chans)| ≤ M · base/in_chans, widened by the rounded scale and product."""
    return widened(max_abs * base_chans / in_chans, 3, F32_SLACK if in_float32 else F64_SLACK)


def soup_bound(max_abs: float, count: int) -> float:
    """Σ c_k·S_k with c_k ≥ 0, Σ c_k = 1 is a convex combination: ≤ max_k M_k, widened by its 3K operations."""
    return widened(max_abs, 3 * count + 2)
