"""The native kernel's own rows: B10 column slice vs the full generation, B12 the kernel as a fraction
of the memory-fill ceiling, B13 native vs numpy kernel per scheme.

All sides write into pre-touched buffers through the same 1M-element blocks on a pool of all cores,
interleaved round by round (benchmarks.measure), so the ratios compare like with like.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from initserve.engine import resolve_kernel
from initserve.engine.generate import default_threads

from benchmarks.context import Context
from benchmarks.engine import FULL_SHAPE, QUICK_SHAPE, BlockFiller
from benchmarks.measure import Series, interleaved, seconds
from benchmarks.model import Row, Target, ratios

SHARDS = 16  # B10: the Shard(1) shard of a 16-way tensor-parallel layer
REPORT = Target(">=", 0.0)  # rows the issue asks to report, with no target of their own
PER_SCHEME = ("normal", "kaiming_normal", "truncated_normal", "uniform", "kaiming_uniform")


def _spec(scheme: str, shape: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    return {"shape": list(shape), "scheme": scheme, "dtype": "float32", "seed": 1, **extra}


def slice_row(ctx: Context) -> Row:
    """B10: 1/16 of the columns of a kaiming_uniform weight vs 1/16 of the whole generation's time."""
    shape = QUICK_SHAPE if ctx.quick else FULL_SHAPE
    numel = math.prod(shape)
    width = shape[1] // SHARDS
    with ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="bench-slice") as pool:
        whole_out = np.ones(numel, dtype=np.float32)
        shard_out = np.ones(numel // SHARDS, dtype=np.float32)
        whole = BlockFiller(_spec("kaiming_uniform", shape), whole_out, pool)
        shard = BlockFiller(_spec("kaiming_uniform", shape, slice=[[0, shape[0]], [width, 2 * width]]), shard_out, pool)
        ctx.log(f"B10 column slice: {shape[0]}×{shape[1]}, columns {width}..{2 * width}, {ctx.repeats} rounds")
        shard_s, whole_s = interleaved([partial(seconds, shard), partial(seconds, whole)], ctx.repeats)
    sixteenth = [s / SHARDS for s in whole_s]
    return Row(
        key="B10 column slice",
        title=f"kaiming_uniform {shape[0]}×{shape[1]} f32, Shard(1) slice of {width} columns (1/{SHARDS}), "
        f"native kernel, {default_threads()} threads, vs 1/{SHARDS} of the whole tensor's time",
        initserve=Series(tuple(shard_s), "s"),
        anchor=Series(tuple(sixteenth), "s"),
        ratios=ratios(shard_s, sixteenth),
        ratio_meaning=f"slice s ÷ (whole s / {SHARDS})",
        target=Target("<=", 1.25),
        notes=[f"{shape[0]} runs of {width} elements, handed to the kernel in one call per 1M-element block"],
    )


def fill_ceiling_rows(ctx: Context) -> list[Row]:
    """B12: native kernel el/s as a fraction of ``ndarray.fill`` of the same pre-touched buffer."""
    shape = QUICK_SHAPE if ctx.quick else FULL_SHAPE
    numel = math.prod(shape)
    rows = []
    with ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="bench-fill") as pool:
        out = np.ones(numel, dtype=np.float32)
        for scheme in ("normal", "uniform"):
            kernel = BlockFiller(_spec(scheme, shape), out, pool)
            ctx.log(f"B12 {scheme} vs fill: {numel / 2**20:.0f}M elements, {ctx.repeats} rounds")
            kernel_s, fill_s = interleaved(
                [partial(seconds, kernel), partial(seconds, partial(out.fill, 0.5))], ctx.repeats
            )
            rows.append(
                Row(
                    key=f"B12 {scheme} / memory fill",
                    title=f"native {scheme} {shape[0]}×{shape[1]} f32 ({default_threads()} threads) as a fraction "
                    "of numpy fill() of the same buffer (the memory-bandwidth ceiling)",
                    initserve=Series(tuple(kernel_s), "s").rate(numel / 1e6, "M el/s"),
                    anchor=Series(tuple(fill_s), "s").rate(numel / 1e6, "M el/s"),
                    ratios=ratios(fill_s, kernel_s),
                    ratio_meaning="kernel el/s ÷ fill el/s",
                    target=REPORT,
                    notes=["report only (no target): how far generation is from writing memory"],
                )
            )
    return rows


def native_vs_numpy_rows(ctx: Context) -> list[Row]:
    """B13: the two kernels on the same blocks and pool, per scheme."""
    shape = (1024, 4096) if ctx.quick else (4096, 4096)
    numel = math.prod(shape)
    native, reference = resolve_kernel("native"), resolve_kernel("numpy")
    rows = []
    with ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="bench-kernels") as pool:
        out = np.ones(numel, dtype=np.float32)
        for scheme in PER_SCHEME:
            fast = BlockFiller(_spec(scheme, shape), out, pool, native)
            slow = BlockFiller(_spec(scheme, shape), out, pool, reference)
            ctx.log(f"B13 {scheme}: native vs numpy, {numel / 2**20:.0f}M elements, {ctx.repeats} rounds")
            native_s, numpy_s = interleaved([partial(seconds, fast), partial(seconds, slow)], ctx.repeats)
            rows.append(
                Row(
                    key=f"B13 {scheme} native/numpy",
                    title=f"{scheme} {shape[0]}×{shape[1]} f32, native vs numpy kernel ({default_threads()} threads)",
                    initserve=Series(tuple(native_s), "s").rate(numel / 1e6, "M el/s"),
                    anchor=Series(tuple(numpy_s), "s").rate(numel / 1e6, "M el/s"),
                    ratios=ratios(numpy_s, native_s),
                    ratio_meaning="native el/s ÷ numpy el/s",
                    target=Target(">=", 1.0),
                )
            )
    return rows
