"""Statistics of a spec's result, computed chunk by chunk in float64 on the cast values.

Nothing the size of the tensor is held in memory. Chunks have a fixed size (independent of the
thread count) and are merged in order, so the figures do not depend on threads.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from .dtypes import to_float64
from .generate import iter_result_chunks
from .kernels import Kernel
from .samplers import Moments
from .spec import ALGORITHM_VERSION, Spec

STATS_CHUNK = 1 << 20
HISTOGRAM_BINS = 64
UNBOUNDED_SIGMAS = 6.0


def histogram_range(moments: Moments) -> tuple[float, float]:
    """The scheme's support, or mean ± 6σ where it is unbounded; a unit window around constants."""
    low = moments.low if moments.low is not None else moments.mean - UNBOUNDED_SIGMAS * moments.std
    high = moments.high if moments.high is not None else moments.mean + UNBOUNDED_SIGMAS * moments.std
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return low, high


def compute_stats(spec: Spec, *, kernel: Kernel | None = None, threads: int | None = None) -> dict[str, Any]:
    """numel, shape, dtype, mean, std, min, max, zeros fraction, histogram, fans, gain, expected
    moments, sha256 of the tensor bytes, algorithm, canonical spec."""
    dtype = spec.dtype_info
    empty = spec.numel == 0
    moments = None if empty else spec.built.sampler.moments()
    low, high = histogram_range(moments) if moments is not None else (0.0, 1.0)
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    below = above = zeros = 0
    count, mean, m2 = 0, 0.0, 0.0
    minimum, maximum = math.inf, -math.inf
    digest = hashlib.sha256()
    for chunk in iter_result_chunks(spec, kernel=kernel, threads=threads, block=STATS_CHUNK):
        digest.update(chunk.data.cast("B"))
        values = to_float64(chunk, dtype)
        n = values.size
        chunk_mean = float(values.mean())
        chunk_m2 = float(np.square(values - chunk_mean).sum())
        delta = chunk_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += chunk_m2 + delta * delta * count * n / total
        count = total
        minimum, maximum = min(minimum, float(values.min())), max(maximum, float(values.max()))
        zeros += int(np.count_nonzero(values == 0.0))
        below += int(np.count_nonzero(values < low))
        above += int(np.count_nonzero(values > high))
        counts += np.histogram(values, bins=edges)[0]
    fan_in, fan_out = _fans(spec)
    return {
        "numel": spec.numel,
        "shape": list(spec.result_shape),
        "dtype": spec.dtype,
        "mean": None if empty else mean,
        "std": None if empty else math.sqrt(m2 / count),
        "min": None if empty else minimum,
        "max": None if empty else maximum,
        "zeros_fraction": None if empty else zeros / count,
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist(), "below": below, "above": above},
        "fan_in": fan_in,
        "fan_out": fan_out,
        "gain": None if empty else spec.built.gain,
        "expected": None
        if moments is None
        else {"mean": moments.mean, "std": moments.std, "low": moments.low, "high": moments.high},
        "sha256": digest.hexdigest(),
        "algorithm": ALGORITHM_VERSION,
        "reproducibility": spec.scheme_entry.reproducibility,
        "spec": spec.canonical(),
    }


def _fans(spec: Spec) -> tuple[int | None, int | None]:
    if not spec.scheme_entry.uses_fans:
        return None, None
    params = dict(spec.params)
    fan_in, fan_out = spec.layer.fans
    return int(params.get("fan_in", fan_in)), int(params.get("fan_out", fan_out))
