"""B4, B5: the Python client against in-process torch and against np.load of a local file."""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import statistics
import time
from functools import partial
from itertools import count
from pathlib import Path

import numpy as np
import torch
from initserve_client import Client
from initserve_client._treehash import leaf_count, verify_workers

from benchmarks.context import Context
from benchmarks.measure import Series, interleaved, seconds
from benchmarks.model import Row, Target, ratios
from benchmarks.procfs import cpu_seconds, own_cpu_seconds

FULL_SHAPE = (16384, 16384)  # 256M float32 elements, 1 GiB
QUICK_SHAPE = (4096, 4096)


def _shape(ctx: Context) -> tuple[int, int]:
    return QUICK_SHAPE if ctx.quick else FULL_SHAPE


def fresh_fetch_row(ctx: Context) -> Row:
    """B4: each round fetches a tensor the client has never seen (new seed, empty cache directory)."""
    shape = _shape(ctx)
    server = ctx.service()
    seeds = count(4000)
    cpu: dict[str, list[float]] = {"client": [], "server": [], "torch": []}

    def client_round() -> float:
        cache_dir = ctx.workdir / "b4-cache"
        own, served = own_cpu_seconds(), cpu_seconds(server.pid)
        with Client(base_url=server.url, cache_dir=cache_dir, progress=False) as client:
            elapsed = seconds(partial(client.tensor, list(shape), "kaiming_normal", seed=next(seeds), name="weight"))
        cpu["client"].append(own_cpu_seconds() - own)
        cpu["server"].append(cpu_seconds(server.pid) - served)
        gc.collect()  # the array maps a cache file: unmap before deleting the directory
        shutil.rmtree(cache_dir, ignore_errors=True)
        return elapsed

    def torch_round() -> float:
        own = own_cpu_seconds()
        elapsed = seconds(lambda: torch.nn.init.kaiming_normal_(torch.empty(shape, dtype=torch.float32)))
        cpu["torch"].append(own_cpu_seconds() - own)
        return elapsed

    ctx.log(f"B4: client tensor() of fresh {shape[0]}×{shape[1]} f32 kaiming_normal, {ctx.repeats} rounds")
    client_s, torch_s = interleaved([client_round, torch_round], ctx.repeats)
    numel = shape[0] * shape[1]
    client_cpu, server_cpu = (statistics.median(cpu[side]) for side in ("client", "server"))
    cores = os.cpu_count() or 1
    return Row(
        key="B4 client fresh",
        title=f"Client.tensor() of a fresh {shape[0]}×{shape[1]} f32 kaiming_normal over loopback HTTP "
        "(default client: one stream, verified cache in a new directory; checked against the tree hash the "
        "server computed while streaming) vs torch.empty + torch.nn.init.kaiming_normal_ in-process",
        initserve=Series(tuple(client_s), "s").rate(numel / 1e6, "M el/s"),
        anchor=Series(tuple(torch_s), "s").rate(numel / 1e6, "M el/s"),
        ratios=ratios(torch_s, client_s),
        ratio_meaning="torch s ÷ client s",
        target=Target(">=", 1.0),
        notes=[
            "both sides include allocating the result (a user's `nn.Linear` does torch.empty + init)",
            f"CPU per fetch (median): client {client_cpu:.2f} s, server {server_cpu:.2f} s (generation, "
            f"SHA-256 of what it streams, sending); torch {statistics.median(cpu['torch']):.2f} s. "
            f"On {cores} cores the fetch needs ≥ {(client_cpu + server_cpu) / cores:.2f} s: ceiling "
            f"{min(torch_s) * cores / (client_cpu + server_cpu):.2f}× against torch's fastest round",
        ],
    )


def _sha256_rate(path: Path, nbytes: int = 256 << 20) -> float:
    """GB/s of one thread's SHA-256 over the first ``nbytes`` of a (page-cached) file, CPU time."""
    with path.open("rb") as handle:
        data = handle.read(nbytes)
    begin = time.thread_time()
    hashlib.sha256(data).digest()
    return len(data) / (time.thread_time() - begin) / 1e9


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
        sha_rate = _sha256_rate(npy)
    gc.collect()
    shutil.rmtree(cache_dir, ignore_errors=True)
    Path(npy).unlink(missing_ok=True)
    size_gb = shape[0] * shape[1] * 4 / 1e9
    load_gbs = [size_gb / value for value in load_s]
    threads = min(verify_workers(), leaf_count(shape[0] * shape[1] * 4))  # a hit hashes leaves, one a thread
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
        notes=[
            f"SHA-256 on one thread: {sha_rate:.2f} GB/s (CPU time); {threads} hashing thread(s) verify at most "
            f"{threads * sha_rate:.2f} GB/s: ceiling {threads * sha_rate / max(load_gbs):.2f}× "
            "against np.load's fastest round"
        ],
    )
