"""``generate(spec, out=...)``: the result written into caller memory, byte-identical to a fresh array."""

from __future__ import annotations

import numpy as np
import pytest
from initserve.engine import generate, parse_spec
from initserve.engine.kernels import Kernel


@pytest.mark.parametrize(
    "body",
    [
        {"shape": [300, 70], "scheme": "kaiming_uniform", "slice": [[0, 300], [13, 41]]},
        {"shape": [3, 50, 7], "scheme": "truncated_normal", "dtype": "bfloat16", "slice": [[1, 3], [5, 9]]},
        {"shape": [5000], "scheme": "normal", "dtype": "float16"},
        {"shape": [12, 12], "scheme": "orthogonal", "slice": [[2, 5]]},
    ],
)
def test_out_holds_exactly_the_fresh_result(kernel: Kernel, body: dict[str, object]) -> None:
    spec = parse_spec({**body, "seed": 7, "name": "into"})
    fresh = generate(spec, kernel=kernel, threads=2, block=1 << 10)
    out = np.zeros(spec.result_shape, dtype=spec.dtype_info.storage)
    returned = generate(spec, kernel=kernel, threads=2, block=1 << 10, out=out)
    assert np.shares_memory(returned, out)
    assert out.tobytes() == fresh.tobytes()


def test_out_that_does_not_fit_names_the_rule(kernel: Kernel) -> None:
    spec = parse_spec({"shape": [4, 6], "scheme": "normal"})
    for bad in (np.empty(23, np.float32), np.empty(24, np.float64), np.empty((6, 4), np.float32).T):
        with pytest.raises(ValueError, match="out must be a writable C-contiguous float32 array of 24 elements"):
            generate(spec, kernel=kernel, out=bad)
