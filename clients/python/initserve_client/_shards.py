"""Which elements of a global tensor a rank holds, as boxes the service can slice (pure: numpy only).

A sharded parameter's local tensor is, along every dimension independently, a list of global
indices: ``Shard(d)`` keeps one ``torch.chunk`` piece of dimension ``d``, ``_StridedShard`` and
Megatron's ``partition_stride`` keep several pieces, ``Replicate`` keeps everything. The local
tensor is therefore the grid ``global[ix_(indices_0, indices_1, …)]``; cutting each index list into
its ascending runs turns the grid into boxes, and each box is one spec ``slice``: pairs on the
leading dimensions up to the last one the box restricts, the dimensions after it whole
(docs/determinism.md §8). Every element keeps its global flat index, so a box is bit-identical to
the same box of the whole tensor, and the scheme's scalars (fans, gain, std) come from the global
shape the spec names — never from the local one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Box", "ShardLayout", "chunk_bounds", "megatron_indices", "shard_indices", "strided_shard_indices"]

Indices = npt.NDArray[np.int64]


def chunk_bounds(size: int, chunks: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of piece ``index`` of ``torch.chunk(range(size), chunks)``, empty pieces included.

    torch.chunk makes pieces of ⌈size/chunks⌉ elements (the last ones shorter or empty): for size 5
    in 4 chunks the pieces are [0, 2), [2, 4), [4, 5), [5, 5) — DTensor's ``Shard`` pads the missing
    pieces with empty ones exactly so."""
    if chunks < 1 or not 0 <= index < chunks:
        raise ValueError(f"chunk index must be in 0..{chunks - 1}, got {index}")
    piece = -(-size // chunks)
    return min(index * piece, size), min((index + 1) * piece, size)


def shard_indices(indices: Indices, chunks: int, index: int) -> Indices:
    """``Shard(d)`` on a mesh dimension of ``chunks`` ranks: the coordinate's ``torch.chunk`` piece."""
    start, stop = chunk_bounds(len(indices), chunks, index)
    return indices[start:stop]


def strided_shard_indices(indices: Indices, chunks: int, index: int, split_factor: int) -> Indices:
    """``_StridedShard(d, split_factor)``: cut into ``split_factor`` chunks, each of those into
    ``chunks`` chunks, and keep piece ``index`` of every one, in order (torch's ``_split_tensor``)."""
    pieces = []
    for outer in range(split_factor):
        start, stop = chunk_bounds(len(indices), split_factor, outer)
        pieces.append(shard_indices(indices[start:stop], chunks, index))
    return np.concatenate(pieces) if pieces else indices[:0]


def megatron_indices(global_size: int, rank: int, world_size: int, stride: int) -> Indices:
    """Megatron's partition of one dimension: the global dimension is cut into ``stride · world_size``
    equal pieces and rank ``r`` holds pieces ``r, r + world_size, …`` (``torch.split(master,
    per_partition // stride)[rank::world_size]`` in ``_initialize_affine_weight_cpu``)."""
    if global_size % (stride * world_size):
        raise ValueError(
            f"a Megatron partition needs the dimension ({global_size}) divisible by "
            f"partition_stride · tensor-parallel size ({stride} · {world_size})"
        )
    piece = global_size // (stride * world_size)
    return np.concatenate(
        [np.arange((rank + j * world_size) * piece, (rank + j * world_size + 1) * piece) for j in range(stride)]
    ).astype(np.int64)


@dataclass(frozen=True)
class Box:
    """A block of the global tensor: ``[start, stop)`` per dimension, and where it sits locally."""

    ranges: tuple[tuple[int, int], ...]
    local_offsets: tuple[int, ...]

    @classmethod
    def nothing(cls, global_shape: Sequence[int]) -> Box:
        """An empty block (no rows of the leading dimension): what a rank holding no element requests,
        so that its spec is checked exactly as its peers' are."""
        shape = tuple(int(n) for n in global_shape)
        return cls(tuple((0, 0 if axis == 0 else n) for axis, n in enumerate(shape)), tuple(0 for _ in shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.ranges)

    def spec_slice(self, global_shape: Sequence[int]) -> list[list[int]] | None:
        """The spec's ``slice``: pairs up to the last dimension the box restricts (``None``: the whole tensor)."""
        last = -1
        for axis, (start, stop) in enumerate(self.ranges):
            if (start, stop) != (0, global_shape[axis]):
                last = axis
        return [list(pair) for pair in self.ranges[: last + 1]] or None

    def local_index(self) -> tuple[slice, ...]:
        return tuple(slice(offset, offset + size) for offset, size in zip(self.local_offsets, self.shape, strict=True))


def _runs(indices: Indices) -> list[tuple[int, int, int]]:
    """(global start, global stop, local offset) of each ascending unit-step run of ``indices``."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(indices)]))
    return [(int(indices[a]), int(indices[b - 1]) + 1, int(a)) for a, b in zip(starts, stops, strict=True)]


@dataclass(frozen=True)
class ShardLayout:
    """The global shape and, per dimension, the global indices the local tensor holds (in local order)."""

    global_shape: tuple[int, ...]
    indices: tuple[Indices, ...]

    @classmethod
    def whole(cls, global_shape: Sequence[int]) -> ShardLayout:
        shape = tuple(int(n) for n in global_shape)
        return cls(shape, tuple(np.arange(n, dtype=np.int64) for n in shape))

    @property
    def local_shape(self) -> tuple[int, ...]:
        return tuple(len(axis) for axis in self.indices)

    @property
    def is_whole(self) -> bool:
        return all(
            len(axis) == n and (n == 0 or (axis[0] == 0 and bool(np.all(np.diff(axis) == 1))))
            for axis, n in zip(self.indices, self.global_shape, strict=True)
        )

    def boxes(self) -> list[Box]:
        """The local tensor as boxes of the global one; none when the local tensor is empty."""
        if math.prod(self.local_shape) == 0:
            return []
        per_axis = [_runs(axis) for axis in self.indices]
        return [
            Box(tuple((start, stop) for start, stop, _ in combo), tuple(offset for _, _, offset in combo))
            for combo in itertools.product(*per_axis)
        ]

    def local_positions(self, axis: int, global_index: int) -> Iterator[int]:
        """Local positions along ``axis`` that hold global index ``global_index`` (none if not held)."""
        yield from (int(i) for i in np.flatnonzero(self.indices[axis] == global_index))
