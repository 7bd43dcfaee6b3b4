"""Slices made of short runs (a Shard(d) of a trailing dimension): the native kernel gathers the
words of many runs into one tile. Byte-identical to the numpy kernel for run lengths around a Philox
block (4) and a tile (512), for fills that start and end inside runs, and for every transform kind."""

from __future__ import annotations

import numpy as np
import pytest
from initserve.engine import generate, parse_spec
from initserve.engine.generate import ResultWriter

from .conftest import load

# (shape, slice): run lengths 1, 3, 4, 5, 7, 511, 512, 513 and a 3-dim odometer; runs that start on a
# Philox block and cover whole blocks (the kernel's aligned path: lengths 4, 8, 256, with odometer carries),
# runs sharing a block (length 1 every 2 elements, length 2 every 3), aligned runs after an unaligned base,
# runs of 64+ elements (filled run by run: 100 unaligned, 64 aligned with carries), aligned runs of 3 and 2
# blocks (odd block counts per tile) and aligned 1-block runs along an odd extent; either side of the
# kernel's SHORT_RUN (64): 63 unaligned, 60 aligned (gathered), 64 aligned (run by run)
CASES = [
    ([40, 9, 6], [[0, 40], [0, 9], [2, 3]]),
    ([30, 11, 8], [[3, 30], [1, 11], [4, 7]]),
    ([64, 16], [[0, 64], [4, 8]]),
    ([50, 21], [[1, 50], [3, 8]]),
    ([9, 5, 30], [[0, 9], [2, 4], [10, 17]]),
    ([6, 600], [[0, 6], [40, 551]]),
    ([5, 1024], [[0, 5], [0, 512]]),
    ([4, 1030], [[1, 4], [3, 516]]),
    ([3, 4, 5, 9], [[0, 3], [1, 4], [0, 5], [2, 7]]),
    ([6, 10, 16], [[0, 6], [2, 9], [4, 12]]),
    ([7, 5, 64], [[1, 7], [0, 5], [20, 24]]),
    ([9, 1024], [[0, 9], [256, 512]]),
    ([300, 2], [[0, 300], [1, 2]]),
    ([200, 3], [[0, 200], [1, 3]]),
    ([5, 9, 12], [[0, 5], [1, 8], [3, 7]]),
    ([40, 200], [[0, 40], [30, 130]]),
    ([3, 6, 128], [[0, 3], [1, 6], [64, 128]]),
    ([10, 7, 40], [[0, 10], [0, 7], [8, 20]]),
    ([5, 3, 24], [[1, 5], [0, 3], [16, 24]]),
    ([2, 2, 33, 16], [[0, 2], [1, 2], [0, 33], [12, 16]]),
    ([9, 200], [[0, 9], [3, 66]]),
    ([9, 200], [[0, 9], [4, 64]]),
    ([5, 200], [[0, 5], [8, 72]]),
]
SCHEMES = [
    ("normal", {}),
    ("kaiming_uniform", {}),
    ("truncated_normal", {"std": 0.5}),
    ("constant", {"value": 0.25}),
    ("sparse", {"sparsity": 0.3}),
]


@pytest.mark.parametrize(("shape", "cut"), CASES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_short_runs_match_the_numpy_kernel(shape: list[int], cut: list[list[int]], dtype: str) -> None:
    native, numpy_kernel = load("native"), load("numpy")
    for scheme, params in SCHEMES:
        if scheme == "sparse" and len(shape) != 2:
            continue
        spec = parse_spec({"shape": shape, "scheme": scheme, "params": params, "dtype": dtype, "slice": cut, "seed": 5})
        reference = generate(spec, kernel=numpy_kernel)
        assert generate(spec, kernel=native).tobytes() == reference.tobytes(), (scheme, shape, cut)
        flat = reference.reshape(-1)
        writer = ResultWriter(spec, native)
        for start in sorted({0, 1, 2, 3, 5, 511, 513, spec.numel // 2, max(spec.numel - 7, 0)}):
            for count in (1, 4, 6, 512, 515, 1600):
                count = min(count, spec.numel - start)
                if count <= 0:
                    continue
                out = np.empty(count, dtype=reference.dtype)
                writer.fill(start, out)
                assert out.tobytes() == flat[start : start + count].tobytes(), (scheme, shape, cut, start, count)
