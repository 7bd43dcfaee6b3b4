"""Mean-field predictions: the q-map, χ₁, the correlation depth scale, gradients, the Jacobian's mean s².

Poole et al. 2016 and Schoenholz et al., *Deep Information Propagation* (ICLR 2017), for weights with
zero mean and variance σ_w²/fan_in and no bias:

- q-map: q_l = σ_w² · E_z[φ(√q_{l−1} z)²], z ~ N(0, 1); Gaussian expectations by Gauss–Legendre
  quadrature on each half-line [−Z, 0] and [0, Z] (Z = 12: the mass beyond is e^−72), so the kinks of
  ReLU-like activations at 0 sit on a panel edge and every integrand is smooth on its panel.
- χ₁ = σ_w² · E_z[φ′(√q* z)²] at the fixed point q*: the factor by which the gradient's variance grows
  per layer backwards (√χ₁ for its std) and the mean of s² of the per-layer Jacobian D·W.
- correlation map c_l = σ_w² E[φ(u₁)φ(u₂)]/q*, its stable fixed point c*, χ_c = σ_w² E[φ′(u₁)φ′(u₂)]
  at c*, and the depth scale ξ_c = −1/ln χ_c (infinite at the edge of chaos χ_c = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from .activations import Activation

F64 = npt.NDArray[np.float64]

QUADRATURE_NODES = 160  # Gauss–Legendre nodes per half-line
Z_MAX = 12.0
CORRELATION_NODES = 48  # per axis of the 2-D Gauss–Hermite rule (correlation map only)
_x, _w = leggauss(QUADRATURE_NODES)
_half = (_x + 1.0) * (Z_MAX / 2.0)
_Z = np.concatenate([-_half[::-1], _half])
_W = np.concatenate([_w[::-1], _w]) * (Z_MAX / 2.0) * np.exp(-0.5 * _Z * _Z) / math.sqrt(2.0 * math.pi)
_Z2, _W2 = hermegauss(CORRELATION_NODES)
_W2 = _W2 / math.sqrt(2.0 * math.pi)
_ZA, _ZB = np.meshgrid(_Z2, _Z2, indexing="ij")
_WW = np.outer(_W2, _W2)

Q_TINY = 1e-300  # stand-in for q* = 0 (the limit of φ′(√q z) as q → 0)
Q_HUGE = 1e200  # stand-in for q* = ∞
GRID = np.logspace(-12, 12, 241)
CRITICAL_TOLERANCE = 1e-9


def gauss(values: F64) -> float:
    """E_z[f(z)] for ``values`` = f at the quadrature nodes :data:`_Z`."""
    return float(np.dot(_W, values))


@dataclass(frozen=True)
class Moments:
    """Gaussian expectations of one layer's activation at pre-activation variance q."""

    mean: float  # E φ(√q z)
    second: float  # E φ(√q z)²
    slope2: float  # E φ′(√q z)²


def moments(phi: Activation, q: float) -> Moments:
    """E φ, E φ², E φ′² for h ~ N(0, q)."""
    h = math.sqrt(max(q, 0.0)) * _Z
    value = phi.forward(h)
    slope = phi.derivative(h)
    return Moments(gauss(value), gauss(value * value), gauss(slope * slope))


def q_map(phi: Activation, sigma_w2: float, q: float) -> float:
    """One step of the q-map: σ_w² E φ(√q z)²."""
    return sigma_w2 * moments(phi, q).second


def chi1(phi: Activation, sigma_w2: float, q: float) -> float:
    """σ_w² E φ′(√q z)²."""
    return sigma_w2 * moments(phi, q).slope2


@dataclass(frozen=True)
class FixedPoint:
    """Where the q-map of one (φ, σ_w²) settles from q₁: ``q_star`` (0, finite, ``inf``; ``None`` when
    every q is a fixed point), χ₁ there, and the correlation fixed point c* with ξ_c."""

    q_star: float | None
    chi1: float
    c_star: float
    chi_c: float
    depth_scale: float  # ξ_c; math.inf at the edge of chaos


def fixed_point(phi: Activation, sigma_w2: float, q1: float) -> FixedPoint:
    """Find the stable fixed point the q-map reaches from ``q1``, then χ₁, c* and ξ_c there."""
    q_star: float | None
    if phi.homogeneous:  # F(q) = c·q: every q is fixed (c = 1), or q → 0, or q → ∞
        factor = q_map(phi, sigma_w2, 1.0)
        q_star = None if abs(factor - 1.0) <= 1e-12 else (0.0 if factor < 1.0 else math.inf)
        q_eval = 1.0
    else:
        q_star = _stable_root(phi, sigma_w2, q1)
        q_eval = Q_TINY if q_star == 0.0 else Q_HUGE if math.isinf(q_star) else q_star
    chi = chi1(phi, sigma_w2, q_eval)
    c_star, chi_c = _correlation_fixed_point(phi, sigma_w2, q_eval, chi)
    depth = math.inf if chi_c >= 1.0 - CRITICAL_TOLERANCE else -1.0 / math.log(chi_c) if chi_c > 0.0 else 0.0
    return FixedPoint(q_star, chi, c_star, chi_c, depth)


def _stable_root(phi: Activation, sigma_w2: float, q1: float) -> float:
    """The first root of g(q) = F(q) − q met walking from q1 in the direction of g(q1)."""
    start = min(max(q1, GRID[0]), GRID[-1])
    g_start = q_map(phi, sigma_w2, start) - start
    if abs(g_start) <= 1e-13 * start:
        return float(start)
    upward = g_start > 0.0
    points = GRID[np.greater(GRID, start)] if upward else GRID[np.less(GRID, start)][::-1]
    previous = start
    for point in points:
        if (q_map(phi, sigma_w2, float(point)) - float(point) > 0.0) != upward:
            return _bisect(phi, sigma_w2, previous, float(point))
        previous = float(point)
    return math.inf if upward else 0.0


def _bisect(phi: Activation, sigma_w2: float, a: float, b: float) -> float:
    low, high = min(a, b), max(a, b)
    g_low_positive = q_map(phi, sigma_w2, low) - low > 0.0
    for _ in range(200):  # in log space: 200 halvings of a decade reach double precision
        middle = math.sqrt(low * high)
        if (q_map(phi, sigma_w2, middle) - middle > 0.0) == g_low_positive:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * high:
            break
    return math.sqrt(low * high)


def _pair(phi: Activation, q: float, c: float) -> tuple[float, float, float]:
    """E φ(u₁)φ(u₂), E φ′(u₁)φ′(u₂) and E φ(u₁)² for (u₁, u₂) ~ N(0, q[[1, c], [c, 1]])."""
    root = math.sqrt(q)
    u1 = root * _ZA
    u2 = root * (c * _ZA + math.sqrt(max(1.0 - c * c, 0.0)) * _ZB)
    f1, f2 = phi.forward(u1), phi.forward(u2)
    d1, d2 = phi.derivative(u1), phi.derivative(u2)
    return float((_WW * f1 * f2).sum()), float((_WW * d1 * d2).sum()), float((_WW * f1 * f1).sum())


def _correlation_fixed_point(phi: Activation, sigma_w2: float, q: float, chi: float) -> tuple[float, float]:
    """The stable c* of the correlation map at q, and χ_c there.

    Ordered or critical (χ₁ ≤ 1): c* = 1 and χ_c = χ₁. Chaotic (χ₁ > 1): c = 1 is unstable; iterate
    from c = 0 (independent inputs) to the stable c* < 1.
    """
    if chi <= 1.0 + CRITICAL_TOLERANCE:  # rounding must not turn the edge of chaos chaotic
        return 1.0, min(chi, 1.0) if chi > 1.0 else chi
    c = 0.0
    for _ in range(2000):
        cross, _, second = _pair(phi, q, c)
        updated = cross / second if second > 0.0 else 0.0
        updated = min(max(updated, -1.0), 1.0)
        if abs(updated - c) <= 1e-13:
            c = updated
            break
        c = updated
    _, slope_cross, _ = _pair(phi, q, c)
    return c, sigma_w2 * slope_cross


def hanin_band(widths: list[int]) -> tuple[float, float]:
    """Finite-width band of log(q_L/q₁) for ReLU with He init (Hanin & Rolnick 2018):
    mean −(5/2)·Σ1/n_l, sd √(5·Σ1/n_l), the sum over the widths of layers 1..L−1."""
    total = sum(1.0 / n for n in widths[:-1])
    return -2.5 * total, math.sqrt(5.0 * total)
