"""Golden vectors: the engine in a fresh process reproduces them, and so does the scalar reference
implementation written from docs/determinism.md (tests/engine/reference.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import pytest
from initserve.engine import IMPLICIT_ALGORITHM, Kernel, generate, parse_spec

from . import reference as ref
from .golden_tool import GOLDEN_FILE, GOLDEN_FILES, SPECS, SPECS_V2

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")

ROOT = Path(__file__).resolve().parents[2]
GOLDEN: list[dict[str, Any]] = json.loads(GOLDEN_FILE.read_text())
GOLDEN_V2: list[dict[str, Any]] = json.loads(GOLDEN_FILES[2].read_text())


def test_golden_file_covers_at_least_ten_specs_across_schemes_and_dtypes() -> None:
    assert [vector["spec"] for vector in GOLDEN] == SPECS
    assert len({vector["spec"]["scheme"] for vector in GOLDEN}) >= 10
    assert {vector["spec"].get("dtype", "float32") for vector in GOLDEN} == {
        "float32",
        "float64",
        "float16",
        "bfloat16",
    }


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_fresh_process_reproduces_every_golden_vector(hash_seed: str, each_kernel: Kernel) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
    output = subprocess.run(
        [sys.executable, "-m", "tests.engine.golden_tool", "--kernel", each_kernel.name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(output) == {"1": GOLDEN, "2": GOLDEN_V2}


def test_algorithm_2_golden_vectors_cover_orthogonal_in_every_dtype_and_layout() -> None:
    assert [vector["spec"] for vector in GOLDEN_V2] == SPECS_V2
    assert all(body["scheme"] == "orthogonal" and body["algorithm"] == 2 for body in SPECS_V2)
    assert {body.get("dtype", "float32") for body in SPECS_V2} == {"float32", "float64", "float16", "bfloat16"}
    assert {body.get("layout", "torch") for body in SPECS_V2} == {"torch", "keras"}
    # several panels of 32 columns with a narrow last one, tall, wide and square matrices
    assert any(min(b["shape"][0], b["shape"][-1]) > 64 for b in SPECS_V2)


def test_algorithm_1_golden_vectors_are_unchanged_under_algorithm_2() -> None:
    # Algorithm 2 changes orthogonal only: every algorithm-1 golden spec (none is orthogonal) gives
    # the same tensor bytes under both versions.
    for body in SPECS:
        first = generate(parse_spec(body, default_algorithm=IMPLICIT_ALGORITHM))
        second = generate(parse_spec({**body, "algorithm": 2}))
        assert first.tobytes() == second.tobytes(), body


# --- the reference implementation: scalars per scheme, from the formulas in docs/schemes.md --------
def _phi(x: float) -> float:
    mpmath.mp.dps = 50
    return float(mpmath.ncdf(mpmath.mpf(x)))


def _normal_law(mean: float, std: float, low: float = -math.inf, high: float = math.inf):  # type: ignore[no-untyped-def]
    alpha, beta = (low - mean) / std, (high - mean) / std
    if alpha >= 0:
        alpha, beta = -beta, -alpha
    p_low = 0.0 if math.isinf(alpha) else _phi(alpha)
    p_high = 1.0 if math.isinf(beta) else _phi(beta)
    return lambda word: ref.truncated_normal(word, mean, std, low, high, p_low, p_high)


def _uniform_law(low: float, high: float):  # type: ignore[no-untyped-def]
    return lambda word: low + (high - low) * ref.uniform_01(word)


def _reference_law(body: dict[str, Any]):  # type: ignore[no-untyped-def]
    scheme, params, shape = body["scheme"], body.get("params", {}), body["shape"]
    keras = body.get("layout") == "keras"
    receptive = math.prod(shape[:-2] if keras else shape[2:])
    fan_in = (shape[-2] if keras else shape[1]) * receptive if len(shape) >= 2 else shape[0]
    fan_out = (shape[-1] if keras else shape[0]) * receptive if len(shape) >= 2 else shape[0]
    if scheme == "normal":
        return _normal_law(params.get("mean", 0.0), params.get("std", 1.0))
    if scheme == "uniform":
        return _uniform_law(params.get("low", 0.0), params.get("high", 1.0))
    if scheme == "truncated_normal":
        mean, std = params.get("mean", 0.0), params.get("std", 1.0)
        return _normal_law(mean, std, params.get("low", mean - 2.0 * std), params.get("high", mean + 2.0 * std))
    if scheme in ("kaiming_uniform", "kaiming_normal"):
        gain = {"relu": math.sqrt(2.0)}.get(params.get("nonlinearity", "leaky_relu"), math.sqrt(2.0 / 1))
        fan = fan_in if params.get("mode", "fan_in") == "fan_in" else fan_out
        std = gain / math.sqrt(fan)
        if scheme == "kaiming_uniform":
            bound = math.sqrt(3.0) * std
            return _uniform_law(-bound, bound)
        return _normal_law(0.0, std)
    if scheme == "he_normal":
        sigma0 = math.sqrt(2.0 / fan_in) / 0.87962566103423978
        return _normal_law(0.0, sigma0, -2.0 * sigma0, 2.0 * sigma0)
    if scheme == "glorot_uniform":
        limit = math.sqrt(3.0 * (1.0 / ((fan_in + fan_out) / 2.0)))
        return _uniform_law(-limit, limit)
    if scheme == "variance_scaling":
        variance = params["scale"] / math.sqrt(float(fan_in) * float(fan_out))
        return _normal_law(0.0, math.sqrt(variance))
    if scheme == "torch_default":
        bound = 1.0 / math.sqrt(fan_in)
        return _uniform_law(-bound, bound)
    if scheme == "uniform_unit_scaling":
        max_val = math.sqrt(3 / float(fan_in)) * params["factor"]
        return _uniform_law(-max_val, max_val)
    return None


def _full_indices(body: dict[str, Any]) -> list[int]:
    shape = body["shape"]
    grid = np.arange(math.prod(shape)).reshape(shape)
    if "slice" in body:
        grid = grid[tuple(slice(a, b) for a, b in body["slice"])]
    return [int(i) for i in grid.reshape(-1)]


ELEMENTWISE = [body for body in SPECS if _reference_law(body) is not None]


@pytest.mark.parametrize("body", ELEMENTWISE, ids=[f"{b['scheme']}-{b.get('dtype', 'float32')}" for b in ELEMENTWISE])
def test_reference_implementation_reproduces_engine_bits(body: dict[str, Any]) -> None:
    law = _reference_law(body)
    key = ref.key_words(body.get("seed", 0), body.get("name", "weight"))
    cast = ref.CASTS[body.get("dtype", "float32")]
    expected = [cast(law(ref.element_word(key, index))) for index in _full_indices(body)]
    data = generate(parse_spec(body)).reshape(-1)
    got = [int(bits) for bits in data.view(f"<u{data.itemsize}")]
    assert got == expected


def test_reference_covers_the_tail_and_mirrored_paths() -> None:
    # The golden set must exercise the quantile's tail branch and the mirrored truncation.
    body = {
        "shape": [256, 4],
        "scheme": "normal",
        "seed": 2024,
        "dtype": "float64",
        "params": {"mean": 1.0, "std": 3.0},
    }
    key = ref.key_words(2024, "weight")
    probabilities = [ref.uniform_open(ref.element_word(key, i)) for i in range(1024)]
    assert any(abs(p - 0.5) > 0.425 for p in probabilities)
    assert body in SPECS
    assert any(b["scheme"] == "truncated_normal" and b.get("params", {}).get("low", -1) > 0 for b in SPECS)


# --- orthogonal, algorithm 2: the scalar reference from the document, literally --------------------
def _reference_orthogonal(body: dict[str, Any]) -> list[int]:
    spec = parse_spec(body)
    rows, cols = spec.built.sampler.rows, spec.built.sampler.cols  # type: ignore[union-attr]
    key = ref.key_words(spec.seed, spec.name)
    normal = _normal_law(0.0, 1.0)
    normals = [normal(ref.element_word(key, index)) for index in range(rows * cols)]
    values = ref.orthogonal(normals, rows, cols, float(dict(spec.params)["gain"]))
    cast = ref.CASTS[spec.dtype]
    return [cast(values[index]) for index in _full_indices(body)]


@pytest.mark.parametrize("body", SPECS_V2, ids=[f"{b['shape']}-{b.get('dtype', 'float32')}" for b in SPECS_V2])
def test_reference_implementation_reproduces_orthogonal_algorithm_2(body: dict[str, Any]) -> None:
    data = generate(parse_spec(body)).reshape(-1)
    got = [int(bits) for bits in data.view(f"<u{data.itemsize}")]
    assert got == _reference_orthogonal(body)
