"""A plain-words verdict from the measurements of one scheme."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

COLLAPSE_RANK = 1.01  # effective rank at or below: every unit computes the same function
VANISH_FACTOR = 1e-3  # std (or gradient) below this fraction of layer 1's: vanished
EXPLODE_FACTOR = 1e3
GRADIENT_FACTOR = 1e2  # gradients at layer 1 over layer L beyond ×100 (or below ×1/100): flagged
ISOMETRY_CONDITION = 1.1
CRITICAL_BAND = 0.01  # |χ₁ − 1| ≤ this: the edge of chaos


@dataclass(frozen=True)
class Verdict:
    kind: str  # collapsed | vanishing | exploding | chaotic | vanishing-gradients | isometric | stable
    text: str
    phase: str | None  # ordered | critical | chaotic (from χ₁), None without a prediction


def power(base: float, exponent: float) -> float:
    """base**exponent for base ≥ 0, inf where Python's float power would raise OverflowError."""
    try:
        return float(base**exponent)
    except OverflowError:
        return math.inf


def _first(values: Sequence[float | None], test: float, below: bool) -> int | None:
    for index, value in enumerate(values):
        if value is None:
            continue
        # A std that is inf or NaN means float64 overflowed on the way: the signal exploded.
        if (math.isfinite(value) and value < test) if below else (not math.isfinite(value) or value > test):
            return index + 1
    return None


def phase_of(chi1: float | None) -> str | None:
    if chi1 is None or not math.isfinite(chi1):
        return None
    if abs(chi1 - 1.0) <= CRITICAL_BAND:
        return "critical"
    return "ordered" if chi1 < 1.0 else "chaotic"


def judge(
    stds: Sequence[float],
    ranks: Sequence[float],
    gradient_rate: float | None,
    chi1: float | None,
    condition: float | None,
) -> Verdict:
    """Collapse first, then the forward signal, then the gradients, then the Jacobian."""
    depth = len(stds)
    phase = phase_of(chi1)
    collapsed = _first(ranks, COLLAPSE_RANK + 1e-12, below=True)
    if collapsed is not None and all(r <= COLLAPSE_RANK for r in ranks[collapsed - 1 :]):
        return Verdict(
            "collapsed",
            f"collapsed: every unit computes the same function from layer {collapsed} on "
            f"(effective rank {ranks[-1]:.2f}); symmetry is never broken, training cannot separate units",
            phase,
        )
    reference = stds[0]
    if reference > 0.0 and math.isfinite(reference):
        vanished = _first(stds, reference * VANISH_FACTOR, below=True)
        if vanished is not None:
            return Verdict(
                "vanishing",
                f"vanishing by layer {vanished}: the pre-activation std falls below 10⁻³ of layer 1's "
                f"(layer {depth}: {stds[-1]:.3g})",
                phase,
            )
        exploded = _first(stds, reference * EXPLODE_FACTOR, below=False)
        if exploded is not None:
            return Verdict(
                "exploding",
                f"exploding by layer {exploded}: the pre-activation std exceeds 10³ × layer 1's "
                f"(layer {depth}: {stds[-1]:.3g})",
                phase,
            )
    elif not math.isfinite(reference):
        return Verdict("exploding", "exploding at layer 1: the pre-activation std overflows float64", phase)
    elif reference == 0.0:
        return Verdict("vanishing", "vanishing at layer 1: every pre-activation is 0", phase)
    if gradient_rate is not None and depth > 1:
        total = power(gradient_rate, depth - 1)
        if total > GRADIENT_FACTOR:
            return Verdict(
                "chaotic",
                f"chaotic: gradients ×{gradient_rate:.4g} per layer (×{total:.3g} from layer {depth} back to 1)",
                phase,
            )
        if total < 1.0 / GRADIENT_FACTOR:
            return Verdict(
                "vanishing-gradients",
                f"vanishing gradients: ×{gradient_rate:.4g} per layer (×{total:.3g} from layer {depth} back to 1)",
                phase,
            )
    if condition is not None and condition <= ISOMETRY_CONDITION:
        return Verdict("isometric", f"isometric: Jacobian condition {condition:.3g}", phase)
    rate = f"gradients ×{gradient_rate:.4g} per layer" if gradient_rate is not None else "no gradient"
    cond = f", Jacobian condition {condition:.3g}" if condition is not None else ""
    return Verdict(
        "stable",
        f"stable: std {stds[0]:.3g} → {stds[-1]:.3g} over {depth} layers, {rate}{cond}",
        phase,
    )
