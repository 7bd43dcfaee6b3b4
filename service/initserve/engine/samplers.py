"""Samplers turn element words (or element indices) into float64 values.

Elementwise samplers compute element ``i`` from its own word (or index) alone, so any range of a
tensor can be produced by itself. Whole-tensor samplers (orthogonal, sparse) need the whole tensor.
All arithmetic on generated values uses exact IEEE operations in the order written here.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeGuard

import numpy as np
import numpy.typing as npt

from .cores import default_threads
from .dtypes import DTYPES
from .householder import haar_q
from .layout import RunLayout
from .rng import STREAM_SPARSE_MASK
from .special import QuantileWorkspace, normal_cdf, normal_quantile_into, truncated_normal_moments

if TYPE_CHECKING:  # the kernels module imports this one
    from .kernels import Kernel

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]

TWO_POW_M53 = 2.0**-53
P_FLOOR = 2.0**-1074  # smallest positive double: keeps p > 0 in the truncated transform
P_CEIL = 1.0 - 2.0**-53  # largest double below 1
NORMAL_MAX_ABS_Z = 8.3  # |Φ⁻¹(p)| < 8.3 for every p the 52-bit open uniform can take
TRUNCATED_STD_CORRECTION = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]
MIN_TRUNCATED_MASS = 1e-300


@dataclass(frozen=True)
class Moments:
    """Exact law of the values (before the cast): mean, std and support [low, high] (None = unbounded)."""

    mean: float
    std: float
    low: float | None
    high: float | None


class ElementwiseSampler(Protocol):
    """``values(words, start, count)``: elements start..start+count-1 from their words. The words
    array is the caller's fresh array and may be overwritten; the result may be a reused buffer,
    valid until the next call on the same thread."""

    uses_words: bool

    def values(self, words: U64 | None, start: int, count: int) -> F64: ...

    def moments(self) -> Moments: ...

    def max_abs(self) -> float: ...


class WholeSampler(Protocol):
    """``whole(key, kernel)``: the whole tensor, flat, in float64; random bits through ``kernel``."""

    def whole(self, key: int, kernel: Kernel) -> F64: ...

    def moments(self) -> Moments: ...

    def max_abs(self) -> float: ...


def is_elementwise(sampler: ElementwiseSampler | WholeSampler) -> TypeGuard[ElementwiseSampler]:
    """Elementwise samplers have ``values``; whole-tensor ones have ``whole``."""
    return hasattr(sampler, "values")


def uniform_01(words: U64) -> F64:
    """u = (w >> 11) · 2⁻⁵³, in [0, 1): the 53 high bits of the word."""
    return (words >> np.uint64(11)).astype(np.float64) * TWO_POW_M53


def uniform_open(words: U64, out: F64 | None = None, *, consume: bool = False) -> F64:
    """u = ((w >> 11) | 1) · 2⁻⁵³ = (2k + 1) · 2⁻⁵³ with k = w >> 12, in (0, 1) and symmetric about ½.

    ``consume=True`` lets it overwrite ``words`` instead of allocating two temporaries.
    """
    odd = words if consume else np.empty_like(words)
    np.right_shift(words, np.uint64(11), out=odd)
    np.bitwise_or(odd, np.uint64(1), out=odd)
    result: F64 = np.multiply(odd, TWO_POW_M53, out=out)
    return result


@dataclass(frozen=True)
class Constant:
    """x = value."""

    value: float
    uses_words = False

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        return np.full(count, self.value, dtype=np.float64)

    def moments(self) -> Moments:
        return Moments(self.value, 0.0, self.value, self.value)

    def max_abs(self) -> float:
        return abs(self.value)


@dataclass(frozen=True)
class Uniform:
    """x = low + (high − low) · u, u = uniform_01(w); support [low, high] (high only through rounding)."""

    low: float
    high: float
    uses_words = True

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        assert words is not None
        width = self.high - self.low
        result: F64 = self.low + width * uniform_01(words)
        return result

    def moments(self) -> Moments:
        return Moments((self.low + self.high) / 2, (self.high - self.low) / math.sqrt(12.0), self.low, self.high)

    def max_abs(self) -> float:
        return max(abs(self.low), abs(self.high))


class TruncatedNormal:
    """N(mean, std²) conditioned on [low, high] (infinite bounds: the plain normal), by inverse CDF.

    α = (low − mean)/std, β = (high − mean)/std. If α ≥ 0 the interval is mirrored to [−β, −α] and
    the result negated, so tail probabilities stay small numbers with full relative precision.
    p_lo = Φ(α), p_hi = Φ(β), w = p_hi − p_lo; per element: p = p_lo + w·u (u = uniform_open),
    clamped to [2⁻¹⁰⁷⁴, 1 − 2⁻⁵³] when the interval is finite; z = clamp(Φ⁻¹(p), α, β) (negated if
    mirrored); x = clamp(mean + std·z, low, high). For an untruncated normal p = u and the clamps are
    no-ops, so x = mean + std·Φ⁻¹(u).
    """

    uses_words = True

    def __init__(self, mean: float, std: float, low: float = -math.inf, high: float = math.inf) -> None:
        self.mean, self.std, self.low, self.high = mean, std, low, high
        alpha, beta = (low - mean) / std, (high - mean) / std
        self.mirrored = alpha >= 0.0
        if self.mirrored:
            alpha, beta = -beta, -alpha
        self.alpha, self.beta = alpha, beta
        self.p_low, self.p_high = normal_cdf(alpha), normal_cdf(beta)
        self.width = self.p_high - self.p_low
        self.truncated = not (math.isinf(alpha) and math.isinf(beta))

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        assert words is not None
        work = self._workspace(count)
        z = uniform_open(words, out=work.z[:count], consume=True)  # p, transformed in place below
        if self.truncated:
            np.multiply(z, self.width, out=z)
            np.add(z, self.p_low, out=z)  # p = p_low + w·u
            np.clip(z, P_FLOOR, P_CEIL, out=z)
        normal_quantile_into(z, z, work)
        if self.truncated:
            np.clip(z, self.alpha, self.beta, out=z)
        if self.mirrored:
            np.negative(z, out=z)
        np.multiply(z, self.std, out=z)
        np.add(z, self.mean, out=z)  # x = mean + std·z
        if self.truncated:
            np.clip(z, self.low, self.high, out=z)
        return z

    @staticmethod
    def _workspace(count: int) -> _NormalWorkspace:
        """This thread's scratch buffers (see ``_SCRATCH``)."""
        work: _NormalWorkspace | None = getattr(_SCRATCH, "normal", None)
        if work is None or work.size < count:
            work = _NormalWorkspace(count)
            _SCRATCH.normal = work
        return work

    def moments(self) -> Moments:
        if not self.truncated:
            return Moments(self.mean, self.std, None, None)
        a, b = (self.low - self.mean) / self.std, (self.high - self.mean) / self.std
        shift, spread = truncated_normal_moments(a, b)
        return Moments(
            self.mean + self.std * shift,
            self.std * spread,
            None if math.isinf(self.low) else self.low,
            None if math.isinf(self.high) else self.high,
        )

    def max_abs(self) -> float:
        reach = abs(self.mean) + NORMAL_MAX_ABS_Z * self.std
        return min(reach, max(abs(self.low), abs(self.high)))


# Per-thread scratch memory for the normal transform, reused across calls and specs. It carries no
# values from one call to the next (every buffer is written before it is read), so it cannot affect
# results; it exists because fresh scratch for every request costs ~2 ms of page faults.
_SCRATCH = threading.local()


class _NormalWorkspace(QuantileWorkspace):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.z = np.empty(size)


@dataclass(frozen=True)
class Eye:
    """x[i, j] = gain if i == j else 0, for a (rows, cols) matrix; element k is at (k div cols, k mod cols)."""

    rows: int
    cols: int
    gain: float
    uses_words = False

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        index = np.arange(start, start + count, dtype=np.int64)
        on_diagonal = index // self.cols == index % self.cols
        return np.where(on_diagonal, self.gain, 0.0)

    def moments(self) -> Moments:
        return _indicator_moments(min(self.rows, self.cols), self.rows * self.cols, self.gain)

    def max_abs(self) -> float:
        return abs(self.gain)


@dataclass(frozen=True)
class Dirac:
    """torch.nn.init.dirac_: for g < groups, d < min(out/groups, in): x[g·opg + d, d, k₁//2, …] = 1.

    ``out_axis``/``in_axis`` say where the out and in channels are (torch layout (out, in, *k): 0, 1;
    keras layout (*k, in, out): rank−1, rank−2); the spatial axes are the others, in order.
    """

    shape: tuple[int, ...]
    groups: int
    out_axis: int
    in_axis: int
    uses_words = False

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        coords = np.unravel_index(np.arange(start, start + count, dtype=np.int64), self.shape)
        out_channels = self.shape[self.out_axis]
        per_group = out_channels // self.groups
        out_c, in_c = coords[self.out_axis], coords[self.in_axis]
        hit = (out_c % per_group == in_c) & (in_c < min(per_group, self.shape[self.in_axis]))
        for axis, size in enumerate(self.shape):
            if axis not in (self.out_axis, self.in_axis):
                hit &= coords[axis] == size // 2
        result: F64 = hit.astype(np.float64)
        return result

    def moments(self) -> Moments:
        ones = self.groups * min(self.shape[self.out_axis] // self.groups, self.shape[self.in_axis])
        return _indicator_moments(ones, math.prod(self.shape), 1.0)

    def max_abs(self) -> float:
        return 1.0


# Moments of a scheme linear in one scalar (a gain) square it on the way (variance = E[x²] − mean²), which
# overflows float64 from |gain| ≈ 1.34e154 although the std itself is finite. Beyond SCALED_FROM the
# moments are computed at gain·2⁻ᵉ and scaled back by 2ᵉ: power-of-two scaling is exact, so the figures
# are what unbounded-exponent arithmetic gives; below it nothing changes (the same bits as ever).
SCALED_FROM = 2.0**400


def scale_moments(moments: Moments, exponent: int) -> Moments:
    """``moments`` × 2^exponent (exact): mean, std and the support bounds."""

    def scaled(value: float | None) -> float | None:
        return None if value is None else math.ldexp(value, exponent)

    return Moments(
        math.ldexp(moments.mean, exponent), math.ldexp(moments.std, exponent), *map(scaled, (moments.low, moments.high))
    )


def scaling_exponent(magnitude: float) -> int:
    """The power of two in whose units figures of values up to ``magnitude`` are computed: frexp's exponent
    past :data:`SCALED_FROM`, else 0 (nothing scaled; also for inf and NaN)."""
    return math.frexp(magnitude)[1] if math.isfinite(magnitude) and abs(magnitude) > SCALED_FROM else 0


def linear_moments(gain: float, moments_at: Callable[[float], Moments]) -> Moments:
    """``moments_at(gain)`` for moments linear in ``gain`` (mean ∝ gain, std ∝ |gain|), without overflowing
    the squares for a huge but finite gain (see :data:`SCALED_FROM`)."""
    exponent = scaling_exponent(gain)
    if not exponent:
        return moments_at(gain)
    return scale_moments(moments_at(math.ldexp(gain, -exponent)), exponent)


def _indicator_moments(ones: int, numel: int, value: float) -> Moments:
    return linear_moments(value, lambda v: _unit_indicator_moments(ones, numel, v))


def _unit_indicator_moments(ones: int, numel: int, value: float) -> Moments:
    mean = value * ones / numel
    variance = value * value * ones / numel - mean * mean
    return Moments(mean, math.sqrt(max(variance, 0.0)), min(0.0, value), max(0.0, value))


STANDARD_NORMAL = TruncatedNormal(0.0, 1.0)


_PARALLEL_DRAW = 1 << 18  # elements: below this, starting threads costs more than it saves


def draw(sampler: ElementwiseSampler, key: int, count: int, kernel: Kernel, threads: int = 1) -> F64:
    """Elements 0 .. count-1 of ``sampler`` in float64 (stream 0), computed by ``kernel``.

    ``threads`` > 1 splits large draws into ranges filled in parallel (every element depends on its
    index alone, so the bytes are the same; the native kernel releases the GIL)."""
    result = np.empty(count, dtype=np.float64)
    fill = kernel.prepare(sampler, key, DTYPES["float64"], RunLayout(0, count, (), ()))
    parts = min(threads, count // _PARALLEL_DRAW) if count >= 2 * _PARALLEL_DRAW else 1
    if parts <= 1:
        fill(0, result)
        return result
    bounds = [count * i // parts for i in range(parts + 1)]
    with ThreadPoolExecutor(parts, thread_name_prefix="initserve-draw") as pool:
        for future in [pool.submit(fill, lo, result[lo:hi]) for lo, hi in itertools.pairwise(bounds)]:
            future.result()
    return result


@dataclass(frozen=True)
class Orthogonal:
    """Haar (semi-)orthogonal (rows, cols) matrix × gain (Saxe et al. 2013; Mezzadri 2007 sign fix).

    A = standard normals of the (rows, cols) matrix (element words in C order, bitwise reproducible);
    if rows < cols work on Aᵀ; Q, R = reduced QR; Q ← Q·diag(sign(diag R)) with sign(0) taken as +1;
    transpose back if needed; × gain. Algorithm 2 (default): the fixed-order blocked Householder QR of
    docs/determinism.md §7.1, the same bytes everywhere ("bitwise"). Algorithm 1: LAPACK's QR, whose
    last bits may differ between BLAS builds, CPU kernels and thread counts ("numerical").
    """

    rows: int
    cols: int
    gain: float
    algorithm: int = 2

    def whole(self, key: int, kernel: Kernel) -> F64:
        gaussian = draw(STANDARD_NORMAL, key, self.rows * self.cols, kernel, threads=default_threads())
        matrix = gaussian.reshape(self.rows, self.cols)
        wide = self.rows < self.cols
        if wide:
            matrix = matrix.T
        if self.algorithm == 1:
            q, r = np.linalg.qr(matrix, mode="reduced")
            signs = np.where(np.diagonal(r) < 0.0, -1.0, 1.0)
            q = q * signs
        else:  # the Gaussian is ours: the QR may overwrite it (a transposed one is copied first)
            q = haar_q(np.ascontiguousarray(matrix), native=kernel.qr, overwrite=True)
        if wide:
            q = q.T
        # × gain, transposed back, in C order, into the Gaussian's buffer (fresh pages cost more than the QR
        # at some sizes): it is Q itself, or a matrix the QR no longer needs
        np.multiply(q, self.gain, out=gaussian.reshape(self.rows, self.cols))
        return gaussian

    def moments(self) -> Moments:
        return Moments(0.0, abs(self.gain) / math.sqrt(max(self.rows, self.cols)), -abs(self.gain), abs(self.gain))

    def max_abs(self) -> float:
        return abs(self.gain)


@dataclass(frozen=True)
class Sparse:
    """torch.nn.init.sparse_ made reproducible: N(0, std²) values, then exactly ``zeros`` zeros per line.

    Lines run along ``axis`` (torch layout: each column of (rows, cols), i.e. axis 0). In each line
    the ``zeros`` positions with the smallest mask keys are zeroed, ties broken by position; the key
    of element i is its word in stream 1 (values use stream 0).
    """

    shape: tuple[int, int]
    std: float
    zeros: int
    axis: int
    normal: TruncatedNormal

    def whole(self, key: int, kernel: Kernel) -> F64:
        numel = self.shape[0] * self.shape[1]
        values = draw(self.normal, key, numel, kernel).reshape(self.shape)
        if self.zeros:
            mask_keys = kernel.words(key, 0, numel, STREAM_SPARSE_MASK).reshape(self.shape)
            order = np.argsort(mask_keys, axis=self.axis, kind="stable")
            chosen = np.take(order, np.arange(self.zeros), axis=self.axis)
            np.put_along_axis(values, chosen, 0.0, axis=self.axis)
        result: F64 = values.reshape(-1)
        return result

    def moments(self) -> Moments:
        line = self.shape[self.axis]
        kept = 1.0 - self.zeros / line if line else 0.0
        return Moments(0.0, self.std * math.sqrt(kept), None, None)

    def max_abs(self) -> float:
        return NORMAL_MAX_ABS_Z * self.std


__all__ = [
    "Constant",
    "Dirac",
    "ElementwiseSampler",
    "Eye",
    "Moments",
    "Orthogonal",
    "Sparse",
    "TruncatedNormal",
    "Uniform",
    "WholeSampler",
    "is_elementwise",
    "uniform_01",
    "uniform_open",
]
