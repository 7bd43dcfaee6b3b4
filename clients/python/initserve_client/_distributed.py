"""torch glue for sharded parameters: DTensor / FSDP2 placements and Megatron tensor-parallel
attributes → :class:`~._shards.ShardLayout`, and meta-device materialisation. Needs torch.

Nothing here communicates: a rank's layout follows from the placements, its mesh coordinate (or
its tensor-parallel rank) and the global shape alone.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InitserveError
from ._shards import ShardLayout, megatron_indices, shard_indices, strided_shard_indices

if TYPE_CHECKING:
    import torch

__all__ = ["TensorParallel", "layout_of", "local_tensor", "materialize", "placement_layout", "reshard_fsdp"]


@dataclass(frozen=True)
class TensorParallel:
    """This process's Megatron tensor-parallel rank and group size."""

    rank: int
    size: int

    @classmethod
    def resolve(cls, rank: int | None, size: int | None, group: Any = None) -> TensorParallel | None:
        """Explicit ``rank``/``size`` first, then the rank and size in ``group`` (or, without one,
        Megatron's ``parallel_state`` when it is importable and initialised, else torch.distributed's
        default group); ``None`` when nothing is known (a single process)."""
        if (rank is None) != (size is None):
            raise ValueError(f"give both tp_rank and tp_size or neither, got tp_rank={rank}, tp_size={size}")
        if rank is not None and size is not None:
            if not 0 <= rank < size:
                raise ValueError(f"tp_rank must be in 0..tp_size-1 = 0..{size - 1}, got {rank}")
            return cls(rank, size)
        import torch.distributed as dist

        if group is None:
            megatron = _megatron_tensor_parallel()
            if megatron is not None:
                return megatron
        if dist.is_available() and dist.is_initialized():
            size = dist.get_world_size(group)
            if group is None and size > 1:
                # Right for a pure tensor-parallel job, silently wrong weights when data or pipeline
                # parallelism share the world: say where the rank came from.
                warnings.warn(
                    f"Megatron tensor-parallel rank taken from torch.distributed's default process group "
                    f"(rank {dist.get_rank()} of {size}): right only if every process of the job is in one "
                    "tensor-parallel group; with data or pipeline parallelism pass tp_rank= and tp_size= "
                    "(or tp_group=)",
                    UserWarning,
                    stacklevel=2,
                )
            return cls(dist.get_rank(group), size)
        return None


def _megatron_tensor_parallel() -> TensorParallel | None:
    try:
        from megatron.core import parallel_state  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not parallel_state.model_parallel_is_initialized():
        return None
    return TensorParallel(
        int(parallel_state.get_tensor_model_parallel_rank()),
        int(parallel_state.get_tensor_model_parallel_world_size()),
    )


def _is_dtensor(param: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(param, DTensor)


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """The storage this rank fills: ``to_local()`` of a DTensor (the tensor itself under no_grad), else ``param``."""
    if _is_dtensor(param):
        import torch

        with torch.no_grad():  # with grad enabled to_local() returns an autograd view that refuses copy_
            local: torch.Tensor = param.to_local()  # type: ignore[attr-defined]
        return local
    return param


def layout_of(name: str, param: torch.Tensor, tensor_parallel: TensorParallel | None) -> ShardLayout | None:
    """This rank's share of ``param``'s global tensor, or ``None`` when it holds the whole tensor as is."""
    if _is_dtensor(param):
        layout = _dtensor_layout(name, param)
    elif getattr(param, "tensor_model_parallel", False):
        layout = _megatron_layout(name, param, tensor_parallel)
    else:
        return None
    local_shape = tuple(local_tensor(param).shape)
    if math.prod(layout.local_shape) == 0 and math.prod(local_shape) == 0:
        return layout  # nothing here (an empty chunk, or a rank outside the mesh: DTensor gives it shape (0,))
    if layout.local_shape != local_shape:
        raise InitserveError(
            f"{name}: the placements give a local shape {list(layout.local_shape)} but the local tensor is "
            f"{list(local_shape)}; this layout is not supported"
        )
    return None if layout.is_whole else layout


def _dtensor_layout(name: str, param: Any) -> ShardLayout:
    mesh = param.device_mesh
    placements = tuple(param.placements)
    try:
        return placement_layout(
            param.shape, mesh.shape, mesh.get_coordinate(), placements, _mesh_dim_order(param, placements)
        )
    except ValueError as exc:
        raise InitserveError(f"{name}: {exc}") from None


def placement_layout(
    global_shape: Sequence[int],
    mesh_shape: Sequence[int],
    coordinate: Sequence[int] | None,
    placements: Sequence[Any],
    order: Sequence[int] | None = None,
) -> ShardLayout:
    """The elements a mesh coordinate holds of a DTensor with these placements (no process group needed).

    ``order``: the mesh dimensions in the order their sharding was applied (default left to right).
    ``coordinate`` ``None`` (a rank outside the mesh) holds nothing. Raises ``ValueError`` for a
    placement that holds no values (``Partial``)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    shape = tuple(int(n) for n in global_shape)
    if coordinate is None:
        return ShardLayout(shape, tuple(np.arange(0, dtype=np.int64) for _ in shape))
    indices = list(ShardLayout.whole(shape).indices)
    for mesh_dim in range(len(placements)) if order is None else order:
        placement = placements[mesh_dim]
        chunks, index = int(mesh_shape[mesh_dim]), int(coordinate[mesh_dim])
        if isinstance(placement, _StridedShard):
            dim = placement.dim % len(shape)
            factor = int(placement.split_factor)
            indices[dim] = strided_shard_indices(indices[dim], chunks, index, factor)
        elif isinstance(placement, Shard):
            dim = placement.dim % len(shape)
            indices[dim] = shard_indices(indices[dim], chunks, index)
        elif not isinstance(placement, Replicate):
            raise ValueError(
                f"placement {placement} on mesh dimension {mesh_dim} cannot be initialised (initserve fills "
                "Shard, _StridedShard and Replicate placements; a Partial tensor is a sum of pending parts)"
            )
    return ShardLayout(shape, tuple(indices))


def _mesh_dim_order(param: Any, placements: tuple[Any, ...]) -> list[int]:
    """Mesh dimensions in the order the sharding was applied: left to right unless the DTensor's spec
    records another ``shard_order`` (without _StridedShard, which encodes its order itself)."""
    spec = getattr(param, "_spec", None)
    shard_order = getattr(spec, "shard_order", None) if spec is not None else None
    if not shard_order:
        return list(range(len(placements)))
    ordered = [mesh_dim for entry in shard_order for mesh_dim in entry.mesh_dims]
    return ordered + [mesh_dim for mesh_dim in range(len(placements)) if mesh_dim not in ordered]


def _megatron_layout(name: str, param: torch.Tensor, tensor_parallel: TensorParallel | None) -> ShardLayout:
    if tensor_parallel is None:
        raise InitserveError(
            f"{name} is a Megatron tensor-parallel parameter (tensor_model_parallel=True) but the tensor-parallel "
            "rank is unknown: pass tp_rank= and tp_size= (or tp_group=), or initialise torch.distributed"
        )
    dim = int(getattr(param, "partition_dim", -1))
    stride = int(getattr(param, "partition_stride", 1))
    if not 0 <= dim < param.dim() or stride < 1:
        raise InitserveError(
            f"{name}: partition_dim must name a dimension of the {param.dim()}-D parameter and partition_stride "
            f"be ≥ 1, got partition_dim={dim}, partition_stride={stride}"
        )
    shape = [int(n) for n in param.shape]
    shape[dim] *= tensor_parallel.size
    layout = ShardLayout.whole(shape)
    indices = list(layout.indices)
    try:
        indices[dim] = megatron_indices(shape[dim], tensor_parallel.rank, tensor_parallel.size, stride)
    except ValueError as exc:
        raise InitserveError(f"{name}: {exc}") from None
    return ShardLayout(tuple(shape), tuple(indices))


def reshard_fsdp(module: torch.nn.Module) -> None:
    """Register the sharded parameters of every FSDP2 module inside ``module`` (``FSDPModule.reshard``).

    After a forward with ``reshard_after_forward=False`` (or an explicit ``unshard()``) FSDP2 registers
    plain, unsharded tensors: the all-gather's output. Values written there never reach the sharded
    DTensors the optimizer steps and checkpoints save, and the next reshard discards them. Resharding
    frees that memory and communicates nothing."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None:  # never imported: no module can be an FSDP module (and a plain model pays no import)
        return
    for sub in module.modules():
        if isinstance(sub, fsdp.FSDPModule):
            sub.reshard()  # not recursive: each FSDP module its own groups


def materialize(module: torch.nn.Module, device: str | torch.device | None, filled: Collection[str] = ()) -> bool:
    """Give meta-device parameters storage on ``device`` (``Module.to_empty``) so they can be filled;
    ``True`` if it did (the module's tensors are new objects then).

    Norm layers' running statistics are reset as their constructors set them; any other buffer that
    was on the meta device has no values afterwards and is named in a warning (torch cannot know
    them: compute them in your model's own ``init_weights``), except the ``filled`` ones (buffers of
    a reparametrization that init_module rewrites).
    """
    meta_params = [name for name, param in module.named_parameters() if param.is_meta]
    meta_buffers = [name for name, buffer in module.named_buffers() if buffer.is_meta]
    if not meta_params and not meta_buffers:
        return False
    if device is None:
        first = (meta_params or meta_buffers)[0]
        raise InitserveError(
            f"{first!r} (and {len(meta_params) + len(meta_buffers) - 1} more) is on the meta device and has no "
            "storage: pass device='cpu' (or the device to train on) and init_module materialises the module "
            "with to_empty() before filling it"
        )
    from torch import nn

    module.to_empty(device=device)
    restored: set[str] = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
            sub.reset_running_stats()
            restored.update(f"{prefix}.{local}" if prefix else local for local, _ in sub.named_buffers(recurse=False))
    left = [name for name in meta_buffers if name not in restored and name not in filled]
    if left:
        warnings.warn(
            f"buffers {left} were on the meta device and hold no values after to_empty(); initserve fills "
            "parameters only: set these buffers yourself",
            stacklevel=3,
        )
    return True
