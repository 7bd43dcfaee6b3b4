"""Repeated, interleaved timings and their summaries (median and spread)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Series:
    """Repeated observations of one quantity, in ``unit``."""

    values: tuple[float, ...]
    unit: str

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def scaled(self, factor: float, unit: str) -> Series:
        return Series(tuple(value * factor for value in self.values), unit)

    def rate(self, amount: float, unit: str) -> Series:
        """``amount / value`` for each observation (seconds → a throughput)."""
        return Series(tuple(amount / value for value in self.values), unit)


def seconds(action: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    begin = time.perf_counter()
    action()
    return time.perf_counter() - begin


def seconds_per_call(action: Callable[[], object], budget: float = 0.2) -> float:
    """Mean wall-clock seconds of one call, over as many back-to-back calls as fill ``budget`` seconds
    (at least one). For operations of a few milliseconds: one call is at the mercy of a single
    scheduler tick or frequency step, which three rounds cannot average out (timeit's autorange idea)."""
    calls = 0
    begin = time.perf_counter()
    while True:
        action()
        calls += 1
        elapsed = time.perf_counter() - begin
        if elapsed >= budget:
            return elapsed / calls


def interleaved(actions: Sequence[Callable[[], float]], repeats: int, *, warmup: bool = True) -> list[list[float]]:
    """Run ``actions`` in rounds, ``repeats`` times; each returns its own measurement.

    Rounds rotate the order (A B C, B C A, …) so every side meets the same load drift on a shared
    machine and the per-round ratios stay comparable even when absolute figures swing.
    """
    if warmup:
        for action in actions:
            action()
    results: list[list[float]] = [[] for _ in actions]
    for round_ in range(repeats):
        for step in range(len(actions)):
            index = (round_ + step) % len(actions)
            results[index].append(actions[index]())
    return results
