"""A slice's generation memory does not grow with the gaps between its elements.

docs/api.md: "Server memory is independent of tensor size: one engine chunk". The numpy kernel reads
short runs (a column of a wide matrix) from the range of full indices that covers them; that range
holds up to COVER_GAP unused elements per run, so a sub-chunk of one-element runs 1,025 apart once
allocated ~1,025× the result (a 512 KiB column of a (65536, 1025) float64 tensor peaked at 521 MiB).
Both kernels must stay within a few MiB of the result, with the same bytes.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from initserve.engine import Kernel, generate, parse_spec

from .conftest import load

MiB = 1 << 20

# Short runs with wide gaps: the covering rule (≤ COVER_GAP unused elements per run) accepts them all.
GAPPY: list[dict[str, Any]] = [
    {"shape": [8192, 1025], "scheme": "normal", "dtype": "float64", "slice": [[0, 8192], [0, 1]]},
    {"shape": [4096, 3, 700], "scheme": "uniform", "dtype": "float32", "slice": [[0, 4096], [0, 3], [5, 7]]},
    {"shape": [2048, 600, 2], "scheme": "truncated_normal", "dtype": "bfloat16", "slice": [[0, 2048], [0, 2], [1, 2]]},
]


def _peak(spec_body: dict[str, Any], kernel: Kernel) -> tuple[int, bytes]:
    spec = parse_spec(spec_body)
    # One-time set-up (numpy allocates ~7 MiB on its first 64K-element transform): not the slice's cost.
    generate(parse_spec({**spec_body, "shape": [1 << 16], "slice": None}), kernel=kernel, threads=1)
    tracemalloc.start()
    try:
        result = generate(spec, kernel=kernel, threads=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - result.nbytes, result.tobytes()


@pytest.mark.parametrize("body", GAPPY, ids=lambda body: "x".join(map(str, body["shape"])))
def test_short_runs_with_wide_gaps_need_bounded_memory(body: dict[str, Any]) -> None:
    numpy_extra, numpy_bytes = _peak(body, load("numpy"))
    assert numpy_extra <= 4 * MiB, f"numpy kernel: {numpy_extra / MiB:.1f} MiB beyond the result"
    native_extra, native_bytes = _peak(body, load("native"))
    assert native_extra <= 4 * MiB, f"native kernel: {native_extra / MiB:.1f} MiB beyond the result"
    assert numpy_bytes == native_bytes
