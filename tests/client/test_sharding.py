"""Sharded init in one process: placements → elements (checked against torch's own DTensor
splitting), Megatron tensor parallelism for every rank, padded vocabularies, meta-device models.

The multi-process runs (torchrun, gloo) are in tests/distributed.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from initserve_client import Client, InitserveError, LocalClient, init_module, plan_init
from initserve_client._distributed import placement_layout
from initserve_client._shards import Box, ShardLayout, chunk_bounds, megatron_indices
from torch import nn
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset
from torch.distributed.tensor.placement_types import _StridedShard

from tests.distributed import scenarios as sc
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def local() -> LocalClient:
    return LocalClient(threads=1)


# --- placements → elements -----------------------------------------------------------------------
@pytest.mark.parametrize("size", range(0, 14))
@pytest.mark.parametrize("chunks", [1, 2, 3, 4, 5])
def test_chunk_bounds_are_torch_chunk_padded_with_empty_pieces(size: int, chunks: int) -> None:
    pieces = list(torch.chunk(torch.arange(size), chunks)) if size else []
    pieces += [torch.arange(0)] * (chunks - len(pieces))
    for index, piece in enumerate(pieces):
        start, stop = chunk_bounds(size, chunks, index)
        assert list(range(start, stop)) == piece.tolist()


@pytest.mark.parametrize("size", [1, 5, 7, 12, 13])
@pytest.mark.parametrize("chunks", [1, 2, 3, 4])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_strided_shard_holds_what_torch_splits_to_it(size: int, chunks: int, factor: int) -> None:
    shards, _ = _StridedShard(0, split_factor=factor)._split_tensor(torch.arange(size), chunks, with_padding=False)
    for index in range(chunks):
        layout = placement_layout((size,), (chunks,), (index,), (_StridedShard(0, split_factor=factor),))
        assert layout.indices[0].tolist() == shards[index].tolist()


MESHES = [(1,), (2,), (3,), (4,), (2, 2), (3, 2), (2, 3)]
SHAPES = [(10, 7), (5, 3), (3, 11, 4), (2, 2)]


@pytest.mark.parametrize("mesh_shape", MESHES)
@pytest.mark.parametrize("shape", SHAPES)
def test_plain_placements_match_torch_local_shape_and_offset(
    mesh_shape: tuple[int, ...], shape: tuple[int, ...]
) -> None:
    """Every combination of Shard(d)/Replicate on every mesh coordinate: the layout is one box at
    torch's local shape and global offset (compute_local_shape_and_global_offset)."""
    options = [Replicate()] + [Shard(d) for d in range(len(shape))]
    for placements in itertools.product(options, repeat=len(mesh_shape)):
        for coordinate in itertools.product(*(range(n) for n in mesh_shape)):
            local_shape, offset = _compute_local_shape_and_global_offset(
                shape, mesh_shape, list(coordinate), placements
            )
            layout = placement_layout(shape, mesh_shape, coordinate, placements)
            assert layout.local_shape == tuple(local_shape), (placements, coordinate)
            boxes = layout.boxes()
            if math.prod(local_shape) == 0:
                assert boxes == []
                continue
            assert len(boxes) == 1
            assert tuple(start for start, _ in boxes[0].ranges) == tuple(offset), (placements, coordinate)


def test_fsdp_tp_strided_rows_follow_torch_docstring_example() -> None:
    """torch's _StridedShard docstring: (8, 8) on a 2×2 mesh with [_StridedShard(0, sf=2), Shard(0)]
    puts rows 0-1, 4-5, 2-3, 6-7 on ranks 0, 1, 2, 3."""
    placements = (_StridedShard(0, split_factor=2), Shard(0))
    rows = [
        placement_layout((8, 8), (2, 2), coordinate, placements).indices[0].tolist()
        for coordinate in [(0, 0), (0, 1), (1, 0), (1, 1)]
    ]
    assert rows == [[0, 1], [4, 5], [2, 3], [6, 7]]


def test_a_rank_outside_the_mesh_holds_nothing() -> None:
    layout = placement_layout((10, 7), (2,), None, (Shard(0),))
    assert layout.local_shape == (0, 0) and layout.boxes() == []


@pytest.mark.parametrize("shape", [(2, 5), (3,), (4, 0, 2), (0, 6)])
def test_a_rank_holding_nothing_requests_an_empty_block_that_is_checked_like_any_other(
    local: LocalClient, shape: tuple[int, ...]
) -> None:
    """The request of a rank with no element (an empty chunk, a rank outside the mesh) is an empty
    block of the global tensor, so a spec its peers' requests are refused for is refused here too
    (torchrun: tests/distributed)."""
    box = Box.nothing(shape)
    assert math.prod(box.shape) == 0 and box.shape[1:] == shape[1:]
    spec = {"shape": list(shape), "dtype": "float32", "scheme": "normal", "slice": box.spec_slice(shape)}
    assert local.bundle({"w": spec}, seed=1)["w"].shape == box.shape
    with pytest.raises(InitserveError, match=r"w\.params\.std"):
        local.bundle({"w": {**spec, "params": {"std": -1.0}}}, seed=1)


def test_partial_placement_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="Partial"):
        placement_layout((4, 4), (2,), (0,), (Partial(),))


def test_boxes_reassemble_the_local_grid_and_slice_only_leading_dims() -> None:
    """A strided column shard of a 3-D tensor: the boxes cover the local tensor exactly, and each
    box's spec slice names pairs up to the last dimension it restricts."""
    full = np.arange(4 * 9 * 5).reshape(4, 9, 5)
    layout = ShardLayout((4, 9, 5), (np.arange(4), megatron_indices(9, 1, 3, 1), np.arange(5)))
    assert [box.spec_slice(layout.global_shape) for box in layout.boxes()] == [[[0, 4], [3, 6]]]
    layout = ShardLayout((4, 9, 5), (np.arange(1, 3), np.array([0, 1, 6, 7]), np.array([2, 3, 4])))
    local = np.zeros(layout.local_shape, dtype=full.dtype)
    for box in layout.boxes():
        local[box.local_index()] = full[tuple(slice(a, b) for a, b in box.ranges)]
        assert len(box.spec_slice(layout.global_shape) or []) == 3
    assert (local == full[np.ix_(*layout.indices)]).all()


# --- the scheme's scalars come from the global shape -------------------------------------------------
def test_a_column_shard_is_the_same_columns_of_the_whole_xavier_tensor(local: LocalClient) -> None:
    """Megatron-Bridge#5840: xavier on a TP shard's local shape gave 1.98× the std. Here the spec is
    the global tensor and the shard a slice of it."""
    whole = local.torch([64, 256], "xavier_normal", seed=3, name="lora_a")
    shard = local.torch([64, 256], "xavier_normal", seed=3, name="lora_a", slice=[[0, 64], [64, 128]])
    assert torch.equal(shard, whole[:, 64:128])
    local_shape_std = local.torch([64, 64], "xavier_normal", seed=3, name="lora_a").std().item()
    assert shard.std().item() == pytest.approx(math.sqrt(2 / (64 + 256)), rel=0.05)
    assert local_shape_std / shard.std().item() > 1.5  # what filling the local shape would have given


# --- Megatron tensor parallelism (no DTensor) --------------------------------------------------------
@pytest.mark.parametrize("tp_size", [1, 2, 3, 4])
def test_megatron_ranks_hold_megatron_cpu_split_of_the_master(local: LocalClient, tp_size: int) -> None:
    master = sc.megatron_whole(tp_size)
    init_module(master, client=local, seed=sc.SEED, policy=sc.MEGATRON_POLICY)
    table = sc.megatron_table(tp_size)
    for rank in range(tp_size):
        module = sc.megatron_module(rank, tp_size)
        init_module(module, client=local, seed=sc.SEED, policy=sc.MEGATRON_POLICY, tp_rank=rank, tp_size=tp_size)
        for name, param in module.named_parameters():
            _, dim, stride = table[name]
            whole = getattr(master, name).detach()
            expected = whole if dim is None else sc.megatron_expected_local(whole, dim, stride, rank, tp_size)
            assert torch.equal(param.detach(), expected), (name, rank, tp_size)


def test_megatron_strided_qkv_interleaves_q_k_v_pieces(local: LocalClient) -> None:
    """Fused QKV with partition_stride 3 on 2 ranks: rank 1 holds rows 6-11, 18-23, 30-35 of the 36."""
    module = sc.megatron_module(1, 2)
    init_module(module, client=local, seed=sc.SEED, policy=sc.MEGATRON_POLICY, tp_rank=1, tp_size=2)
    whole = local.torch([36, sc.HIDDEN], "xavier_uniform", seed=sc.SEED, name="qkv")
    rows = [*range(6, 12), *range(18, 24), *range(30, 36)]
    assert torch.equal(module.qkv.detach(), whole[rows])


def test_megatron_parameter_without_a_known_rank_is_an_error(local: LocalClient) -> None:
    module = sc.megatron_module(0, 2)
    with pytest.raises(InitserveError, match=r"tp_rank= and tp_size="):
        init_module(module, client=local, seed=0, policy=sc.MEGATRON_POLICY)
    with pytest.raises(ValueError, match=r"tp_rank must be in 0\.\.tp_size-1"):
        init_module(module, client=local, seed=0, policy=sc.MEGATRON_POLICY, tp_rank=2, tp_size=2)


def test_plan_init_shows_the_global_shape_and_the_fans_init_module_uses(server: LiveServer) -> None:
    """The dry run of a Megatron rank at TP 4: every entry has the global shape init_module sends, and the
    server's fans are the global ones (from the local shape they would be the Megatron-Bridge#5840 bug)."""
    module = sc.megatron_module(1, 4)
    with Client(base_url=server.url, cache=False) as client:
        plan = {e.name: e for e in plan_init(module, policy=sc.MEGATRON_POLICY, client=client, tp_rank=1, tp_size=4)}
    # A LocalClient resolves in process: the same entries, fans included.
    offline = plan_init(module, policy=sc.MEGATRON_POLICY, client=LocalClient(), tp_rank=1, tp_size=4)
    assert {e.name: e for e in offline} == plan
    assert {name: entry.shape for name, entry in plan.items()} == {
        name: shape for name, (shape, _, _) in sc.megatron_table(4).items()
    }
    qkv_rows, fc2_cols = sc.megatron_table(4)["qkv"][0][0], sc.megatron_table(4)["fc2"][0][1]
    assert (plan["qkv"].fan_in, plan["qkv"].fan_out) == (sc.HIDDEN, qkv_rows)  # rows partitioned: fan_out
    assert (plan["fc2"].fan_in, plan["fc2"].fan_out) == (fc2_cols, sc.HIDDEN)  # columns partitioned: fan_in
    with pytest.raises(InitserveError, match=r"embedding is a Megatron .* tp_rank= and tp_size="):
        plan_init(module, policy=sc.MEGATRON_POLICY)  # the rank is unknown: init_module would refuse too


@pytest.mark.parametrize("tp_size", [2, 4])
def test_from_checkpoint_gives_each_megatron_rank_its_partition_of_the_derived_model(
    server: LiveServer, tp_size: int
) -> None:
    """Copied tensors are sliced, reinit ones drawn from the global shape (their fans global): every rank
    holds Megatron's split of the unsharded derived model (torchrun, FSDP2: tests/distributed)."""
    rules = sc.CHECKPOINT_RULES["megatron"]
    table = sc.megatron_table(tp_size)
    with Client(base_url=server.url, cache=False) as client:
        source = sc.megatron_whole(tp_size)
        init_module(source, client=client, seed=1, policy=sc.MEGATRON_POLICY)
        digest = client.upload_checkpoint(source.state_dict())["digest"]
        whole = sc.megatron_whole(tp_size)
        init_module(whole, client=client, seed=2, from_checkpoint=digest, rules=rules)
        for rank in range(tp_size):
            module = sc.megatron_module(rank, tp_size)
            parallel = {"tp_rank": rank, "tp_size": tp_size}
            init_module(module, client=client, seed=2, from_checkpoint=digest, rules=rules, **parallel)
            for name, param in module.named_parameters():
                _, dim, stride = table[name]
                expected = dict(whole.named_parameters())[name]
                if dim is not None:
                    expected = sc.megatron_expected_local(expected, dim, stride, rank, tp_size)
                assert torch.equal(param, expected), (rank, name)
        with pytest.raises(InitserveError, match=r"embedding is a Megatron .* tp_rank= and tp_size="):
            init_module(sc.megatron_module(0, tp_size), client=client, seed=2, from_checkpoint=digest, rules=rules)


def test_torch_default_bias_of_a_row_parallel_linear_is_refused_not_drawn_from_the_local_fan_in(
    local: LocalClient,
) -> None:
    """Row-parallel (partition_dim=1): the local weight holds 1/tp of fan_in, so torch's default bias bound
    would be √tp too wide; it is an error naming the bias. Column-parallel keeps the whole fan_in."""
    row = nn.Linear(16 // 4, 8)  # the local partition of Linear(16, 8) at TP 4
    row.weight.tensor_model_parallel, row.weight.partition_dim, row.weight.partition_stride = True, 1, 1
    refusal = r"no default rule for 'bias'.*partition_dim=1.*policy=\{'bias': 'zeros'\}"
    with pytest.raises(InitserveError, match=refusal):
        init_module(row, client=local, seed=0, tp_rank=1, tp_size=4)
    init_module(row, client=local, seed=0, tp_rank=1, tp_size=4, policy={"bias": "zeros"})
    whole = nn.Linear(16, 8)
    init_module(whole, client=local, seed=0, policy={"bias": "zeros"})
    assert torch.equal(row.weight, whole.weight[:, 4:8]) and not row.bias.any()  # the weight: its global fans
    column = nn.Linear(16, 8 // 4)
    for param in (column.weight, column.bias):
        param.tensor_model_parallel, param.partition_dim, param.partition_stride = True, 0, 1
    init_module(column, client=local, seed=0, tp_rank=1, tp_size=4)
    init_module(whole, client=local, seed=0)
    assert torch.equal(column.weight, whole.weight[2:4]) and torch.equal(column.bias, whole.bias[2:4])


def test_megatron_partition_that_does_not_divide_names_the_rule(local: LocalClient) -> None:
    module = sc.Params({"w": torch.empty(5, 4)})
    module.w.tensor_model_parallel, module.w.partition_dim, module.w.partition_stride = True, 0, 2
    with pytest.raises(InitserveError, match=r"w: .*divisible by partition_stride"):
        init_module(module, client=local, seed=0, policy="normal", tp_rank=0, tp_size=1)


# --- padded vocabularies ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scheme", "params"),
    [
        ("normal", {"std": 0.02}),  # Megatron / GPT-2 embeddings
        ("normal", None),  # torch's nn.Embedding default
        ("kaiming_uniform", None),  # torch layout, mode fan_in: fan_in = columns
        ("truncated_normal", {"std": 0.02}),
        ("uniform", {"low": -0.1, "high": 0.1}),
    ],
)
@pytest.mark.parametrize("padded", [52, 56, 64, 1024])
def test_rows_appended_to_a_vocabulary_keep_every_earlier_element(
    local: LocalClient, scheme: str, params: dict[str, float] | None, padded: int
) -> None:
    """The guarantee of docs/sharding.md: element (r, c) of a (V, D) tensor depends on r·D + c only,
    so padding the vocabulary to V' > V rows leaves the first V rows bit-identical — whenever the
    scheme's scalars do not depend on the number of rows."""
    vocab = local.tensor([50, 24], scheme, seed=9, name="embedding", params=params)
    padded_vocab = local.tensor([padded, 24], scheme, seed=9, name="embedding", params=params)
    assert padded_vocab[:50].tobytes() == vocab.tobytes()


def test_padding_changes_schemes_whose_scalars_count_rows_unless_fans_are_given(local: LocalClient) -> None:
    """xavier's std uses fan_out = rows: padded rows change it, so the documented remedy is explicit fans."""
    vocab = local.tensor([50, 24], "xavier_normal", seed=9, name="embedding")
    padded = local.tensor([64, 24], "xavier_normal", seed=9, name="embedding")
    assert padded[:50].tobytes() != vocab.tobytes()
    fans = {"fan_in": 24, "fan_out": 50}
    padded = local.tensor([64, 24], "xavier_normal", seed=9, name="embedding", params=fans)
    assert padded[:50].tobytes() == vocab.tobytes()


# --- meta-device models --------------------------------------------------------------------------------
def test_meta_module_without_device_raises_saying_what_to_pass(local: LocalClient) -> None:
    module = nn.Linear(16, 8, device="meta")
    with pytest.raises(InitserveError, match=r"'weight'.*meta device.*device='cpu'"):
        init_module(module, client=local, seed=0)
    assert module.weight.is_meta  # nothing half-done


def test_meta_module_is_materialised_and_equals_the_eager_one(local: LocalClient) -> None:
    eager = nn.Sequential(nn.BatchNorm1d(24), sc.Block())
    init_module(eager, client=local, seed=4)
    with torch.device("meta"):
        lazy = nn.Sequential(nn.BatchNorm1d(24), sc.Block())
    init_module(lazy, client=local, seed=4, device="cpu")
    assert not any(p.is_meta for p in lazy.parameters())
    for name, param in eager.named_parameters():
        assert torch.equal(param, lazy.get_parameter(name)), name
    assert torch.equal(lazy[0].running_var, torch.ones(24))  # running stats reset, not garbage
    assert torch.equal(lazy[0].running_mean, torch.zeros(24))


def test_meta_buffers_torch_cannot_know_are_named_in_a_warning(local: LocalClient) -> None:
    class Rotary(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.register_buffer("inv_freq", torch.arange(2.0))

    with torch.device("meta"):
        module = Rotary()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init_module(module, client=local, seed=0, device="cpu")
    assert any("inv_freq" in str(w.message) for w in caught)
    assert not module.proj.weight.is_meta


def test_strided_column_shards_are_filled_through_a_copy(local: LocalClient) -> None:
    """A Megatron column partition with stride 2 is two non-contiguous column blocks of the local
    tensor: they cannot be generated in place, and still hold the right elements."""
    module = sc.Params({"w": torch.empty(6, 8)})
    module.w.tensor_model_parallel, module.w.partition_dim, module.w.partition_stride = True, 1, 2
    init_module(module, client=local, seed=1, policy="xavier_uniform", tp_rank=1, tp_size=3)
    whole = local.torch([6, 24], "xavier_uniform", seed=1, name="w")
    assert torch.equal(module.w.detach(), whole[:, [4, 5, 6, 7, 16, 17, 18, 19]])
