"""B4, B5: the Python client against in-process torch and against np.load of a local file."""

from __future__ import annotations

import gc
import shutil
from functools import partial
from itertools import count
from pathlib import Path

import numpy as np
import torch
from initserve_client import Client

from benchmarks.context import Context
from benchmarks.measure import Series, interleaved, seconds
from benchmarks.model import Row, Target, ratios

FULL_SHAPE = (16384, 16384)  # 256M float32 elements, 1 GiB
QUICK_SHAPE = (4096, 4096)


def _shape(ctx: Context) -> tuple[int, int]:
    return QUICK_SHAPE if ctx.quick else FULL_SHAPE


def fresh_fetch_row(ctx: Context) -> Row:
    """B4: each round fetches a tensor the client has never seen (new seed, empty cache directory)."""
    shape = _shape(ctx)
    base_url = ctx.service().url
    seeds = count(4000)

    def client_round() -> float:
        cache_dir = ctx.workdir / "b4-cache"
        with Client(base_url=base_url, cache_dir=cache_dir, progress=False) as client:
            elapsed = seconds(partial(client.tensor, list(shape), "kaiming_normal", seed=next(seeds), name="weight"))
        gc.collect()  # the array maps a cache file: unmap before deleting the directory
        shutil.rmtree(cache_dir, ignore_errors=True)
        return elapsed

    def torch_round() -> float:
        return seconds(lambda: torch.nn.init.kaiming_normal_(torch.empty(shape, dtype=torch.float32)))

    ctx.log(f"B4: client tensor() of fresh {shape[0]}×{shape[1]} f32 kaiming_normal, {ctx.repeats} rounds")
    client_s, torch_s = interleaved([client_round, torch_round], ctx.repeats)
    numel = shape[0] * shape[1]
    return Row(
        key="B4 client fresh",
        title=f"Client.tensor() of a fresh {shape[0]}×{shape[1]} f32 kaiming_normal over loopback HTTP "
        "(default client: one stream, verified cache in a new directory) vs torch.empty + "
        "torch.nn.init.kaiming_normal_ in-process",
        initserve=Series(tuple(client_s), "s").rate(numel / 1e6, "M el/s"),
        anchor=Series(tuple(torch_s), "s").rate(numel / 1e6, "M el/s"),
        ratios=ratios(torch_s, client_s),
        ratio_meaning="torch s ÷ client s",
        target=Target(">=", 1.0),
        notes=["both sides include allocating the result (a user's `nn.Linear` does torch.empty + init)"],
    )


def warm_fetch_row(ctx: Context) -> Row:
    """B5: a cache hit (SHA-256 tree hash verified, a thread per core, memory-mapped) vs np.load of a same-size .npy."""
    shape = _shape(ctx)
    cache_dir = ctx.workdir / "b5-cache"
    npy = ctx.workdir / "b5-same-size.npy"
    with Client(base_url=ctx.service().url, cache_dir=cache_dir, progress=False) as client:
        fetched = client.tensor(list(shape), "kaiming_normal", seed=5, name="weight")
        np.save(npy, np.asarray(fetched))
        del fetched
        gc.collect()

        def client_round() -> float:
            return seconds(partial(client.tensor, list(shape), "kaiming_normal", seed=5, name="weight"))

        def npload_round() -> float:
            return seconds(partial(np.load, npy))

        ctx.log(f"B5: warm cached fetch vs np.load of {npy.stat().st_size / 2**20:.0f} MiB, {ctx.repeats} rounds")
        client_s, load_s = interleaved([client_round, npload_round], ctx.repeats)
    gc.collect()
    shutil.rmtree(cache_dir, ignore_errors=True)
    Path(npy).unlink(missing_ok=True)
    size_gb = shape[0] * shape[1] * 4 / 1e9
    return Row(
        key="B5 client cached",
        title=f"Client.tensor() cache hit of the same {shape[0]}×{shape[1]} f32 tensor (every byte verified by "
        "the SHA-256 tree hash, leaves on a thread per core; memory-mapped; no HTTP) vs np.load of a same-size .npy "
        "from disk (page cache warm)",
        initserve=Series(tuple(client_s), "s").rate(size_gb, "GB/s"),
        anchor=Series(tuple(load_s), "s").rate(size_gb, "GB/s"),
        ratios=ratios(load_s, client_s),
        ratio_meaning="np.load s ÷ client s",
        target=Target(">=", 0.8),
    )
