"""Orthogonal algorithm 2: blocked Householder QR with a fixed order of every operation (numpy kernel).

This is the numpy implementation of docs/determinism.md §7.1 ("Orthogonal, algorithm 2"), the
reference and fallback of the native kernel. Every sum is *sequential*: ``s = p₀; s = s + pᵢ`` in
ascending index order, over the full index range (structural zeros and ones included), with each
product and each sum rounded once. numpy's ``add.accumulate`` (``cumsum``) is exactly that order —
each output is the previous output plus one input — unlike ``sum``/``dot``/``matmul``, whose order
depends on the build, the SIMD level and BLAS. Multiplications, divisions, subtractions and square
roots are elementwise ufuncs (one rounding each, never fused).

Layout of the work: A is (m, n) with m ≥ n, factorized in panels of ``PANEL`` columns (the last one
may be narrower). Each panel is factorized column by column, its reflectors are gathered into the
compact WY form I − V·T·Vᵀ (Schreiber & Van Loan 1989; LAPACK ``dlarft``), and the block reflector
is applied to the trailing columns. Q is accumulated backwards from the identity (LAPACK
``dorgqr``), then each column is multiplied by sign(R_jj) (sign(0) = +1; Mezzadri 2007).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .cores import default_threads

F64 = npt.NDArray[np.float64]

PANEL = 32  # columns per panel: part of the algorithm (it fixes which sums exist), not a tuning knob
_PRODUCTS_BUDGET = 1 << 18  # elements of a temporary product block (2 MiB): bounds memory, not bytes


def sequential_sum(products: F64, axis: int = 0) -> F64:
    """s = p₀; s = s + pᵢ for i = 1, 2, … along ``axis`` (in place on ``products``); returns the totals."""
    np.cumsum(products, axis=axis, out=products)
    result: F64 = np.take(products, -1, axis=axis)
    return result


def _reflector(p: F64, t: int) -> tuple[float, float]:
    """Householder reflector of column t of the panel ``p`` below the diagonal, in place: (tau, R_tt).

    alpha = P[t, t]; σ = Σ_{i>t} P[i, t]² (sequential); σ = 0 → tau = 0, v = e₀, R_tt = alpha.
    Otherwise norm = √(alpha² + σ), beta = −norm if alpha ≥ 0 else norm, tau = (beta − alpha)/beta,
    v_i = P[i, t] / (alpha − beta), R_tt = beta.
    """
    alpha = float(p[t, t])
    below = p[t + 1 :, t]
    sigma = sequential_sum(below * below) if below.size else 0.0
    if sigma == 0.0:  # no column below (last column of a square matrix) or all zero: H = I
        below[...] = 0.0
        return 0.0, alpha
    norm = math.sqrt(alpha * alpha + float(sigma))
    beta = -norm if alpha >= 0.0 else norm
    tau = (beta - alpha) / beta
    np.divide(below, alpha - beta, out=below)
    p[t, t] = beta
    return tau, beta


def panel_numpy(a: F64, j0: int, width: int) -> tuple[F64, F64, F64]:
    """Factorize columns j0 .. j0+width−1 of ``a`` (rows j0 ..): (V, T, R's diagonal); ``a`` is not written.

    One reflector at a time, each applied to the panel's later columns: w_k = Σ_i v_i·P[i, k],
    P[i, k] − v_i·(tau·w_k). Then V (zeros above its unit diagonal) and T (see :func:`_panel_t`).
    """
    p = np.array(a[j0:, j0 : j0 + width], dtype=np.float64, order="C")
    taus, rdiag = np.zeros(width), np.zeros(width)
    for t in range(width):
        taus[t], rdiag[t] = _reflector(p, t)
        if t + 1 >= width:
            continue
        v = p[t:, t].copy()
        v[0] = 1.0
        block = p[t:, t + 1 :]
        w = sequential_sum(v[:, None] * block)  # w_k = Σ_i v_i·P[i, k]
        tw = taus[t] * w
        np.subtract(block, v[:, None] * tw[None, :], out=block)  # P[i, k] − v_i·(tau·w_k)
    p[np.triu_indices(width, 1)] = 0.0
    p[np.arange(width), np.arange(width)] = 1.0
    return p, _panel_t(p, taus), rdiag


def _panel_t(v: F64, taus: F64) -> F64:
    """Upper-triangular T with H₀·H₁·…·H_{b−1} = I − V·T·Vᵀ (LAPACK dlarft, forward, columnwise).

    T[t, t] = tau_t; for t ≥ 1: y_l = Σ_r V[r, l]·V[r, t] (l < t), z_l = Σ_{p<t} T[l, p]·y_p,
    T[l, t] = −(tau_t·z_l). Every sum runs over its full range.
    """
    width = v.shape[1]
    t_matrix = np.zeros((width, width))
    t_matrix[0, 0] = taus[0]
    for t in range(1, width):
        y = sequential_sum(v[:, :t] * v[:, t : t + 1])
        z = sequential_sum(t_matrix[:t, :t] * y[None, :], axis=1)
        t_matrix[:t, t] = -(taus[t] * z)
        t_matrix[t, t] = taus[t]
    return t_matrix


def apply_numpy(v: F64, t_matrix: F64, c: F64, *, transpose: bool) -> None:
    """C ← C − V·(T'·(Vᵀ·C)) in place, T' = Tᵀ (factorization) or T (forming Q).

    W[l, k] = Σ_r V[r, l]·C[r, k]; W'[l, k] = Σ_p T'[l, p]·W[p, k]; C[r, k] = C[r, k] − Σ_l V[r, l]·W'[l, k].
    """
    rows, width = v.shape
    cols = c.shape[1]
    if cols == 0:
        return
    w = np.empty((width, cols))
    step = max(1, _PRODUCTS_BUDGET // max(1, rows * width))
    for k0 in range(0, cols, step):
        k1 = min(cols, k0 + step)
        w[:, k0:k1] = sequential_sum(v[:, :, None] * c[:, None, k0:k1])
    t_prime = t_matrix.T if transpose else t_matrix
    w2 = sequential_sum(t_prime[:, :, None] * w[None, :, :], axis=1)
    step = max(1, _PRODUCTS_BUDGET // max(1, cols))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        acc = v[r0:r1, 0:1] * w2[0:1, :]
        for col in range(1, width):
            acc += v[r0:r1, col : col + 1] * w2[col : col + 1, :]
        np.subtract(c[r0:r1], acc, out=c[r0:r1])


class NativeQr(Protocol):
    """The compiled kernel's QR (native/householder_driver.c): all of §7.1 and the sign fix in one call."""

    def qr_haar(self, a: F64, m: int, n: int, rdiag: F64, threads: int, /) -> None: ...


def haar_q(matrix: F64, *, native: NativeQr | None = None, threads: int | None = None, overwrite: bool = False) -> F64:
    """Q·diag(sign(R_jj)) of the QR of ``matrix`` (m, n), m ≥ n: an (m, n) float64 array with QᵀQ = I.

    ``native``: the compiled kernel's QR (same bytes, faster; its block updates run on ``threads``
    threads, default all cores); None runs the numpy kernel. Raises ValueError for m < n
    (transpose first). ``overwrite``: a C-contiguous float64 ``matrix`` may be used as scratch
    and returned as Q.
    """
    reuse = overwrite and matrix.dtype == np.float64 and matrix.flags.c_contiguous and matrix.flags.writeable
    a = matrix if reuse else np.array(matrix, dtype=np.float64, order="C", copy=True)
    m, n = a.shape
    if m < n:
        raise ValueError(f"haar_q needs rows ≥ cols, got {m} × {n}")
    if native is not None and n > 0:
        # The kernel splits every block update over threads by columns (the bytes do not depend on it),
        # releases the GIL for the whole computation and writes Q over the factorized matrix.
        native.qr_haar(a, m, n, np.empty(n), threads or default_threads())
        return a
    panels, rdiag = [], np.zeros(n)
    for j0 in range(0, n, PANEL):
        width = min(PANEL, n - j0)
        v, t_matrix, rdiag[j0 : j0 + width] = panel_numpy(a, j0, width)
        apply_numpy(v, t_matrix, a[j0:, j0 + width :], transpose=True)
        panels.append((j0, v, t_matrix))
    q = np.zeros((m, n))
    q[np.arange(n), np.arange(n)] = 1.0
    for j0, v, t_matrix in reversed(panels):
        apply_numpy(v, t_matrix, q[j0:, j0:], transpose=False)
    signs = np.where(rdiag < 0.0, -1.0, 1.0)
    np.multiply(q, signs[None, :], out=q)
    return q
