"""Per-layer measurements: moments, dead and saturated units, the symmetric-log histogram, effective rank."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Symmetric-log histogram: bins of width 1/BINS_PER_DECADE decade on each side between ±10^LOW_DECADE
# and ±10^HIGH_DECADE, one bin each for (−10^LOW, 0) and [0, 10^LOW); values beyond ±10^HIGH go in the
# outermost bins. The same edges for every layer and scheme, so the heat-map through depth shows
# shrinking and growing activations as movement across the columns (fastai's [0, 10] hides both).
LOW_DECADE = -8
HIGH_DECADE = 4
BINS_PER_DECADE = 3
_SIDE = (HIGH_DECADE - LOW_DECADE) * BINS_PER_DECADE
HISTOGRAM_BINS = 2 * _SIDE + 2
SATURATION_SLOPE = 0.05  # φ′ below this fraction of its maximum: the unit passes (almost) no gradient
DEAD_SLOPE = 1e-3
_POSITIVE_EDGES = np.array([10.0 ** (LOW_DECADE + k / BINS_PER_DECADE) for k in range(_SIDE + 1)])


def histogram_edges() -> list[float]:
    """The HISTOGRAM_BINS + 1 edges, ascending: −10^HIGH … −10^LOW, 0, 10^LOW … 10^HIGH."""
    positive = [float(v) for v in _POSITIVE_EDGES]
    return [-v for v in reversed(positive)] + [0.0] + positive


def symlog_histogram(values: F64) -> list[int]:
    """Counts of ``values`` in the :func:`histogram_edges` bins; beyond ±10^HIGH_DECADE: the outermost bins."""
    flat = values.reshape(-1)
    # level 0: |x| < 10^LOW; level k ≥ 1: 10^LOW·10^((k−1)/BINS_PER_DECADE) ≤ |x| < the next edge
    level = np.searchsorted(_POSITIVE_EDGES, np.abs(flat), side="right")
    np.minimum(level, _SIDE, out=level)
    index = np.where(flat < 0.0, _SIDE - level, _SIDE + 1 + level)
    counts = np.bincount(index, minlength=HISTOGRAM_BINS)
    return [int(c) for c in counts]


def effective_rank(x: F64) -> float:
    """Entropy effective rank exp(−Σ p_i ln p_i), p_i = λ_i/Σλ, λ the eigenvalues of the covariance of
    the rows of ``x`` (batch × units; each unit centred over the batch, so a common offset such as
    ReLU's mean is not counted as a direction): 1 when every unit is the same function of the input,
    up to min(batch − 1, units) for white activations (Roy & Vetterli 2007, on the squared singular values).
    NaN when ``x`` has overflowed float64 (an exploding network): LAPACK cannot decompose inf/NaN."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowed layer (inf - inf) is the NaN below
        x = x - x.mean(axis=0)
    if not np.isfinite(x).all():
        return math.nan
    # The rank is scale-free: dividing by the largest |entry| keeps the Gram matrix finite for an
    # exploding network whose activations are finite but whose squares would overflow float64.
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    if scale > 0.0:
        x = x / scale
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    eigenvalues = np.linalg.eigvalsh(gram)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    total = float(eigenvalues.sum())
    if not total > 0.0 or not math.isfinite(total):
        return 0.0 if total == 0.0 else math.nan
    p = eigenvalues[eigenvalues > 0.0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


@dataclass(frozen=True)
class LayerMeasurement:
    mean: float
    std: float
    second_moment: float
    dead_fraction: float
    saturated_fraction: float
    histogram: list[int]
    effective_rank: float


def measure_layer(h: F64, x: F64, slope: F64, slope_max: float) -> LayerMeasurement:
    """Statistics of pre-activations ``h``, activations ``x`` and φ′(h) ``slope`` (all batch × units)."""
    mean = float(h.mean())
    # Scaled by the largest |h| so that entries up to float64's maximum give their std, not inf from h².
    scale = float(np.max(np.abs(h))) if h.size else 0.0
    std = scale * float((h / scale).std()) if 0.0 < scale < math.inf else float(h.std())
    second = float(np.mean(h * h))
    blocked = np.abs(slope) <= SATURATION_SLOPE * slope_max
    dead_units = np.all(np.abs(slope) <= DEAD_SLOPE * slope_max, axis=0)
    return LayerMeasurement(
        mean,
        std,
        second,
        float(dead_units.mean()),
        float(blocked.mean()),
        symlog_histogram(h),
        effective_rank(x),
    )
