"""Bytes depend only on the spec: not on threads, block size, slicing, byte ranges or SIMD level."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from initserve.engine import (
    CATALOG,
    Kernel,
    SafetensorsFile,
    generate,
    iter_result_chunks,
    parse_bundle,
    parse_spec,
)

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ("float32", "float64", "float16", "bfloat16")
REQUIRED = {"sparse": {"sparsity": 0.25}, "constant": {"value": 0.5}}
SHAPES = {"eye": [37, 41], "dirac": [6, 4, 3, 5], "sparse": [97, 31], "near_etf": [40, 12], "stft": [400, 1, 257]}


def _body(scheme: str, dtype: str = "float32", shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "shape": shape or SHAPES.get(scheme, [97, 211]),
        "scheme": scheme,
        "seed": 31337,
        "dtype": dtype,
        "params": REQUIRED.get(scheme, {}),
        # keras/jax-family schemes need a layout when it changes their fans (here it does).
        "layout": CATALOG[scheme].family,
    }


BITWISE = [name for name, scheme in CATALOG.items() if scheme.reproducibility == "bitwise"]


@pytest.mark.parametrize("scheme", BITWISE)
def test_threads_and_block_sizes_do_not_change_bytes(scheme: str) -> None:
    spec = parse_spec(_body(scheme))
    reference = generate(spec, threads=1, block=spec.numel).tobytes()
    for threads in (1, 2, 8):
        for block in (1000, 4096, 65537):
            assert generate(spec, threads=threads, block=block).tobytes() == reference, (threads, block)


def test_streamed_chunks_equal_the_whole_tensor() -> None:
    spec = parse_spec({"shape": [300, 1000], "scheme": "kaiming_normal", "seed": 5})
    whole = generate(spec).reshape(-1)
    for threads, block in ((1, 7777), (2, 50_000), (8, 1 << 16)):
        pieces = [chunk.copy() for chunk in iter_result_chunks(spec, threads=threads, block=block)]
        assert np.array_equal(np.concatenate(pieces), whole)


@pytest.mark.parametrize("scheme", ["kaiming_normal", "orthogonal"])
def test_unreused_chunks_can_all_be_kept(scheme: str) -> None:
    """``reuse=False`` (a server sends each chunk without copying it): every chunk is a buffer of its own,
    so chunks kept until the end still hold their bytes — in one thread, in a pool, and for a whole-tensor
    scheme — and the bytes are those of the reused ring."""
    spec = parse_spec({"shape": [300, 1000] if scheme != "orthogonal" else [128, 96], "scheme": scheme, "seed": 5})
    whole = generate(spec).reshape(-1)
    for threads, block in ((1, 7777), (2, 5_000), (8, 1 << 12)):
        kept = list(iter_result_chunks(spec, threads=threads, block=block, reuse=False))
        assert len({chunk.ctypes.data for chunk in kept}) == len(kept) > 1, (threads, block)
        assert np.array_equal(np.concatenate(kept), whole), (threads, block)
    file = SafetensorsFile(spec)
    views = list(file.iter_bytes(7, file.total_length - 3, threads=2, block=1 << 12, reuse=False))
    assert b"".join(views) == file.to_bytes()[7:-3]


@pytest.mark.parametrize("scheme", [*BITWISE, "orthogonal"])
def test_any_slice_equals_the_slice_of_the_whole(scheme: str) -> None:
    rng = np.random.default_rng(7)
    body = _body(scheme, shape=[23, 17, 5] if scheme not in SHAPES and scheme != "orthogonal" else None)
    whole = generate(parse_spec(body))
    for _ in range(12):
        pairs = []
        for axis in range(int(rng.integers(1, whole.ndim + 1))):
            start = int(rng.integers(0, whole.shape[axis] + 1))
            pairs.append([start, int(rng.integers(start, whole.shape[axis] + 1))])
        part = generate(parse_spec({**body, "slice": pairs}))
        assert np.array_equal(part, whole[tuple(slice(a, b) for a, b in pairs)]), pairs


@pytest.mark.parametrize("dtype", DTYPES)
def test_byte_ranges_of_the_file_equal_the_whole_file(dtype: str) -> None:
    spec = parse_spec(_body("normal", dtype, [301, 257]))
    whole = SafetensorsFile(spec).to_bytes()
    rng = np.random.default_rng(3)
    for _ in range(25):
        start = int(rng.integers(0, len(whole)))
        stop = int(rng.integers(start, len(whole) + 1))
        parts = b"".join(bytes(view) for view in SafetensorsFile(spec).iter_bytes(start, stop, block=1 << 12))
        assert parts == whole[start:stop], (start, stop)


def test_a_bundle_is_laid_out_by_itemsize_then_name_and_its_ranges_equal_the_whole() -> None:
    """Ranges that start and stop inside, at the edges of and across tensors of three itemsizes."""
    bundle = parse_bundle(
        {
            "seed": 4,
            "tensors": {
                "b": {"shape": [33, 7], "scheme": "normal", "dtype": "float16"},
                "a": {"shape": [19], "scheme": "uniform", "dtype": "float64"},
                "c": {"shape": [5, 9], "scheme": "normal"},
                "d": {"shape": [3, 3], "scheme": "xavier_uniform", "dtype": "float16"},
            },
        }
    )
    file = SafetensorsFile(bundle)
    assert [entry.spec.name for entry in file.entries] == ["a", "c", "b", "d"]
    whole = file.to_bytes()
    assert len(whole) == file.total_length
    edges = {0, file.data_start, len(whole)} | {file.data_start + e.begin for e in file.entries}
    cuts = sorted({min(max(edge + d, 0), len(whole)) for edge in edges for d in (-3, -1, 0, 1, 5)})
    rng = np.random.default_rng(12)
    pairs = [(a, b) for a in cuts for b in cuts if a <= b]
    pairs += [tuple(sorted(int(x) for x in rng.integers(0, len(whole) + 1, 2))) for _ in range(40)]
    for start, stop in pairs:
        part = b"".join(bytes(view) for view in SafetensorsFile(bundle).iter_bytes(start, stop, block=1 << 6))
        assert part == whole[start:stop], (start, stop)


def test_every_element_of_a_large_tensor_is_addressable_alone() -> None:
    # A one-row slice of a 10^12-element tensor costs O(row): no allocation of the whole.
    spec = parse_spec(
        {
            "shape": [1_000_000, 1_000_000],
            "scheme": "normal",
            "seed": 1,
            "slice": [[999_999, 1_000_000], [999_990, 1_000_000]],
        }
    )
    row = generate(spec)
    assert row.shape == (1, 10)
    again = generate(
        parse_spec(
            {
                "shape": [1_000_000, 1_000_000],
                "scheme": "normal",
                "seed": 1,
                "slice": [[999_999, 1_000_000], [999_995, 1_000_000]],
            }
        )
    )
    assert np.array_equal(row[:, 5:], again)


# --- SIMD dispatch ----------------------------------------------------------------------------------
_DIGEST_SCRIPT = """
import hashlib, json, sys
from initserve.engine import generate, parse_spec, resolve_kernel

kernel = resolve_kernel(sys.argv[2])
print(json.dumps([hashlib.sha256(generate(parse_spec(b), kernel=kernel).tobytes()).hexdigest()
                  for b in json.loads(sys.argv[1])]))
"""


def _digests_in_subprocess(bodies: list[dict[str, Any]], env_extra: dict[str, str], kernel: Kernel) -> list[str]:
    env = {**os.environ, **env_extra}
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, json.dumps(bodies), kernel.name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    digests: list[str] = json.loads(result.stdout)
    return digests


def _dispatchable_features() -> list[str]:
    from numpy._core._multiarray_umath import __cpu_dispatch__  # type: ignore[attr-defined]

    return list(__cpu_dispatch__)


def test_restricting_simd_dispatch_to_the_baseline_changes_no_byte(each_kernel: Kernel) -> None:
    features = _dispatchable_features()
    if not features:
        pytest.skip("this numpy build has no dispatchable SIMD levels above its baseline")
    bodies = [_body(scheme, dtype) for scheme in BITWISE for dtype in DTYPES]
    # A large normal tensor exercises the quantile's tail branch many times.
    bodies.append({"shape": [1 << 20], "scheme": "normal", "seed": 99})
    default = [hashlib.sha256(generate(parse_spec(body)).tobytes()).hexdigest() for body in bodies]
    restricted = _digests_in_subprocess(bodies, {"NPY_DISABLE_CPU_FEATURES": " ".join(features)}, each_kernel)
    assert restricted == default
    # The environment variable really took effect in the child (otherwise the test proves nothing).
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy as np; from numpy._core._multiarray_umath import __cpu_features__ as f;"
            "print(json.dumps(sorted(k for k, v in f.items() if v)))".replace("json.dumps", "__import__('json').dumps"),
        ],
        env={**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(features)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert not set(features) & set(json.loads(check.stdout))


def test_the_simd_restriction_would_catch_a_transcendental_ufunc() -> None:
    """Control: numpy's own float32 log changes bits under the same restriction on AVX2/AVX-512
    machines — so the test above would catch an engine that used it."""
    features = _dispatchable_features()
    from numpy._core._multiarray_umath import __cpu_features__  # type: ignore[attr-defined]

    if not any(__cpu_features__.get(name) for name in features):
        pytest.skip("this CPU runs only the baseline SIMD level: the restriction changes nothing here")
    script = (
        "import hashlib, numpy as np; x = np.random.default_rng(0).random(100000).astype(np.float32);"
        "print(hashlib.sha256(np.log(x).tobytes()).hexdigest())"
    )
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    restricted = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(features)},
    ).stdout
    assert plain != restricted
