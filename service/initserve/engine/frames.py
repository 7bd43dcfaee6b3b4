"""Frames: the Welch bound, coherence, the simplex ETF and a near-ETF built by exact-arithmetic descent.

Coherence of N nonzero vectors w₁…w_N ∈ ℝ^m: μ = max_{i≠j} |⟨w_i, w_j⟩|/(‖w_i‖‖w_j‖). Lower bounds:
Welch μ ≥ √((N − m)/(m(N − 1))) (met exactly by equiangular tight frames, which in ℝ^m need
N ≤ m(m + 1)/2) and, for N > m(m + 1)/2, the orthoplex bound μ ≥ 1/√m. For N ≤ m the bound is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .kernels import Kernel
from .samplers import STANDARD_NORMAL, Moments, Orthogonal, draw
from .structured import SignedHadamard

F64 = npt.NDArray[np.float64]

FRAME_QUANTUM_BITS = 24  # vector entries live on the grid 2^-24 during the descent
WEIGHT_QUANTUM_BITS = 16  # descent weights live on the grid 2^-16
START_QUANTUM_BITS = 12  # the Gaussian start is rounded to 2^-12 before its first normalisation
NEAR_ETF_MAX_VECTORS = 4096  # keeps every sum of the descent exact (see NearETF)
NEAR_ETF_MAX_WORK = 1 << 35  # steps · N² · m: about a minute on one core at the limit
DESCENT_STEP = 0.3  # step η_t = 0.3·(1 − t/T) + 0.02, in units of (largest update entry)·√m
DESCENT_FLOOR = 0.02


def welch_bound(vectors: int, dim: int) -> float:
    """max(Welch, orthoplex where it applies) for ``vectors`` unit vectors in ℝ^dim; 0 if vectors ≤ dim."""
    if vectors <= dim or dim < 1:
        return 0.0
    bound = math.sqrt((vectors - dim) / (dim * (vectors - 1)))
    if vectors > dim * (dim + 1) // 2:
        bound = max(bound, 1.0 / math.sqrt(dim))
    return bound


def coherence(vectors: F64) -> tuple[float, int]:
    """(μ, number of zero vectors skipped) for the rows of a 2-D array, in float64 (BLAS Gram)."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    nonzero = norms > 0.0
    unit = vectors[nonzero] / norms[nonzero, None]
    if unit.shape[0] < 2:
        return 0.0, int((~nonzero).sum())
    gram = np.abs(unit @ unit.T)
    np.fill_diagonal(gram, 0.0)
    return float(gram.max()), int((~nonzero).sum())


def _quantize(x: F64, bits: int) -> F64:
    """Round to the grid 2^-bits (nearest, ties to even): exact scaling by powers of two around rint."""
    result: F64 = np.ldexp(np.rint(np.ldexp(x, bits)), -bits)
    return result


def _unit_rows(w: F64) -> F64:
    """Rows divided by their norms. ``w`` is on a grid fine enough that Σ w² is exact in any order."""
    norms = np.sqrt(np.sum(w * w, axis=1))
    result: F64 = w / norms[:, None]
    return result


@dataclass(frozen=True)
class SimplexETF:
    """K = ``vectors`` unit vectors × gain in ℝ^d (d = ``dim`` ≥ K − 1), pairwise cosine −1/(K − 1).

    W = gain·√(K/(K − 1))·B·R. B (K × (K − 1)) is the Helmert basis of 1^⊥: column j has h_j =
    1/√((j + 1)(j + 2)) in rows 0..j, −(j + 1)·h_j in row j + 1, zeros below. R ((K − 1) × d) has
    orthonormal rows: ``orthogonal`` of that shape with the tensor's key, the signed Hadamard of that
    shape (d a power of two), or ``none`` (R = [I | 0]). Row i of B·R is computed without a matrix
    product, in a fixed order: S_i = Σ_{j ≥ i} h_j·R_j accumulated from j = K − 2 down (S_{K−1} = 0),
    then B·R_i = S_i − (i·h_{i−1})·R_{i−1} (i ≥ 1). Returned (K, d) in row order (transposed if asked).
    """

    vectors: int
    dim: int
    gain: float
    rotation: str
    transposed: bool = False
    algorithm: int = 2  # orthogonal's (rotation "orthogonal"): 2 the fixed-order QR (bitwise), 1 LAPACK

    def whole(self, key: int, kernel: Kernel) -> F64:
        k, d = self.vectors, self.dim
        rotation = self._rotation(key, kernel)
        j = np.arange(k - 1, dtype=np.float64)
        h = 1.0 / np.sqrt((j + 1.0) * (j + 2.0))
        terms = h[:, None] * rotation
        suffix = np.zeros((k, d))
        suffix[: k - 1] = np.add.accumulate(terms[::-1], axis=0)[::-1]
        coefficient = np.arange(1, k, dtype=np.float64) * h  # i·h_{i−1} for i = 1..K−1
        suffix[1:] -= coefficient[:, None] * rotation
        suffix *= self.gain * math.sqrt(k / (k - 1))
        matrix = suffix.T if self.transposed else suffix
        flat: F64 = np.ascontiguousarray(matrix).reshape(-1)
        return flat

    def _rotation(self, key: int, kernel: Kernel) -> F64:
        rows, cols = self.vectors - 1, self.dim
        if self.rotation == "orthogonal":
            return Orthogonal(rows, cols, 1.0, self.algorithm).whole(key, kernel).reshape(rows, cols)
        if self.rotation == "hadamard":
            r, c = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
            return SignedHadamard(rows, cols, 1.0, key).at(r, c).reshape(rows, cols)
        return np.eye(rows, cols)

    def moments(self) -> Moments:
        g = abs(self.gain)
        return Moments(0.0, g / math.sqrt(self.dim), -g, g)

    def max_abs(self) -> float:
        return abs(self.gain)


@dataclass(frozen=True)
class NearETF:
    """N = ``vectors`` unit vectors × gain in ℝ^m (m = ``dim``) with coherence near the Welch bound.

    Start: the tensor's standard normals (element words in C order) as an (N, m) matrix, rounded to
    2^-12 (a row that rounds to all zeros becomes (1, 0, …, 0)), rows normalised, rounded to 2^-24.
    Then ``steps`` iterations t = 0..T−1 of a smooth-max descent on the off-diagonal Gram entries:

        G = W·Wᵀ with zero diagonal; g = max|G| (the best W so far is the one with the smallest g)
        s = 3 + ⌊5t/T⌋; Gn = G/g; E = round_{2^-16}(Gn^(2^s + 1))   (2^s + 1 by s squarings of Gn², × Gn)
        D = E·W; η = 0.3·(1 − t/T) + 0.02; W ← round_{2^-24}(W − (η/(max|D|·√m))·D)
        W ← round_{2^-24}(rows of W normalised)

    Every sum above is exact: W and E are on the grids 2^-24 and 2^-16 with |entries| ≤ 1, so each
    partial sum of G (≤ ‖w_i‖‖w_j‖ < 2) and of D (< N ≤ 2^12) is an integer multiple of 2^-48 or 2^-40
    below 2^53 ulps. BLAS may add in any order, with or without FMA: the result is the same, so the
    bytes are reproducible everywhere (class bitwise, though not elementwise). The output is the best
    W with its rows normalised once more in float64, × gain, as (N, m) (transposed if asked).
    """

    vectors: int
    dim: int
    gain: float
    steps: int
    transposed: bool = False

    def frame(self, key: int, kernel: Kernel) -> tuple[F64, float]:
        """The unit-norm (N, m) frame and its Gram maximum g (exact, on the 2^-24 grid)."""
        n, m = self.vectors, self.dim
        start = _quantize(draw(STANDARD_NORMAL, key, n * m, kernel).reshape(n, m), START_QUANTUM_BITS)
        start[:, 0][~start.any(axis=1)] = 1.0  # a row rounded to all zeros (rare for small m) becomes e₀
        w = _quantize(_unit_rows(start), FRAME_QUANTUM_BITS)
        best, best_max = w, math.inf
        sqrt_m = math.sqrt(m)
        for t in range(self.steps + 1):
            gram = w @ w.T
            np.fill_diagonal(gram, 0.0)
            g = float(np.abs(gram).max())
            if g < best_max:
                best, best_max = w, g
            if t == self.steps or g == 0.0:
                break
            squarings = 3 + (5 * t) // self.steps
            gn = gram / g
            power = gn * gn
            for _ in range(squarings - 1):
                np.multiply(power, power, out=power)
            np.multiply(power, gn, out=power)
            weights = _quantize(power, WEIGHT_QUANTUM_BITS)
            update = weights @ w
            d_max = float(np.abs(update).max())
            if d_max == 0.0:
                break
            eta = DESCENT_STEP * (1.0 - t / self.steps) + DESCENT_FLOOR
            update *= eta / (d_max * sqrt_m)
            w = _quantize(_unit_rows(_quantize(w - update, FRAME_QUANTUM_BITS)), FRAME_QUANTUM_BITS)
        return _unit_rows(best), best_max

    def whole(self, key: int, kernel: Kernel) -> F64:
        frame, _ = self.frame(key, kernel)
        frame *= self.gain
        matrix = frame.T if self.transposed else frame
        flat: F64 = np.ascontiguousarray(matrix).reshape(-1)
        return flat

    def moments(self) -> Moments:
        g = abs(self.gain)
        return Moments(0.0, g / math.sqrt(self.dim), -g, g)

    def max_abs(self) -> float:
        return abs(self.gain)
