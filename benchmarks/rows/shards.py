"""B11: a rank's shard per element vs the whole tensor per element (issue 14: ≥ 0.8× for any Shard(d)).

Both sides run what ``init_module`` runs on a rank, in-process (``LocalClient``, all cores): the spec
with the global shape and the rank's boxes as slices, filled into an existing parameter. The anchor is
the same parameter unsharded in the same rounds. A Megatron-attribute parameter stands for the
placement (``partition_dim`` d ≡ ``Shard(d)``), so no process group is needed; the 2-D grid
([Shard(0), Shard(1)] on 4×4) is the box ``placement_layout`` gives rank (1, 2), filled by
``LocalClient.bundle_into`` as init_module does.

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
from benchmarks.measure import Series, interleaved, seconds_per_call
from benchmarks.model import Row, Target, ratios

FULL_SHAPE = (12288, 4096)  # 48M elements (192 MiB); rows divisible by 16 ranks and by 3 · 4 (strided QKV)
QUICK_SHAPE = (1536, 1024)
FULL_SHAPE_3D = (1536, 512, 64)  # Shard(2) on 16 ranks: runs of 4 elements, the hardest case for slicing
QUICK_SHAPE_3D = (384, 128, 64)
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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)


def shard_rows(ctx: Context) -> list[Row]:
    shape = QUICK_SHAPE if ctx.quick else FULL_SHAPE
    shape3 = QUICK_SHAPE_3D if ctx.quick else FULL_SHAPE_3D
    client = LocalClient()
    whole, whole3 = _megatron(shape, None), _megatron(shape3, None)
    grid = placement_layout(shape, (4, 4), (1, 2), (Shard(0), Shard(1))).boxes()[0]
    grid_out = torch.ones(grid.shape)  # pre-touched, like the parameters
    grid_spec = {"shape": list(shape), "scheme": SCHEME, "slice": grid.spec_slice(shape)}
    numel, numel3 = math.prod(shape), math.prod(shape3)
    # (key, what, shard fill, shard elements, whole fill, whole elements, global shape)
    cases: list[tuple[str, str, Callable[[], object], int, Callable[[], object], int, tuple[int, ...]]] = [
        (
            "B11 Shard(0)",
            f"rank {RANK} of {RANKS}, rows",
            _fill(client, _megatron(shape, 0), RANKS),
            numel // RANKS,
            _fill(client, whole, 1),
            numel,
            shape,
        ),
        (
            "B11 Shard(1)",
            f"rank {RANK} of {RANKS}, columns",
            _fill(client, _megatron(shape, 1), RANKS),
            numel // RANKS,
            _fill(client, whole, 1),
            numel,
            shape,
        ),
        (
            "B11 Shard(2)",
            f"rank {RANK} of {RANKS}, {shape3[2] // RANKS} elements per run",
            _fill(client, _megatron(shape3, 2), RANKS),
            numel3 // RANKS,
            _fill(client, whole3, 1),
            numel3,
            shape3,
        ),
        (
            "B11 [Shard(0),Shard(1)]",
            "mesh 4×4, coordinate (1, 2): one block",
            partial(client.bundle_into, {"w": grid_spec}, {"w": grid_out}, seed=1),
            math.prod(grid.shape),
            _fill(client, whole, 1),
            numel,
            shape,
        ),
        (
            "B11 strided QKV",
            "Megatron partition_stride 3, rank 1 of 4: three row pieces",
            _fill(client, _megatron(shape, 0, stride=3, tp=4), 4),
            numel // 4,
            _fill(client, whole, 1),
            numel,
            shape,
        ),
    ]
    rows = []
    for key, what, shard_fill, shard_numel, whole_fill, whole_numel, global_shape in cases:
        ctx.log(f"{key}: {shard_numel / 2**20:.2f}M of {whole_numel / 2**20:.0f}M elements, {ctx.repeats} rounds")
        shard_s, whole_s = interleaved(
            [partial(seconds_per_call, shard_fill), partial(seconds_per_call, whole_fill)], ctx.repeats
        )
        shard_rate = Series(tuple(shard_s), "s").rate(shard_numel / 1e6, "M el/s")
        whole_rate = Series(tuple(whole_s), "s").rate(whole_numel / 1e6, "M el/s")
        rows.append(
            Row(
                key=key,
                title=f"{SCHEME} {_shape_text(global_shape)} f32 into a pre-touched parameter (init_module / "
                f"LocalClient, {client.kernel} kernel), {what}, vs the whole tensor; each round the mean of "
                "back-to-back fills over ≥ 0.2 s",
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
