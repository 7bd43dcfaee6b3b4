"""Statistics of a spec's result, computed chunk by chunk in float64 on the cast values.

Nothing the size of the tensor is held in memory. Chunks have a fixed size (independent of the
thread count) and are merged in order, so the figures do not depend on threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .dtypes import to_float64
from .frames import coherence, welch_bound
from .generate import WholeSource, generate, iter_result_chunks
from .kernels import Kernel
from .samplers import Moments, Orthogonal, scaling_exponent
from .spec import Spec

STATS_CHUNK = 1 << 20
HISTOGRAM_BINS = 64
UNBOUNDED_SIGMAS = 6.0
COHERENCE_MAX_VECTORS = 4096  # coherence is exact up to this many vectors (a 4096² Gram)
COHERENCE_MAX_NUMEL = 1 << 24  # values kept in float64 for it: 128 MiB at most


def histogram_range(moments: Moments) -> tuple[float, float]:
    """The scheme's support, or mean ± 6σ where it is unbounded; a unit window around constants."""
    low = moments.low if moments.low is not None else moments.mean - UNBOUNDED_SIGMAS * moments.std
    high = moments.high if moments.high is not None else moments.mean + UNBOUNDED_SIGMAS * moments.std
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return low, high


def histogram_edges(low: float, high: float) -> npt.NDArray[np.float64]:
    """HISTOGRAM_BINS + 1 finite, non-decreasing edges over [low, high] (clamped to float64's range).

    ``linspace`` when ``high − low`` is finite; otherwise (a window of ±6σ past 1e308) each edge is
    the convex combination (1 − t)·low + t·high, which cannot overflow. Either way a running maximum
    keeps the edges in order where rounding does not: a window a few hundred subnormals wide (std
    1.5e-323) spaces edges below float64's resolution, and np.histogram refuses decreasing edges."""
    top = float(np.finfo(np.float64).max)
    low, high = min(max(low, -top), top), min(max(high, -top), top)
    if math.isfinite(high - low):
        spread = np.linspace(low, high, HISTOGRAM_BINS + 1)
    else:
        t = np.arange(HISTOGRAM_BINS + 1, dtype=np.float64) / HISTOGRAM_BINS
        spread = low * (1.0 - t) + high * t
    edges: npt.NDArray[np.float64] = np.maximum.accumulate(spread)
    return edges


class StatsRun:
    """The statistics of a spec's result, computed a chunk per :meth:`step` so that a caller can stop
    between chunks (a client that went away) and let other work run in between.

    ``while run.step(): ...`` then :meth:`result`; :func:`compute_stats` does exactly that.
    """

    def __init__(
        self,
        spec: Spec,
        *,
        kernel: Kernel | None = None,
        threads: int | None = None,
        whole_source: WholeSource | None = None,
    ) -> None:
        self.spec = spec
        self.kernel, self.threads, self.whole_source = kernel, threads, whole_source
        # orthogonal: the Gram of the whole matrix is reported too (``orthogonality``)
        sampler = None if spec.numel == 0 else spec.built.sampler
        self.orthogonal = sampler if isinstance(sampler, Orthogonal) else None
        self.kept: list[npt.NDArray[np.float64]] | None = [] if self.orthogonal and spec.slice is None else None
        self.empty = spec.numel == 0
        self.moments = None if self.empty else spec.built.sampler.moments()
        self.low, self.high = histogram_range(self.moments) if self.moments is not None else (0.0, 1.0)
        self.edges = histogram_edges(self.low, self.high)
        self.counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self.below = self.above = self.zeros = 0
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        # Values past 2^400 (e.g. eye with gain 1e200 in float64) would overflow the sum of squares: mean
        # and m2 are then kept in units of 2^exponent (power-of-two scaling is exact; below it, unchanged).
        self.exponent = 0 if self.empty else scaling_exponent(float(spec.built.sampler.max_abs()))
        self.minimum, self.maximum = math.inf, -math.inf
        self.digest = hashlib.sha256()
        self._kept: list[npt.NDArray[np.float64]] = []
        self._keep = _frame_prefix(spec)
        self._chunks = iter_result_chunks(
            spec, kernel=kernel, threads=threads, block=STATS_CHUNK, whole_source=whole_source
        )

    def step(self) -> bool:
        """Fold the next chunk (STATS_CHUNK elements) in; False once every chunk is in."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.digest.update(chunk.data.cast("B"))
        values = to_float64(chunk, self.spec.dtype_info)
        if self._keep > 0:  # the leading values the frame figures need (at most 2^24)
            self._kept.append(values[: self._keep].copy())
            self._keep -= min(self._keep, values.size)
        if self.kept is not None:
            self.kept.append(values)
        n = values.size
        scaled = np.ldexp(values, -self.exponent) if self.exponent else values
        with np.errstate(over="ignore", invalid="ignore"):  # figures beyond float64 become null, not errors
            chunk_mean = float(scaled.mean())
            chunk_m2 = float(np.square(scaled - chunk_mean).sum())
        delta = chunk_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += chunk_m2 + delta * delta * self.count * n / total
        self.count = total
        self.minimum, self.maximum = min(self.minimum, float(values.min())), max(self.maximum, float(values.max()))
        self.zeros += int(np.count_nonzero(values == 0.0))
        self.below += int(np.count_nonzero(values < self.low))
        self.above += int(np.count_nonzero(values > self.high))
        self.counts += np.histogram(values, bins=self.edges)[0]
        return True

    def close(self) -> None:
        """Stop early: release the chunk generator's threads and buffers."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def result(self) -> dict[str, Any]:
        spec, empty, moments = self.spec, self.empty, self.moments
        fan_in, fan_out = _fans(spec)
        if spec.scheme_entry.reports_fans and not empty:  # orthogonal: the layer's fans, for reference
            fan_in, fan_out = spec.layer.fans
        extra: dict[str, Any] = {}
        if self.orthogonal is not None:
            if self.kept is not None:
                whole = np.concatenate(self.kept)
            else:
                full = generate(
                    dataclasses.replace(spec, slice=None),
                    kernel=self.kernel,
                    threads=self.threads,
                    whole_source=self.whole_source,
                )
                whole = to_float64(full, spec.dtype_info)
            extra["orthogonality"] = orthogonality(
                whole.reshape(self.orthogonal.rows, self.orthogonal.cols), self.orthogonal.gain
            )
        return {
            "numel": spec.numel,
            "shape": list(spec.result_shape),
            "dtype": spec.dtype,
            "mean": None if empty else math.ldexp(self.mean, self.exponent),
            "std": None if empty else math.ldexp(math.sqrt(self.m2 / self.count), self.exponent),
            "min": None if empty else self.minimum,
            "max": None if empty else self.maximum,
            "zeros_fraction": None if empty else self.zeros / self.count,
            "histogram": {
                "edges": self.edges.tolist(),
                "counts": self.counts.tolist(),
                "below": self.below,
                "above": self.above,
            },
            "fan_in": fan_in,
            "fan_out": fan_out,
            "layout": spec.layout,
            "gain": gain_of(spec),
            "expected": None
            if moments is None
            else {"mean": moments.mean, "std": moments.std, "low": moments.low, "high": moments.high},
            "frame": _frame(spec, self._kept),
            "sha256": self.digest.hexdigest(),
            "algorithm": spec.algorithm,
            # params may select another algorithm's class (delta_orthogonal base=hadamard); an empty
            # tensor is never built (its fans may be 0)
            "reproducibility": (None if empty else spec.built.reproducibility)
            or spec.scheme_entry.reproducibility_for(spec.algorithm),
            "spec": spec.canonical(),
            **extra,
        }


def compute_stats(
    spec: Spec,
    *,
    kernel: Kernel | None = None,
    threads: int | None = None,
    whole_source: WholeSource | None = None,
) -> dict[str, Any]:
    """numel, shape, dtype, mean, std, min, max, zeros fraction, histogram, fans, gain, expected
    moments, sha256 of the tensor bytes, algorithm, reproducibility class, canonical spec; for
    orthogonal also ``orthogonality`` (see :func:`orthogonality`). Figures beyond float64 are inf or
    NaN here (the HTTP layer writes them as null)."""
    run = StatsRun(spec, kernel=kernel, threads=threads, whole_source=whole_source)
    while run.step():
        pass
    return run.result()


def orthogonality(matrix: npt.NDArray[np.float64], gain: float) -> dict[str, Any]:
    """How orthogonal the stored values are: max |W·Wᵀ − gain²·I| for a wide or square (rows, cols)
    matrix, max |Wᵀ·W − gain²·I| for a tall one (the Gram of the shorter side, in float64, of the
    *whole* tensor even when a slice was asked for). Rounding to the output dtype dominates it:
    ~1e-15 for float64, ~1e-7 for float32, ~1e-3 for float16/bfloat16 (times gain²)."""
    rows, cols = matrix.shape
    tall = rows > cols
    with np.errstate(over="ignore", invalid="ignore"):  # huge gains: inf/NaN, written as null
        gram = matrix.T @ matrix if tall else matrix @ matrix.T
        target = gain * gain
        deviation = float(np.max(np.abs(gram - target * np.eye(gram.shape[0])))) if gram.size else 0.0
    return {
        "gram": "WᵀW" if tall else "WWᵀ",
        "matrix_shape": [rows, cols],
        "expected_diagonal": target,
        "max_abs_deviation": deviation,
    }


def gain_of(spec: Spec) -> float | None:
    """The gain the scheme applies; from the params alone, so a zero-size tensor knows it too."""
    gain = spec.scheme_entry.gain_of
    if gain is not None:
        return gain(dict(spec.params))
    return None if spec.full_numel == 0 else spec.built.gain  # schemes whose gain needs the shape


def fans_header(spec: Spec) -> str | None:
    """``fan_in=784; fan_out=256; layout=keras``: the fans a fan-using scheme divided by, else None."""
    fan_in, fan_out = _fans(spec)
    if fan_in is None and fan_out is None:
        return None
    parts = [f"{key}={value}" for key, value in (("fan_in", fan_in), ("fan_out", fan_out)) if value is not None]
    return "; ".join([*parts, f"layout={spec.layout}"])


def _fans(spec: Spec) -> tuple[int | None, int | None]:
    """The fans the scheme uses (canonical params first, else from the shape); None for a fan it ignores."""
    if not spec.scheme_entry.uses_fans:
        return None, None
    names = {param.name for param in spec.scheme_entry.params}
    params = dict(spec.params)
    fan_in, fan_out = spec.layer.fans
    return (
        int(params.get("fan_in", fan_in)) if "fan_in" in names else None,
        int(params.get("fan_out", fan_out)) if "fan_out" in names else None,
    )


def _frame_prefix(spec: Spec) -> int:
    """How many leading result values the frame figures need (0: none are computed)."""
    if len(spec.result_shape) != 2 or spec.numel == 0:
        return 0
    if spec.numel <= COHERENCE_MAX_NUMEL:
        return spec.numel
    cols = spec.result_shape[1]
    if spec.layout == "torch" and COHERENCE_MAX_VECTORS * cols <= COHERENCE_MAX_NUMEL:
        return COHERENCE_MAX_VECTORS * cols  # the leading rows: a lower bound of the coherence
    return 0


def _frame(spec: Spec, kept: list[np.ndarray[Any, np.dtype[np.float64]]]) -> dict[str, Any] | None:
    """Coherence of the output units of a 2-D result (torch: rows, keras: columns) against the Welch
    bound of its shape. Exact for ≤ 4,096 vectors; above that the first 4,096 rows (torch layout, if
    they fit in 2^24 values) give a lower bound (``exact`` false); otherwise null figures."""
    if len(spec.result_shape) != 2 or spec.numel == 0:
        return None
    rows, cols = spec.result_shape
    vectors, dim = (rows, cols) if spec.layout == "torch" else (cols, rows)
    bound = welch_bound(vectors, dim)
    body: dict[str, Any] = {"vectors": vectors, "dim": dim, "welch_bound": bound}
    if not kept:
        return {**body, "coherence": None, "ratio": None, "vectors_used": 0, "exact": False, "zero_vectors": None}
    values = np.concatenate(kept)
    matrix = values.reshape(-1, cols)
    if spec.layout != "torch":
        matrix = matrix.T
    used = min(matrix.shape[0], COHERENCE_MAX_VECTORS)
    mu, zero_vectors = coherence(matrix[:used])
    return {
        **body,
        "coherence": mu,
        "ratio": mu / bound if bound > 0.0 else None,
        "vectors_used": used,
        "exact": used == vectors,
        "zero_vectors": zero_vectors,
    }
