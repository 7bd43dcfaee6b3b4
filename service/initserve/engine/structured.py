"""Structured matrices: signed Sylvester–Hadamard, ZerO, DCT-II, Haar wavelets, simplex ETF, and the
samplers that place a matrix in a tensor (the whole tensor, or the centre tap of a conv kernel).

A *matrix function* gives element (r, c) of a (rows, cols) matrix from the indices alone (plus, for
the signed Hadamard, two words of the tensor's key), so the samplers built on it are elementwise:
any slice is computed on its own, bit for bit. Every value is made with exactly rounded IEEE
operations (+ − × ÷ sqrt, integer and bit operations) in the order written here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .kernels import Kernel
from .rng import STREAM_COL_SIGNS, STREAM_ROW_SIGNS, raw_words
from .samplers import Moments, Orthogonal, linear_moments, scale_moments, scaling_exponent
from .trig import cos_pi_ratio

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


class MatrixFunction(Protocol):
    """Element (r, c) of a (rows, cols) matrix, for arrays of indices."""

    @property
    def rows(self) -> int: ...

    @property
    def cols(self) -> int: ...

    def at(self, r: I64, c: I64) -> F64: ...

    def moments(self) -> Moments: ...


def parity_of_and(r: I64, c: I64) -> U64:
    """popcount(r & c) mod 2 by xor-folding the 64 bits: the exponent of the Sylvester–Hadamard
    element H[r, c] = (−1)^popcount(r & c)."""
    x = np.bitwise_and(r, c).astype(np.uint64)
    for shift in (32, 16, 8, 4, 2, 1):
        x ^= x >> np.uint64(shift)
    result: U64 = x & np.uint64(1)
    return result


def hadamard_sign(r: I64, c: I64) -> F64:
    """H[r, c] = (−1)^popcount(r & c) as ±1.0 (Sylvester order: H₁ = [1], H₂ₙ = [[Hₙ, Hₙ], [Hₙ, −Hₙ]])."""
    result: F64 = 1.0 - 2.0 * parity_of_and(r, c).astype(np.float64)
    return result


def word_signs(key: int, index: I64, stream: int) -> F64:
    """±1.0 per index: −1 where the top bit of the index's word in ``stream`` is set."""
    if index.size == 0:
        return np.empty(0)
    first, last = int(index.min()), int(index.max())
    words = raw_words(key, first, last - first + 1, stream)
    top = (words >> np.uint64(63)).astype(np.float64)
    result: F64 = (1.0 - 2.0 * top)[index - first]
    return result


@functools.cache
def hadamard_block_sum(rows: int, cols: int) -> int:
    """Σ of H[r, c] over r < rows, c < cols (exact integer), by the block recursion of H₂ₜ."""
    if rows == 0 or cols == 0:
        return 0
    if rows == 1 or cols == 1:
        return cols if rows == 1 else rows  # row 0 and column 0 are all +1
    half = 1 << (max(rows, cols) - 1).bit_length() - 1
    if rows <= half:
        return hadamard_block_sum(rows, half) + hadamard_block_sum(rows, cols - half)
    if cols <= half:
        return hadamard_block_sum(half, cols) + hadamard_block_sum(rows - half, cols)
    return (
        half  # the full Hₜ: only row 0 has a nonzero sum
        + hadamard_block_sum(half, cols - half)
        + hadamard_block_sum(rows - half, half)
        - hadamard_block_sum(rows - half, cols - half)
    )


def _values_moments(total: float, squares: float, numel: int, low: float, high: float) -> Moments:
    """Moments of a fixed set of ``numel`` values with sum ``total`` and sum of squares ``squares``."""
    mean = total / numel
    return Moments(mean, math.sqrt(max(squares / numel - mean * mean, 0.0)), low, high)


@dataclass(frozen=True)
class SignedHadamard:
    """W[r, c] = s·D₁[r]·D₂[c]·(−1)^popcount(r & c), s = gain/√max(rows, cols).

    D₁[r] = ±1 from word r of stream 2, D₂[c] = ±1 from word c of stream 3 (−1 iff the top bit is
    set). The sign pattern is the leading (rows, cols) block of the Sylvester matrix of the next
    power of two; the scale makes every row (rows ≤ cols) or column (rows > cols) exactly norm gain.
    """

    rows: int
    cols: int
    gain: float
    key: int
    scale: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", self.gain / math.sqrt(max(self.rows, self.cols, 1)))

    def at(self, r: I64, c: I64) -> F64:
        value = hadamard_sign(r, c)
        value *= word_signs(self.key, r, STREAM_ROW_SIGNS)
        value *= word_signs(self.key, c, STREAM_COL_SIGNS)
        value *= self.scale
        return value

    def moments(self) -> Moments:
        bound = abs(self.scale)
        return Moments(0.0, bound, -bound, bound)


@dataclass(frozen=True)
class ZerOMatrix:
    """ZerO Algorithm 1 for a (out, in) matrix (torch orientation; ``transposed`` serves (in, out)).

    out ≤ in: the partial identity I* (W[o, i] = [o = i]); out > in: c·I*·H·I* = c·H_p[:out, :in]
    with p = 2^m, m = ⌈log₂ out⌉, and c = 2^−(m−1)/2 (the paper) or 2^−m/2 (the official code).
    """

    out: int
    inp: int
    constant: float
    transposed: bool = False

    @property
    def rows(self) -> int:
        return self.inp if self.transposed else self.out

    @property
    def cols(self) -> int:
        return self.out if self.transposed else self.inp

    def at(self, r: I64, c: I64) -> F64:
        o, i = (c, r) if self.transposed else (r, c)
        if self.out <= self.inp:
            result: F64 = (o == i).astype(np.float64)
            return result
        value = hadamard_sign(o, i)
        value *= self.constant
        return value

    def moments(self) -> Moments:
        numel = self.out * self.inp
        if self.out <= self.inp:
            return _values_moments(self.out, self.out, numel, 0.0, 1.0)
        total = self.constant * hadamard_block_sum(self.out, self.inp)
        return _values_moments(total, self.constant**2 * numel, numel, -self.constant, self.constant)


def zero_constant(out: int, variant: str) -> float:
    """c for out > in: m = ⌈log₂ out⌉; paper 2^−(m−1)/2, official code 2^−m/2 (sqrt of a power of two)."""
    m = (out - 1).bit_length()
    return math.sqrt(math.ldexp(1.0, -(m - 1) if variant == "paper" else -m))


def _basis_moments(count: int, length: int, gain: float, first_constant: bool, peak: float) -> Moments:
    """``count`` orthonormal basis vectors of ``length`` × gain; only the first (constant 1/√length) has a
    nonzero sum when ``first_constant``."""
    numel = count * length

    def at(g: float) -> Moments:
        total = g * math.sqrt(length) if first_constant else 0.0
        return _values_moments(total, g * g * count, numel, -abs(g) * peak, abs(g) * peak)

    return linear_moments(gain, at)


@dataclass(frozen=True)
class DCTMatrix:
    """Orthonormal DCT-II basis × gain. With n = max(rows, cols) and the basis
    b_k[j] = α_k·cos(π(2j + 1)k/(2n)), α₀ = √(1/n), α_k = √(2/n): rows ≤ cols → W[k, j] = gain·b_k[j]
    (the first ``rows`` basis vectors as rows); rows > cols → W[j, k] = gain·b_k[j] (as columns)."""

    rows: int
    cols: int
    gain: float

    def at(self, r: I64, c: I64) -> F64:
        n = max(self.rows, self.cols)
        k, j = (r, c) if self.rows <= self.cols else (c, r)
        value = cos_pi_ratio((2 * j + 1) * k, 2 * n)
        coefficient = np.where(k == 0, self.gain * math.sqrt(1.0 / n), self.gain * math.sqrt(2.0 / n))
        value *= coefficient
        return value

    def moments(self) -> Moments:
        n = max(self.rows, self.cols)
        count = min(self.rows, self.cols)
        return _basis_moments(count, n, self.gain, True, math.sqrt(2.0 / n) if count > 1 else math.sqrt(1.0 / n))


@dataclass(frozen=True)
class MatrixSampler:
    """A matrix function over the whole (rows, cols)-flattened tensor: element k is (k div cols, k mod cols)."""

    matrix: MatrixFunction
    uses_words = False

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        index = np.arange(start, start + count, dtype=np.int64)
        return self.matrix.at(index // self.matrix.cols, index % self.matrix.cols)

    def moments(self) -> Moments:
        return self.matrix.moments()

    def max_abs(self) -> float:
        m = self.matrix.moments()
        return max(abs(m.low or 0.0), abs(m.high or 0.0))


@dataclass(frozen=True)
class CentreTap:
    """A conv kernel that is zero except at one spatial tap, where it holds a matrix function.

    ``row_axis``/``col_axis`` say which tensor axes index the matrix's rows and columns; ``centre``
    gives the tap's index on each of the other (spatial) axes, in axis order. With no spatial axes it
    is the matrix itself.
    """

    shape: tuple[int, ...]
    row_axis: int
    col_axis: int
    centre: tuple[int, ...]
    matrix: MatrixFunction
    uses_words = False

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        coords = np.unravel_index(np.arange(start, start + count, dtype=np.int64), self.shape)
        hit = np.ones(count, dtype=bool)
        spatial = [axis for axis in range(len(self.shape)) if axis not in (self.row_axis, self.col_axis)]
        for axis, index in zip(spatial, self.centre, strict=True):
            hit &= coords[axis] == index
        result = np.zeros(count)
        result[hit] = self.matrix.at(coords[self.row_axis][hit], coords[self.col_axis][hit])
        return result

    def moments(self) -> Moments:
        inner = self.matrix.moments()
        inner_numel = self.matrix.rows * self.matrix.cols
        numel = math.prod(self.shape)
        if inner_numel == numel:
            return inner
        # Scaled by the inner reach's power of two when the squares would overflow (exact; see linear_moments).
        exponent = scaling_exponent(max(abs(inner.low or 0.0), abs(inner.high or 0.0)))
        inner = scale_moments(inner, -exponent) if exponent else inner
        total = inner.mean * inner_numel
        squares = (inner.std**2 + inner.mean**2) * inner_numel
        low, high = min(0.0, inner.low or 0.0), max(0.0, inner.high or 0.0)
        result = _values_moments(total, squares, numel, low, high)
        return scale_moments(result, exponent) if exponent else result

    def max_abs(self) -> float:
        m = self.matrix.moments()
        return max(abs(m.low or 0.0), abs(m.high or 0.0))


def centre_taps(shape: tuple[int, ...], row_axis: int, col_axis: int, rule: str) -> tuple[int, ...]:
    """The centre index on each spatial axis: ``jax`` (k − 1)//2 (jax/TF1 delta_orthogonal) or
    ``torch`` k//2 (torch dirac_; ZerO's ⌊k/2⌋). They differ only for even k."""
    spatial = [size for axis, size in enumerate(shape) if axis not in (row_axis, col_axis)]
    return tuple((k - 1) // 2 if rule == "jax" else k // 2 for k in spatial)


@dataclass(frozen=True)
class CentreTapOrthogonal:
    """delta-orthogonal on the engine's orthogonal: the centre tap is ``orthogonal`` of the (rows, cols)
    matrix with the tensor's key (so it equals the 2-D ``orthogonal`` spec of that shape); zero elsewhere."""

    shape: tuple[int, ...]
    row_axis: int
    col_axis: int
    centre: tuple[int, ...]
    gain: float
    algorithm: int = 2  # orthogonal's: 2 the fixed-order QR (bitwise), 1 LAPACK

    def whole(self, key: int, kernel: Kernel) -> F64:
        rows, cols = self.shape[self.row_axis], self.shape[self.col_axis]
        matrix = Orthogonal(rows, cols, self.gain, self.algorithm).whole(key, kernel).reshape(rows, cols)
        result = np.zeros(self.shape)
        index: list[int | slice] = []
        taps = iter(self.centre)
        for axis in range(len(self.shape)):
            index.append(slice(None) if axis in (self.row_axis, self.col_axis) else next(taps))
        # The matrix axes keep their order in the tensor; transpose when rows come after columns.
        result[tuple(index)] = matrix if self.row_axis < self.col_axis else matrix.T
        flat: F64 = result.reshape(-1)
        return flat

    def moments(self) -> Moments:
        rows, cols = self.shape[self.row_axis], self.shape[self.col_axis]
        numel = math.prod(self.shape)
        return linear_moments(self.gain, lambda g: _values_moments(0.0, g**2 * min(rows, cols), numel, -abs(g), abs(g)))

    def max_abs(self) -> float:
        return abs(self.gain)


def haar_rows(count: int, length: int) -> list[tuple[int, int, int, float, float]]:
    """The first ``count`` orthonormal Haar basis vectors of ``length`` (coarse to fine, breadth first), as
    (start, split, end, α, β): +α on [start, split), −β on [split, end), zero elsewhere.

    Row 0 is the constant 1/√length (returned as (0, length, length, 1/√length, 0)). Every interval of
    L ≥ 2 points [a, a + L) is cut into l = ⌈L/2⌉ and r = L − l points, with α = √(r/(l·L)) and
    β = √(l/(r·L)) (zero sum, unit norm; one division, one sqrt each); intervals are cut in the order
    they were made (a queue), so for length 2^k this is the standard Haar matrix (α = β = 2^{p/2}/√length).
    """
    rows = [(0, length, length, math.sqrt(1.0 / length), 0.0)]
    queue = [(0, length)]
    head = 0
    while len(rows) < count and head < len(queue):
        start, size = queue[head]
        head += 1
        if size < 2:
            continue
        left = (size + 1) // 2
        right = size - left
        alpha, beta = math.sqrt(right / (left * size)), math.sqrt(left / (right * size))
        rows.append((start, start + left, start + size, alpha, beta))
        queue.append((start, left))
        queue.append((start + left, right))
    return rows


@dataclass(frozen=True)
class HaarWavelet:
    """Orthonormal Haar basis × gain: rows ≤ cols → the first ``rows`` basis vectors of length cols as
    rows; rows > cols → the first ``cols`` vectors of length rows as columns (see :func:`haar_rows`)."""

    rows: int
    cols: int
    gain: float

    def whole(self, key: int, kernel: Kernel) -> F64:
        count, length = min(self.rows, self.cols), max(self.rows, self.cols)
        basis = np.zeros((count, length))
        for index, (start, split, end, alpha, beta) in enumerate(haar_rows(count, length)):
            basis[index, start:split] = alpha
            basis[index, split:end] = -beta
        basis *= self.gain
        matrix = basis if self.rows <= self.cols else basis.T
        flat: F64 = np.ascontiguousarray(matrix).reshape(-1)
        return flat

    def moments(self) -> Moments:
        count, length = min(self.rows, self.cols), max(self.rows, self.cols)
        peak = max(max(alpha, beta) for _, _, _, alpha, beta in haar_rows(count, length))
        return _basis_moments(count, length, self.gain, True, peak)

    def max_abs(self) -> float:
        m = self.moments()
        return max(abs(m.low or 0.0), abs(m.high or 0.0))
