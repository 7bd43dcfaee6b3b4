"""The native kernel and the numpy engine give the same bytes: scheme by scheme, for random specs,
at every offset and boundary, at the extreme seeds, and in a second build for another instruction set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from initserve.engine import CATALOG, Kernel, SpecError, generate, iter_result_chunks, parse_spec
from initserve.engine.generate import ResultWriter
from initserve.engine.kernels import NativeKernel, NumpyKernel, native_program
from initserve.engine.rng import STREAM_SPARSE_MASK, STREAM_VALUES, derive_key

from .conftest import load

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ("float32", "float64", "float16", "bfloat16")
LAYOUTS = ("torch", "keras")
SEEDS = (0, 1 << 63, (1 << 64) - 1)
BITWISE = sorted(name for name, scheme in CATALOG.items() if scheme.reproducibility == "bitwise")
REQUIRED: dict[str, dict[str, Any]] = {"sparse": {"sparsity": 0.25}, "constant": {"value": 0.3}}
SHAPES: dict[str, list[int]] = {"eye": [37, 41], "dirac": [6, 4, 3, 5], "sparse": [97, 31], "stft": [61, 1, 37]}
# Truncation far in a tail (p down to ~1e-300: the far rational of AS 241), mirrored and one-sided
# intervals, and a std small enough that float16/bfloat16/float32 values are subnormal.
EXTREME_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("truncated_normal", {"low": -1e300, "high": -37.0}),
    ("truncated_normal", {"low": -37.0, "high": -36.5}),
    ("truncated_normal", {"low": 8.0, "high": 9.0}),
    ("truncated_normal", {"low": 0.0, "high": 1e300}),
    ("truncated_normal", {"low": -1e300, "high": -0.0}),
    ("truncated_normal", {"mean": -0.0, "std": 1.0, "low": -0.0, "high": 0.5}),
    ("normal", {"std": 1e-42}),
    ("normal", {"mean": 6.0e-8, "std": 3e-8}),
    ("uniform", {"low": -1e-40, "high": 1e-40}),
    ("uniform", {"low": 65000.0, "high": 65504.0}),
    ("constant", {"value": 1.0 + 2.0**-8 + 2.0**-30}),
]


@pytest.fixture(scope="module")
def native() -> Kernel:
    return load("native")


@pytest.fixture(scope="module")
def numpy_kernel() -> Kernel:
    return load("numpy")


def _body(scheme: str, dtype: str, layout: str = "torch", seed: int = 31337, **extra: Any) -> dict[str, Any]:
    return {
        "shape": SHAPES.get(scheme, [61, 37]),
        "scheme": scheme,
        "seed": seed,
        "dtype": dtype,
        "layout": layout,
        "params": REQUIRED.get(scheme, {}),
        **extra,
    }


def _same(spec_body: dict[str, Any], native: Kernel, numpy_kernel: Kernel) -> None:
    spec = parse_spec(spec_body)
    a, b = generate(spec, kernel=native), generate(spec, kernel=numpy_kernel)
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.tobytes() != b.tobytes():
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        first = int(np.flatnonzero(flat_a.view(f"u{a.itemsize}") != flat_b.view(f"u{b.itemsize}"))[0])
        pytest.fail(f"{spec_body}: element {first} differs: native {flat_a[first]!r}, numpy {flat_b[first]!r}")


def test_both_kernels_are_what_they_say(native: Kernel, numpy_kernel: Kernel) -> None:
    assert isinstance(native, NativeKernel) and native.name == "native"
    assert isinstance(numpy_kernel, NumpyKernel) and numpy_kernel.name == "numpy"
    # Every random elementwise sampler of the catalog has a native program (only index-based ones fall back).
    for scheme in ("normal", "uniform", "truncated_normal", "kaiming_uniform", "he_normal", "constant"):
        spec = parse_spec(_body(scheme, "float32"))
        assert native_program(spec.built.sampler, spec.key, spec.dtype_info) is not None, scheme


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scheme", BITWISE)
def test_every_bitwise_scheme_dtype_and_layout(
    scheme: str, dtype: str, layout: str, native: Kernel, numpy_kernel: Kernel
) -> None:
    body = _body(scheme, dtype, layout)
    try:
        _same(body, native, numpy_kernel)
        second = [1, 3] if body["shape"][1] >= 3 else [0, body["shape"][1]]  # stft's in_channels axis is 1 long
        _same({**body, "slice": [[1, min(17, body["shape"][0])], second]}, native, numpy_kernel)
    except SpecError:
        pytest.skip(f"{scheme} does not accept {dtype}/{layout} with these params")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scheme", ["normal", "uniform", "truncated_normal", "sparse", "he_normal"])
def test_extreme_seeds(scheme: str, seed: int, native: Kernel, numpy_kernel: Kernel) -> None:
    for dtype in DTYPES:
        _same(_body(scheme, dtype, seed=seed), native, numpy_kernel)


@pytest.mark.parametrize(("scheme", "params"), EXTREME_PARAMS)
def test_tails_subnormals_and_rounding_edges(
    scheme: str, params: dict[str, Any], native: Kernel, numpy_kernel: Kernel
) -> None:
    checked = 0
    for dtype in DTYPES:
        body = {"shape": [4099], "scheme": scheme, "seed": 5, "dtype": dtype, "params": params}
        try:
            parse_spec(body)
        except SpecError:
            continue  # e.g. 65504 + rounding is beyond float16's range: refused before generation
        _same(body, native, numpy_kernel)
        checked += 1
    assert checked >= 2


def test_runs_starting_and_ending_at_every_offset_and_boundary(native: Kernel, numpy_kernel: Kernel) -> None:
    """Starts and lengths around a Philox block (4 words), the kernel's 512-element tile and a 1M block."""
    total = (1 << 20) + 2048
    for scheme in ("normal", "uniform", "truncated_normal"):
        spec = parse_spec({"shape": [total], "scheme": scheme, "seed": 77, "dtype": "float64"})
        full = generate(spec, kernel=numpy_kernel)
        writer = ResultWriter(spec, native)
        starts = [*range(0, 9), *range(509, 517), *range((1 << 20) - 5, (1 << 20) + 5)]
        counts = [*range(1, 9), *range(509, 517), 1025]
        for start in starts:
            for count in counts:
                out = np.empty(count, dtype=np.float64)
                writer.fill(start, out)
                assert out.tobytes() == full[start : start + count].tobytes(), (scheme, start, count)


def test_block_sizes_and_threads(native: Kernel, numpy_kernel: Kernel) -> None:
    spec = parse_spec({"shape": [1237, 1031], "scheme": "kaiming_normal", "seed": 3, "dtype": "bfloat16"})
    reference = generate(spec, kernel=numpy_kernel, threads=1).tobytes()
    for threads in (1, 2, 8):
        for block in (1000, 4096, 65537, 1 << 20):
            assert generate(spec, kernel=native, threads=threads, block=block).tobytes() == reference
            chunks = b"".join(
                c.tobytes() for c in iter_result_chunks(spec, kernel=native, threads=threads, block=block)
            )
            assert chunks == reference


@pytest.mark.parametrize("stream", [STREAM_VALUES, STREAM_SPARSE_MASK])
def test_raw_words(stream: int, native: Kernel, numpy_kernel: Kernel) -> None:
    for seed in SEEDS:
        key = derive_key(seed, "w")
        for start in (0, 1, 2, 3, 5, (1 << 62) - 9):
            assert np.array_equal(native.words(key, start, 23, stream), numpy_kernel.words(key, start, 23, stream))


@st.composite
def _random_spec(draw: st.DrawFn) -> dict[str, Any]:
    scheme = draw(st.sampled_from([s for s in BITWISE if s not in SHAPES]))
    shape = draw(st.lists(st.integers(1, 24), min_size=1, max_size=4))
    body: dict[str, Any] = {
        "shape": shape,
        "scheme": scheme,
        "seed": draw(st.integers(0, (1 << 64) - 1)),
        "dtype": draw(st.sampled_from(DTYPES)),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "name": draw(st.sampled_from(["weight", "layer.3.bias", "w"])),
        "params": dict(REQUIRED.get(scheme, {})),
    }
    if scheme in ("normal", "truncated_normal"):
        body["params"]["mean"] = draw(st.floats(-3, 3))
        body["params"]["std"] = draw(st.floats(1e-3, 10))
    if scheme == "uniform":
        low = draw(st.floats(-5, 5))
        body["params"] = {"low": low, "high": low + draw(st.floats(0, 10))}
    if draw(st.booleans()):
        pairs = []
        for size in shape[: draw(st.integers(1, len(shape)))]:
            start = draw(st.integers(0, size))
            pairs.append([start, draw(st.integers(start, size))])
        body["slice"] = pairs
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_random_spec())
def test_random_specs(body: dict[str, Any], native: Kernel, numpy_kernel: Kernel) -> None:
    try:
        parse_spec(body)
    except SpecError:
        return
    _same(body, native, numpy_kernel)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.floats(allow_nan=False, allow_infinity=False, min_value=-3e38, max_value=3e38))
def test_casts_of_arbitrary_values(value: float, native: Kernel, numpy_kernel: Kernel) -> None:
    """The one rounding rule, on any binary64: constant{value} goes through each kernel's cast."""
    for dtype in DTYPES:
        body = {"shape": [3], "scheme": "constant", "params": {"value": value}, "dtype": dtype}
        try:
            parse_spec(body)
        except SpecError:
            continue  # beyond the dtype's range: refused
        _same(body, native, numpy_kernel)


# --- a second build, for another instruction set ----------------------------------------------------
_DIGESTS = """
import hashlib, importlib.util, json, sys
from initserve.engine import generate, parse_spec
from initserve.engine.kernels import NativeKernel
spec = importlib.util.spec_from_file_location("initserve.engine._native", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
kernel = NativeKernel(module)
bodies = json.loads(sys.argv[2])
print(json.dumps({"build": module.build_info(),
                  "digests": [hashlib.sha256(generate(parse_spec(b), kernel=kernel).tobytes()).hexdigest()
                              for b in bodies]}))
"""


def _build(tmp: Path, cflags: str) -> Path:
    env = {**os.environ, "INITSERVE_NATIVE_CFLAGS": cflags}
    subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp / "lib"),
            "--build-temp",
            str(tmp / "tmp"),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = (tmp / "lib").rglob("_native*")
    return built


def _digests(extension: Path, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-c", _DIGESTS, str(extension), json.dumps(bodies)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
def test_march_native_and_baseline_builds_give_the_same_bytes(tmp_path: Path, native: Kernel) -> None:
    """The installed build (instruction-set versions picked at load time) against a baseline-only build
    and a -march=native build (wider vectors; FMA available to the compiler, contraction off)."""
    bodies = [_body(scheme, dtype) for scheme in BITWISE for dtype in DTYPES]
    bodies.append({"shape": [1 << 20], "scheme": "normal", "seed": 99})  # many tail lanes
    bodies.append({"shape": [1 << 18], "scheme": "truncated_normal", "params": {"low": -1e300, "high": -37.0}})
    installed = [hashlib.sha256(generate(parse_spec(b), kernel=native).tobytes()).hexdigest() for b in bodies]
    baseline = _digests(_build(tmp_path / "baseline", "-DINITSERVE_NO_MULTIVERSION"), bodies)
    march = _digests(_build(tmp_path / "march", "-march=native -DINITSERVE_NO_MULTIVERSION"), bodies)
    assert baseline["digests"] == installed
    assert march["digests"] == installed
    assert not baseline["build"]["avx2"]
    # The -march=native build really targets more than the baseline here (where the CPU has it).
    if "avx2" in Path("/proc/cpuinfo").read_text():
        assert march["build"]["avx2"] and march["build"]["fma_available"]


@pytest.mark.parametrize(
    "body",
    [
        {"shape": [70_001, 2], "scheme": "normal", "slice": [[0, 70_001], [1, 2]]},  # runs of 1, covering range
        {"shape": [300, 1024], "scheme": "kaiming_uniform", "slice": [[7, 300], [64, 128]]},  # Shard(1), covering
        {"shape": [50, 5000], "scheme": "uniform", "slice": [[0, 50], [0, 3]]},  # gaps too wide: run by run
        {"shape": [9, 40, 33], "scheme": "normal", "dtype": "bfloat16", "slice": [[2, 9], [3, 39], [1, 4]]},
    ],
)
def test_short_runs_read_from_a_covering_range(body: dict[str, Any], native: Kernel, numpy_kernel: Kernel) -> None:
    """The numpy kernel's short-run path (one covering range per sub-chunk) and its run-by-run fallback
    give the native kernel's bytes, whole and from odd starting points."""
    _same(body, native, numpy_kernel)
    spec = parse_spec(body)
    layout = spec.run_layout
    for start, count in ((0, spec.numel), (1, spec.numel - 1), (spec.numel // 3, 1000)):
        count = min(count, spec.numel - start)
        runs = [first + k for first, n in layout.runs_from(start, count) for k in range(n)]
        assert layout.full_indices(start, count).tolist() == runs
        a, b = np.empty(count, spec.dtype_info.storage), np.empty(count, spec.dtype_info.storage)
        ResultWriter(spec, numpy_kernel).fill(start, a)
        ResultWriter(spec, native).fill(start, b)
        assert a.tobytes() == b.tobytes(), (start, count)
