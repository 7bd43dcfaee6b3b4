"""B11's shard layouts in CPU time, for a machine others are using (not part of ``make bench``).

Wall-clock ratios mean nothing on a shared, loaded machine; per-thread CPU time of one thread does
not see the other processes' queueing (it still sees their cache and SMT contention, so rounds are
interleaved and the minimum is kept). Two levels, each against the whole tensor in the same rounds:

- ``kernel``: ``ResultWriter.fill`` of 3M result elements into one buffer (the kernel alone):
  a contiguous range, then the shard layouts of B11 and the harder short-run cases;
- ``init_module``: B11's fills (LocalClient, one thread), and the fixed cost of one init_module call
  measured with a kernel that writes nothing.

``python -m benchmarks.shard_cpu [--kernel native|numpy] [--rounds N]``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from initserve.engine import parse_spec, resolve_kernel
from initserve.engine.generate import ResultWriter

SCHEMES = ("kaiming_uniform", "kaiming_normal")
COUNT = 3 << 20
# name: (global shape, slice) — rank 5 of 16 unless said
LAYOUTS: dict[str, tuple[tuple[int, ...], list[list[int]] | None]] = {
    "contiguous range": ((12288, 4096), None),
    "Shard(0) rows": ((12288, 4096), [[3840, 4608]]),
    "Shard(1) 256-element runs": ((12288, 4096), [[0, 12288], [1280, 1536]]),
    "Shard(2) 4-element runs": ((1536, 512, 64), [[0, 1536], [0, 512], [20, 24]]),
    "4-element runs off a Philox block": ((1536, 512, 64), [[0, 1536], [0, 512], [21, 25]]),
    "1-element runs": ((1536, 512, 64), [[0, 1536], [0, 512], [21, 22]]),
}


def best_of(actions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Minimum thread CPU seconds of each action over interleaved rounds (one warm-up each)."""
    for action in actions.values():
        action()
    best = dict.fromkeys(actions, math.inf)
    for _ in range(rounds):
        for name, action in actions.items():
            begin = time.thread_time()
            action()
            best[name] = min(best[name], time.thread_time() - begin)
    return best


def kernel_level(kernel_name: str, rounds: int) -> None:
    kernel = resolve_kernel(kernel_name)
    out = np.empty(COUNT, dtype=np.float32)
    for scheme in SCHEMES:
        actions: dict[str, Callable[[], object]] = {}
        for name, (shape, cut) in LAYOUTS.items():
            body = {"shape": list(shape), "scheme": scheme, "seed": 1, "name": "weight"}
            writer = ResultWriter(parse_spec(body if cut is None else {**body, "slice": cut}), kernel)
            actions[name] = lambda writer=writer: writer.fill(0, out)
        best = best_of(actions, rounds)
        whole = best["contiguous range"]
        print(f"\nkernel ({kernel.name}), {scheme} float32, {COUNT / 2**20:.0f}M result elements, thread CPU:")
        for name, seconds in best.items():
            print(f"  {name:36s} {seconds / COUNT * 1e9:6.3f} ns/element  {whole / seconds:5.3f}× the range's rate")


def init_module_level(kernel_name: str, rounds: int) -> None:
    import importlib

    from initserve_client import LocalClient, init_module

    from benchmarks.rows.shards import FULL_SHAPE, FULL_SHAPE_3D, RANK, RANKS, SCHEME, _megatron

    client = LocalClient(threads=1, kernel=kernel_name)

    def fill(shape: tuple[int, ...], dim: int | None, stride: int = 1, tp: int = RANKS) -> Callable[[], object]:
        module, size = _megatron(shape, dim, stride, tp), tp if dim is not None else 1
        return lambda: init_module(module, client=client, seed=1, policy=SCHEME, tp_rank=RANK % size, tp_size=size)

    numel, numel3 = math.prod(FULL_SHAPE), math.prod(FULL_SHAPE_3D)
    cases = {
        "whole": (fill(FULL_SHAPE, None), numel, "whole"),
        "whole 3-D": (fill(FULL_SHAPE_3D, None), numel3, "whole 3-D"),
        "Shard(0)": (fill(FULL_SHAPE, 0), numel // RANKS, "whole"),
        "Shard(1)": (fill(FULL_SHAPE, 1), numel // RANKS, "whole"),
        "Shard(2)": (fill(FULL_SHAPE_3D, 2), numel3 // RANKS, "whole 3-D"),
        "strided QKV": (fill(FULL_SHAPE, 0, 3, 4), numel // 4, "whole"),
    }
    best = best_of({name: action for name, (action, _, _) in cases.items()}, rounds)
    print(f"\ninit_module / LocalClient(threads=1, kernel={client.kernel}), B11's tensors, thread CPU:")
    for name, (_, count, anchor) in cases.items():
        rate, anchor_rate = count / best[name], cases[anchor][1] / best[anchor]
        per_element = best[name] / count * 1e9
        print(f"  {name:12s} {per_element:6.3f} ns/element  {rate / anchor_rate:5.3f}× the whole tensor's rate")
    generate_module = importlib.import_module("initserve.engine.generate")
    real_fill = generate_module.ResultWriter.fill
    generate_module.ResultWriter.fill = lambda self, start, out: None  # the fixed cost alone
    try:
        fixed = best_of({name: action for name, (action, _, _) in cases.items() if "whole" not in name}, rounds)
    finally:
        generate_module.ResultWriter.fill = real_fill
    print(
        "  fixed cost per init_module call (a kernel that writes nothing): "
        + ", ".join(f"{name} {seconds * 1e6:.0f} µs" for name, seconds in fixed.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shard_cpu", description=__doc__)
    parser.add_argument("--kernel", default="native", choices=("native", "numpy"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kernel_level(args.kernel, args.rounds)
    init_module_level(args.kernel, args.rounds)


if __name__ == "__main__":
    main()
