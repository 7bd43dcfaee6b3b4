"""What one benchmark row reports: both sides' figures, the per-round ratios and the target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

from benchmarks.measure import Series


@dataclass(frozen=True)
class Target:
    """``ratio >= value`` (higher is better) or ``ratio <= value`` (lower is better)."""

    op: Literal[">=", "<="]
    value: float
    unit: str = "×"

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}{self.unit}"


@dataclass(frozen=True)
class Row:
    """One comparison. ``ratios`` holds one value per interleaved round (initserve vs anchor).

    For an absolute row (B9) ``anchor`` is None and ``ratios`` are the initserve figures themselves.
    """

    key: str
    title: str
    initserve: Series
    anchor: Series | None
    ratios: tuple[float, ...]
    ratio_meaning: str
    target: Target
    issue2_target: Target | None = None  # issue 2's (looser) engine targets, B1–B3 only
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        return self.target.met(self.ratio)


def ratios(numerators: list[float], denominators: list[float]) -> tuple[float, ...]:
    """Per-round ratios of two interleaved series."""
    return tuple(n / d for n, d in zip(numerators, denominators, strict=True))
