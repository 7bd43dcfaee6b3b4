"""Generation: any range of a spec's result, block-parallel, streamed through reused buffers.

Element ``i`` of the full tensor depends only on (key, i) for elementwise schemes, so the work is
split into fixed blocks handed to a thread pool; block size and thread count change the speed,
never the bytes. Whole-tensor schemes (orthogonal, sparse) compute the full tensor once per call.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import numpy as np
import numpy.typing as npt

from .dtypes import cast_into
from .rng import WordStream
from .samplers import WholeSampler, is_elementwise
from .spec import Spec

Array = npt.NDArray[np.generic]
SUBCHUNK = 1 << 16  # elements per inner step: amortises per-call overhead, temporaries stay in L2
DEFAULT_BLOCK = 1 << 20  # elements per parallel task / streamed chunk


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def fill_full_range(spec: Spec, start: int, out: Array) -> None:
    """Write elements ``start .. start+len(out)`` of the *full* flat tensor into ``out`` (storage dtype)."""
    elementwise = spec.built.sampler
    assert is_elementwise(elementwise), "whole-tensor schemes have no random access"
    count = out.shape[0]
    words = WordStream(spec.key, start) if elementwise.uses_words else None
    dtype = spec.dtype_info
    for offset in range(0, count, SUBCHUNK):
        n = min(SUBCHUNK, count - offset)
        chunk_words = words.next(n) if words is not None else None
        cast_into(elementwise.values(chunk_words, start + offset, n), out[offset : offset + n], dtype)


class ResultWriter:
    """Fills ranges of a spec's *result* (after slicing) into caller buffers."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._runs = list(spec.runs()) if spec.slice is not None else None
        self._run_offsets: list[int] = []
        if self._runs is not None:
            total = 0
            for _, count in self._runs:
                self._run_offsets.append(total)
                total += count
        self._whole: Array | None = None

    def fill(self, start: int, out: Array) -> None:
        """Write result elements ``start .. start+len(out)`` into ``out``."""
        if not is_elementwise(self.spec.built.sampler):
            whole = self._whole_result()
            out[...] = whole[start : start + out.shape[0]]
            return
        if self._runs is None:
            fill_full_range(self.spec, start, out)
            return
        position, end = start, start + out.shape[0]
        index = int(np.searchsorted(self._run_offsets, start, side="right")) - 1
        while position < end:
            run_start, run_count = self._runs[index]
            inside = position - self._run_offsets[index]
            n = min(run_count - inside, end - position)
            fill_full_range(self.spec, run_start + inside, out[position - start : position - start + n])
            position += n
            index += 1

    def _whole_result(self) -> Array:
        if self._whole is None:
            sampler = cast(WholeSampler, self.spec.built.sampler)
            values = sampler.whole(self.spec.key).reshape(self.spec.shape)
            if self.spec.slice is not None:
                values = values[tuple(slice(a, b) for a, b in self.spec.slice)]
            flat = np.ascontiguousarray(values).reshape(-1)
            stored = np.empty(flat.shape[0], dtype=self.spec.dtype_info.storage)
            cast_into(flat, stored, self.spec.dtype_info)
            self._whole = stored
        return self._whole


def generate(spec: Spec, *, threads: int | None = None, block: int = DEFAULT_BLOCK) -> Array:
    """The whole result as an array of the storage dtype (bfloat16 as uint16 bit patterns)."""
    out = np.empty(spec.numel, dtype=spec.dtype_info.storage)
    writer = ResultWriter(spec)
    blocks = [(start, min(block, spec.numel - start)) for start in range(0, spec.numel, block)]
    workers = threads or default_threads()
    if workers == 1 or len(blocks) <= 1 or not is_elementwise(spec.built.sampler):
        for start, count in blocks:
            writer.fill(start, out[start : start + count])
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="initserve-gen") as pool:
            for future in [pool.submit(writer.fill, start, out[start : start + count]) for start, count in blocks]:
                future.result()
    return out.reshape(spec.result_shape)


def iter_result_chunks(
    spec: Spec,
    start: int = 0,
    stop: int | None = None,
    *,
    threads: int | None = None,
    block: int = DEFAULT_BLOCK,
) -> Iterator[Array]:
    """Result elements [start, stop) as consecutive arrays of at most ``block`` elements.

    Blocks are generated ahead by a thread pool into a ring of reused buffers: a yielded array is
    valid only until the next one is requested. Memory: (2·threads + 1) blocks, whatever the size.
    """
    stop = spec.numel if stop is None else stop
    if stop <= start:
        return
    writer = ResultWriter(spec)
    blocks = -(-(stop - start) // block)
    if blocks == 1 or not is_elementwise(spec.built.sampler):
        # One block (small tensors, most requests) or a whole-tensor scheme: a thread pool would
        # cost more than it saves. Fill in the caller's thread, one reused buffer.
        buffer = np.empty(min(block, stop - start), dtype=spec.dtype_info.storage)
        for position in range(start, stop, block):
            view = buffer[: min(block, stop - position)]
            writer.fill(position, view)
            yield view
        return
    workers = min(threads or default_threads(), blocks)
    depth = 2 * workers
    ring = [np.empty(min(block, stop - start), dtype=spec.dtype_info.storage) for _ in range(depth + 1)]
    positions = iter(range(start, stop, block))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="initserve-stream") as pool:
        pending: deque[tuple[Future[None], Array]] = deque()
        slot = 0

        def submit_next() -> bool:
            nonlocal slot
            position = next(positions, None)
            if position is None:
                return False
            buffer = ring[slot % len(ring)][: min(block, stop - position)]
            slot += 1
            pending.append((pool.submit(writer.fill, position, buffer), buffer))
            return True

        for _ in range(depth):
            if not submit_next():
                break
        try:
            while pending:
                future, buffer = pending.popleft()
                future.result()
                # The consumer holds `buffer` until it asks for the next chunk; the ring has one slot
                # more than the tasks in flight, so the slot refilled here is never the held one.
                submit_next()
                yield buffer
        finally:
            for future, _ in pending:
                future.cancel()
