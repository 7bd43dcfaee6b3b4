"""B11: a rank's shard per element vs the whole tensor per element (issue 14: ≥ 0.8× for any Shard(d)).

Both sides run what ``init_module`` runs on a rank, in-process (``LocalClient``, all cores): the spec
with the global shape and the rank's boxes as slices, filled into an existing parameter. The anchor is
the same parameter unsharded in the same rounds. A Megatron-attribute parameter stands for the
placement (``partition_dim`` d ≡ ``Shard(d)``), so no process group is needed; the 2-D grid
([Shard(0), Shard(1)] on 4×4) is the box ``placement_layout`` gives rank (1, 2).

``python -m benchmarks.rows.shards [--quick]`` prints these rows alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from functools import partial

import torch
from initserve_client import LocalClient, init_module
from initserve_client._distributed import placement_layout
from torch import nn
from torch.distributed.tensor import Shard

from benchmarks.context import Context
from benchmarks.measure import Series, interleaved, seconds
from benchmarks.model import Row, Target, ratios

FULL_SHAPE = (12288, 4096)  # 48M elements (192 MiB); rows divisible by 16 ranks and by 3 · 4 (strided QKV)
QUICK_SHAPE = (1536, 1024)
RANKS = 16
RANK = 5
SCHEME = "kaiming_uniform"


def _megatron(shape: tuple[int, ...], dim: int | None, stride: int = 1, tp: int = RANKS) -> nn.Module:
    """One parameter of the global ``shape``; with ``dim``, rank RANK's Megatron partition of it."""
    local = list(shape)
    if dim is not None:
        local[dim] //= tp
    module = nn.Module()
    module.weight = nn.Parameter(torch.ones(local))  # pre-touched, as a materialised model's are
    if dim is not None:
        module.weight.tensor_model_parallel = True
        module.weight.partition_dim = dim
        module.weight.partition_stride = stride
    return module


def _fill(client: LocalClient, module: nn.Module, tp: int) -> Callable[[], object]:
    return partial(init_module, module, client=client, seed=1, policy=SCHEME, tp_rank=RANK % tp, tp_size=tp)


def shard_rows(ctx: Context) -> list[Row]:
    shape = QUICK_SHAPE if ctx.quick else FULL_SHAPE
    numel = math.prod(shape)
    client = LocalClient()
    whole = _megatron(shape, None)
    grid = placement_layout(shape, (4, 4), (1, 2), (Shard(0), Shard(1))).boxes()[0]
    cases: list[tuple[str, str, Callable[[], object], int]] = [
        ("B11 Shard(0)", f"rank {RANK} of {RANKS}, rows", _fill(client, _megatron(shape, 0), RANKS), numel // RANKS),
        ("B11 Shard(1)", f"rank {RANK} of {RANKS}, columns", _fill(client, _megatron(shape, 1), RANKS), numel // RANKS),
        (
            "B11 [Shard(0),Shard(1)]",
            "mesh 4×4, coordinate (1, 2): one block",
            partial(client.torch, list(shape), SCHEME, seed=1, slice=grid.spec_slice(shape)),
            math.prod(grid.shape),
        ),
        (
            "B11 strided QKV",
            "Megatron partition_stride 3, rank 1 of 4: three row pieces",
            _fill(client, _megatron(shape, 0, stride=3, tp=4), 4),
            numel // 4,
        ),
    ]
    rows = []
    for key, what, shard_fill, shard_numel in cases:
        ctx.log(f"{key}: {shard_numel / 2**20:.2f}M of {numel / 2**20:.0f}M elements, {ctx.repeats} rounds")
        shard_s, whole_s = interleaved(
            [partial(seconds, shard_fill), partial(seconds, _fill(client, whole, 1))], ctx.repeats
        )
        shard_rate = Series(tuple(shard_s), "s").rate(shard_numel / 1e6, "M el/s")
        whole_rate = Series(tuple(whole_s), "s").rate(numel / 1e6, "M el/s")
        rows.append(
            Row(
                key=key,
                title=f"{SCHEME} {shape[0]}×{shape[1]} f32 through init_module/LocalClient, {what} vs the whole tensor",
                initserve=shard_rate,
                anchor=whole_rate,
                ratios=ratios(list(shard_rate.values), list(whole_rate.values)),
                ratio_meaning="shard el/s ÷ whole-tensor el/s",
                target=Target(">=", 0.8),
            )
        )
    return rows


def main() -> None:
    from benchmarks.report import print_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.rows.shards", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    ctx = Context(quick=args.quick, repeats=args.repeats or (3 if args.quick else 5))
    try:
        print_table(shard_rows(ctx))
    finally:
        ctx.close()


if __name__ == "__main__":
    main()
