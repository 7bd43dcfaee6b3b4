"""Generation: any range of a spec's result, block-parallel, streamed through reused buffers.

Element ``i`` of the full tensor depends only on (key, i) for elementwise schemes, so the work is
split into tasks handed to a thread pool (equal tasks for a whole result, :func:`split_tasks`; fixed
blocks for a stream); task size and thread count change the speed, never the bytes. The native
kernel releases the GIL for a whole task, so the pool's threads run on all cores. Whole-tensor
schemes (orthogonal, sparse) compute the full tensor once per call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import cast

import numpy as np
import numpy.typing as npt

from .cores import default_threads as default_threads  # re-exported: the service and benchmarks use it
from .dtypes import cast_into
from .kernels import Filler, Kernel, default_kernel
from .samplers import WholeSampler, is_elementwise
from .spec import Spec

Array = npt.NDArray[np.generic]
# Gives the whole (unsliced) tensor of a whole-tensor spec, flat, in the storage dtype, computed with
# the given kernel. The default computes it (:func:`compute_whole`); a service passes a cache so that
# repeated requests, every range of a request and every slice of one tensor share one computation.
# It must return compute_whole's bytes (every kernel gives the same bytes).
WholeSource = Callable[[Spec, Kernel], Array]
DEFAULT_BLOCK = 1 << 20  # elements per parallel task / streamed chunk
MIN_TASK = 1 << 15  # generate(): no task smaller than this (~50 µs of work: handing a task to a thread costs ~25 µs)
TASK_ALIGN = 64  # generate(): task boundaries on multiples of 64 elements (no cache line split between threads)


def split_tasks(numel: int, workers: int, block: int = DEFAULT_BLOCK) -> list[tuple[int, int]]:
    """``(start, count)`` tasks covering ``0 .. numel`` for ``workers`` threads: as many tasks per
    worker for every worker, each at most about ``block`` elements (rounded up to TASK_ALIGN), none
    below MIN_TASK (fewer tasks then, down to one).

    Fixed ``block``-sized tasks leave threads idle at the end of a request that is a few blocks long
    (a rank's 3.1M-element shard is 3 blocks: 2 threads finish in the time of 2 blocks, not 1.5);
    equal tasks do not. Element ``i`` depends only on (key, i), so the split changes the speed, never
    the bytes."""
    if numel <= 0:
        return []
    per_worker = max(1, -(-numel // (workers * block)))
    tasks = max(1, min(workers * per_worker, numel // MIN_TASK))
    size = -(-numel // tasks)
    size = -(-size // TASK_ALIGN) * TASK_ALIGN
    return [(start, min(size, numel - start)) for start in range(0, numel, size)]


def compute_whole(spec: Spec, kernel: Kernel) -> Array:
    """The whole tensor of a whole-tensor scheme (orthogonal, sparse), ignoring ``spec.slice``: flat,
    in the storage dtype (bfloat16 as uint16 bit patterns)."""
    sampler = cast(WholeSampler, spec.built.sampler)
    values = sampler.whole(spec.key, kernel)
    stored = np.empty(values.shape[0], dtype=spec.dtype_info.storage)
    cast_into(values, stored, spec.dtype_info)
    return stored


class ResultWriter:
    """Fills ranges of a spec's *result* (after slicing) into caller buffers, with one kernel.

    Elementwise schemes: one prepared kernel call per buffer, which walks the slice's runs by
    arithmetic (``Spec.run_layout``), so memory is O(1) per request whatever the number of runs, and
    a column slice costs one call per block, not one per row. Whole-tensor schemes compute the
    whole tensor once per writer.
    """

    def __init__(self, spec: Spec, kernel: Kernel | None = None, whole_source: WholeSource | None = None) -> None:
        self.spec = spec
        self.kernel = kernel if kernel is not None else default_kernel()
        self._whole_source = whole_source or compute_whole
        sampler = spec.built.sampler
        self._fill: Filler | None = None
        if is_elementwise(sampler):
            self._fill = self.kernel.prepare(sampler, spec.key, spec.dtype_info, spec.run_layout)
        self._whole: Array | None = None

    def fill(self, start: int, out: Array) -> None:
        """Write result elements ``start .. start+len(out)`` into ``out``."""
        if self._fill is not None:
            self._fill(start, out)
            return
        whole = self._whole_result()
        out[...] = whole[start : start + out.shape[0]]

    def _whole_result(self) -> Array:
        if self._whole is None:
            # The cast is elementwise, so slicing the cast whole equals casting the slice.
            whole = self._whole_source(dataclasses.replace(self.spec, slice=None), self.kernel)
            if self.spec.slice is not None:
                cut = whole.reshape(self.spec.shape)[tuple(slice(a, b) for a, b in self.spec.slice)]
                whole = np.ascontiguousarray(cut).reshape(-1)
            self._whole = whole
        return self._whole


def generate(
    spec: Spec,
    *,
    kernel: Kernel | None = None,
    threads: int | None = None,
    block: int = DEFAULT_BLOCK,
    out: Array | None = None,
    whole_source: WholeSource | None = None,
    executor: Executor | None = None,
) -> Array:
    """The whole result as an array of the storage dtype (bfloat16 as uint16 bit patterns).

    ``kernel``: which implementation of algorithm 1 (kernels.resolve_kernel; None: default_kernel()).
    ``out``: write into this C-contiguous array of ``numel`` elements of the storage dtype (any shape)
    instead of a new one, e.g. a model parameter's own memory; ValueError if it does not fit.
    ``executor``: runs the ``threads - 1`` helper threads (it should have that many workers); without
    one, a thread pool is started for the call. A caller generating many tensors keeps one: starting
    and joining threads costs ~0.1 ms per call, a shard's worth of elements.
    """
    if out is None:
        out = np.empty(spec.numel, dtype=spec.dtype_info.storage)
    else:
        storage = np.dtype(spec.dtype_info.storage)
        if out.dtype != storage or out.size != spec.numel or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                f"out must be a writable C-contiguous {storage} array of {spec.numel} elements, "
                f"got {out.dtype} of {out.size} (contiguous: {out.flags.c_contiguous})"
            )
        out = out.reshape(-1)
    if spec.numel == 0:  # nothing to draw; a layer without inputs (fan_in 0) has no std to compute either
        return out.reshape(spec.result_shape)
    writer = ResultWriter(spec, kernel, whole_source)
    workers = threads or default_threads()
    if workers == 1 or not is_elementwise(spec.built.sampler):
        for start in range(0, spec.numel, block):
            writer.fill(start, out[start : start + block])
        return out.reshape(spec.result_shape)
    tasks = split_tasks(spec.numel, workers, block)
    if len(tasks) == 1:  # never empty: an empty result returned above
        writer.fill(0, out)
        return out.reshape(spec.result_shape)
    # Each thread takes the next task when it is done with one (a slower thread, e.g. on a busy core,
    # takes fewer); the calling thread is one of them, so one thread fewer is started and waited for.
    pending = iter(tasks)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                task = next(pending, None)
            if task is None:
                return
            start, count = task
            writer.fill(start, out[start : start + count])

    helpers = min(workers, len(tasks)) - 1
    if executor is not None:
        _work_with(executor, work, helpers)
    else:
        with ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="initserve-gen") as pool:
            _work_with(pool, work, helpers)
    return out.reshape(spec.result_shape)


def _work_with(executor: Executor, work: Callable[[], None], helpers: int) -> None:
    """``work`` on ``helpers`` executor threads and the calling thread; returns when all are done."""
    futures = [executor.submit(work) for _ in range(helpers)]
    try:
        work()
    finally:  # never return (or raise) while a helper may still write into the caller's buffer
        for future in futures:
            future.exception()
    for future in futures:
        future.result()


def iter_result_chunks(
    spec: Spec,
    start: int = 0,
    stop: int | None = None,
    *,
    kernel: Kernel | None = None,
    threads: int | None = None,
    block: int = DEFAULT_BLOCK,
    whole_source: WholeSource | None = None,
    reuse: bool = True,
) -> Iterator[Array]:
    """Result elements [start, stop) as consecutive arrays of at most ``block`` elements.

    Blocks are generated ahead by a thread pool into a ring of reused buffers: a yielded array is
    valid only until the next one is requested. Memory: (2·threads + 1) blocks, whatever the size.
    ``reuse=False``: every block gets a new buffer that the consumer owns and may keep (a server hands
    it to the socket without copying it; a fresh allocation costs a third of a copy). Memory is then
    2·threads blocks in flight plus whatever the consumer keeps.
    """
    stop = spec.numel if stop is None else stop
    if stop <= start:
        return
    writer = ResultWriter(spec, kernel, whole_source)
    blocks = -(-(stop - start) // block)
    if blocks == 1 or not is_elementwise(spec.built.sampler):
        # One block (small tensors, most requests) or a whole-tensor scheme: a thread pool would
        # cost more than it saves. Fill in the caller's thread, one reused buffer.
        buffer = np.empty(min(block, stop - start), dtype=spec.dtype_info.storage)
        for position in range(start, stop, block):
            if not reuse and position != start:
                buffer = np.empty(min(block, stop - position), dtype=spec.dtype_info.storage)
            view = buffer[: min(block, stop - position)]
            writer.fill(position, view)
            yield view
        return
    workers = min(threads or default_threads(), blocks)
    depth = 2 * workers
    ring = [np.empty(min(block, stop - start), dtype=spec.dtype_info.storage) for _ in range(depth + 1 if reuse else 0)]
    positions = iter(range(start, stop, block))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="initserve-stream") as pool:
        pending: deque[tuple[Future[None], Array]] = deque()
        slot = 0

        def submit_next() -> bool:
            nonlocal slot
            position = next(positions, None)
            if position is None:
                return False
            count = min(block, stop - position)
            buffer = ring[slot % len(ring)][:count] if reuse else np.empty(count, dtype=spec.dtype_info.storage)
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
