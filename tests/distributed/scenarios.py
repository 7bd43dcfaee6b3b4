"""Models and placements shared by the torchrun worker and the tests that check its output.

Every scenario exists twice: sharded (built on a rank from placements, Megatron attributes or
FSDP2) and whole (the same parameter names and global shapes in one process). The tests compare
the sha256 of each gathered parameter with the whole model's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SEED = 20261201

# name -> (global shape, dtype, placements on a 1-D mesh, as text parsed by `placements`)
ONE_D: dict[str, tuple[tuple[int, ...], torch.dtype, tuple[str, ...]]] = {
    "rows": ((10, 7), torch.float32, ("S0",)),
    "cols": ((10, 7), torch.float32, ("S1",)),
    "cols_bf16": ((9, 13), torch.bfloat16, ("S1",)),
    "last_of_3d": ((6, 5, 3), torch.float32, ("S2",)),  # 3 over 4 ranks: one rank's shard is empty
    "middle_of_3d": ((4, 9, 5), torch.float64, ("S1",)),
    "replicated": ((10, 7), torch.float32, ("R",)),
    "strided_rows": ((12, 8), torch.float32, ("SS0:2",)),
    "strided_cols": ((5, 14), torch.float32, ("SS1:3",)),
    # whole-tensor schemes: every rank computes the whole tensor and keeps its elements
    "whole_orth_cols": ((6, 9), torch.float32, ("S1",)),
    "whole_delta_last": ((6, 4, 3), torch.bfloat16, ("S2",)),
}
# Only on the 2×2 mesh (world size 4).
TWO_D: dict[str, tuple[tuple[int, ...], torch.dtype, tuple[str, ...]]] = {
    "grid": ((10, 7), torch.float32, ("S0", "S1")),
    "grid_swapped": ((10, 7), torch.float32, ("S1", "S0")),
    "nested_cols": ((6, 11), torch.float32, ("S1", "S1")),
    "nested_rows": ((11, 4), torch.float32, ("S0", "S0")),
    "replicate_then_cols": ((10, 7), torch.float32, ("R", "S1")),
    "fsdp_tp_rows": ((8, 8), torch.float32, ("SS0:2", "S0")),  # torch's _StridedShard docstring example
    "fsdp_tp_uneven": ((10, 6), torch.float32, ("SS0:2", "S0")),
    "whole_etf_grid": ((5, 8), torch.float32, ("S1", "S0")),
}
# The tensor the memory bound is measured on: 32 MiB whole.
BIG = ("big", (4096, 2048), torch.float32, ("S1",))

POLICY: dict[str, Any] = {
    "cols*": "xavier_normal",  # both fans: from the global shape, or the sha256 differs
    "strided*": {"scheme": "truncated_normal", "params": {"std": 0.5}},
    "whole_orth*": "orthogonal",
    "whole_delta*": "delta_orthogonal",
    "whole_etf*": "simplex_etf",
    "*": "kaiming_uniform",
}


def placements(codes: tuple[str, ...]) -> list[Any]:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    out: list[Any] = []
    for code in codes:
        if code == "R":
            out.append(Replicate())
        elif code.startswith("SS"):
            dim, factor = code[2:].split(":")
            out.append(_StridedShard(int(dim), split_factor=int(factor)))
        else:
            out.append(Shard(int(code[1:])))
    return out


class Params(nn.Module):
    """Raw parameters by name (a dict of tensors as parameters)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, tensor in tensors.items():
            self.register_parameter(name, nn.Parameter(tensor))


def whole_params(table: dict[str, tuple[tuple[int, ...], torch.dtype, tuple[str, ...]]]) -> Params:
    return Params({name: torch.empty(shape, dtype=dtype) for name, (shape, dtype, _) in table.items()})


# --- the transformer block FSDP2 shards --------------------------------------------------------------
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 24, padding_idx=3)
        self.layer = nn.TransformerEncoderLayer(d_model=24, nhead=2, dim_feedforward=40, batch_first=True)
        self.norm = nn.LayerNorm(24)
        self.head = nn.Linear(24, 50, bias=False)


def tp_mlp() -> nn.Module:
    """Two linears for tensor parallelism (column-wise then row-wise) under FSDP2: a 2-D (dp, tp) mesh."""
    return nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 10))


# --- Megatron-style tensor parallelism (no DTensor) ---------------------------------------------------
VOCAB, DIVISIBLE_BY, HIDDEN = 50, 4, 8


def padded_vocab(tp_size: int) -> int:
    """Megatron's ``_vocab_size_with_padding``: a multiple of make_vocab_size_divisible_by · TP."""
    multiple = DIVISIBLE_BY * tp_size
    return math.ceil(VOCAB / multiple) * multiple


# name -> (global shape at tp_size, partition_dim (None: not partitioned), partition_stride)
def megatron_table(tp_size: int) -> dict[str, tuple[tuple[int, ...], int | None, int]]:
    return {
        "embedding": ((padded_vocab(tp_size), HIDDEN), 0, 1),  # VocabParallelEmbedding
        "qkv": ((3 * 12, HIDDEN), 0, 3),  # fused QKV, ColumnParallelLinear with stride 3
        "fc1_glu": ((2 * 12, HIDDEN), 0, 2),  # fused gate/up
        "fc2": ((HIDDEN, 12), 1, 1),  # RowParallelLinear
        "fc2_bias": ((HIDDEN,), None, 1),  # not partitioned
    }


MEGATRON_POLICY: dict[str, Any] = {
    "embedding": {"scheme": "normal", "params": {"std": 0.02}},
    "qkv": "xavier_uniform",  # both fans from the global shape (the Megatron-Bridge#5840 bug otherwise)
    "fc1_glu": "kaiming_normal",
    "fc2": "xavier_normal",
    "fc2_bias": "zeros",
}


def megatron_module(tp_rank: int, tp_size: int) -> Params:
    """Local parameters carrying ``tensor_model_parallel``/``partition_dim``/``partition_stride``, as
    Megatron's ``set_tensor_model_parallel_attributes`` leaves them."""
    tensors: dict[str, torch.Tensor] = {}
    attributes: dict[str, tuple[bool, int, int]] = {}
    for name, (shape, dim, stride) in megatron_table(tp_size).items():
        local = list(shape)
        if dim is not None:
            local[dim] //= tp_size
        tensors[name] = torch.empty(local)
        attributes[name] = (dim is not None, -1 if dim is None else dim, stride)
    module = Params(tensors)
    for name, (parallel, dim, stride) in attributes.items():
        param = getattr(module, name)
        param.tensor_model_parallel = parallel
        param.partition_dim = dim
        param.partition_stride = stride
    return module


def megatron_whole(tp_size: int) -> Params:
    return Params({name: torch.empty(shape) for name, (shape, _, _) in megatron_table(tp_size).items()})


def megatron_expected_local(master: torch.Tensor, dim: int, stride: int, rank: int, size: int) -> torch.Tensor:
    """Megatron's ``_initialize_affine_weight_cpu``: split the master weight into pieces of
    per_partition // stride along ``dim`` and keep ``[rank::size]``, concatenated."""
    per_partition = master.shape[dim] // size
    pieces = torch.split(master, per_partition // stride, dim=dim)
    return torch.cat(pieces[rank::size], dim=dim)


# --- from_checkpoint on sharded models: reinit rules draw from the global shape -------------------------
CHECKPOINT_RULES: dict[str, list[dict[str, Any]]] = {
    "mlp": [{"match": "2.weight", "action": "reinit", "scheme": "xavier_normal"}],
    "megatron": [
        {"match": "fc2", "action": "reinit", "scheme": "xavier_normal"},  # row-parallel: fan_in from the global columns
        {"match": "qkv", "action": "reinit", "scheme": "kaiming_uniform"},
    ],
}
