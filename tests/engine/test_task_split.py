"""generate() splits a request into equal tasks over its threads: the split covers the result exactly
once, balances the threads, and never changes the bytes (every thread count, with or without a
caller's executor, whole tensors and Shard(d)-like slices of short runs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from initserve.engine import Kernel, generate, parse_spec
from initserve.engine.generate import DEFAULT_BLOCK, MIN_TASK, TASK_ALIGN, split_tasks

from .conftest import load


@pytest.mark.parametrize("numel", [0, 1, MIN_TASK - 1, 2 * MIN_TASK, 3 * DEFAULT_BLOCK + 12_345, 48 << 20, 12_582_917])
@pytest.mark.parametrize("workers", [1, 2, 3, 16])
def test_tasks_cover_the_result_once_in_equal_pieces(numel: int, workers: int) -> None:
    tasks = split_tasks(numel, workers)
    position = 0
    for start, count in tasks:
        assert start == position and count > 0
        position += count
    assert position == numel
    if len(tasks) > 1:
        sizes = {count for _, count in tasks[:-1]}
        assert len(sizes) == 1 and sizes.pop() % TASK_ALIGN == 0  # equal, aligned; the last one holds the rest
        assert min(count for _, count in tasks) >= MIN_TASK or len(tasks) < workers  # none tiny
        assert max(count for _, count in tasks) <= DEFAULT_BLOCK + TASK_ALIGN  # no task larger than a block
    if numel >= workers * DEFAULT_BLOCK:
        assert len(tasks) % workers == 0  # every thread gets as many tasks: none idles at the end


def test_a_few_blocks_are_split_evenly_over_the_threads() -> None:
    """A rank's 3.1M-element shard on 2 threads: 4 equal tasks, not 3 blocks (2 + 1)."""
    tasks = split_tasks(3 << 20, 2)
    assert len(tasks) == 4
    assert {count for _, count in tasks} == {(3 << 20) // 4}


SPECS = [
    {"shape": [700, 300], "scheme": "kaiming_uniform"},
    {"shape": [1536, 48, 64], "scheme": "kaiming_normal", "slice": [[0, 1536], [0, 48], [20, 24]]},
    {"shape": [600, 1024], "scheme": "truncated_normal", "slice": [[0, 600], [256, 512]], "dtype": "bfloat16"},
    {"shape": [4096, 257], "scheme": "xavier_uniform", "slice": [[1000, 3001]], "dtype": "float16"},
]


@pytest.mark.parametrize("body", SPECS)
@pytest.mark.parametrize("kernel_name", ["native", "numpy"])
def test_every_thread_count_gives_the_same_bytes(body: dict[str, object], kernel_name: str) -> None:
    kernel: Kernel = load(kernel_name)
    spec = parse_spec({**body, "seed": 11, "name": "w"})
    assert spec.numel >= 2 * MIN_TASK  # large enough to be split
    reference = generate(spec, kernel=kernel, threads=1).tobytes()
    for threads in (2, 3, 4, 5, 8):
        assert generate(spec, kernel=kernel, threads=threads).tobytes() == reference, threads
        for block in (MIN_TASK, 100_003):
            assert generate(spec, kernel=kernel, threads=threads, block=block).tobytes() == reference, (threads, block)
    with ThreadPoolExecutor(max_workers=3) as pool:  # a caller's pool, reused across calls
        for threads in (2, 4):
            assert generate(spec, kernel=kernel, threads=threads, executor=pool).tobytes() == reference, threads
