"""Orthogonal algorithm 2 (docs/determinism.md §7.1): the numpy kernel is the document, byte for byte.

The golden vectors pin a few specs; here random shapes and degenerate matrices are compared with
the scalar reference, the numpy sums are shown to be sequential, algorithm 1 is shown to be the
first release's LAPACK orthogonal, and the stats report how orthogonal the stored values are.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from initserve.engine import Kernel, compute_stats, generate, parse_spec, resolve_kernel
from initserve.engine.householder import PANEL, haar_q, sequential_sum
from initserve.engine.samplers import STANDARD_NORMAL, draw

from . import reference as ref
from .conftest import load

F64 = npt.NDArray[np.float64]


def _bits(values: F64) -> list[int]:
    return [int(bits) for bits in np.ascontiguousarray(values).reshape(-1).view(np.uint64)]


def _python_sum(values: list[float]) -> float:
    total = values[0]
    for value in values[1:]:
        total += value
    return total


@pytest.mark.parametrize("length", [1, 2, 7, 64, 1000, 100_003])
def test_numpy_cumsum_is_the_documented_sequential_sum(length: int) -> None:
    # Values of mixed sign and magnitude: any pairwise or SIMD-lane reordering changes the result.
    rng = np.random.default_rng(length)
    values = rng.standard_normal(length) * np.exp(rng.uniform(-30, 30, length))
    assert sequential_sum(values.copy()) == _python_sum(values.tolist())
    matrix = values[: (length // 7) * 7].reshape(-1, 7) if length >= 7 else values.reshape(-1, 1)
    along_rows = sequential_sum(matrix.copy(), axis=0)
    along_cols = sequential_sum(matrix.copy(), axis=1)
    assert _bits(along_rows) == _bits(np.array([_python_sum(matrix[:, k].tolist()) for k in range(matrix.shape[1])]))
    assert _bits(along_cols) == _bits(np.array([_python_sum(row.tolist()) for row in matrix]))


def test_a_pairwise_sum_would_be_caught() -> None:
    """Control: numpy's own ``sum`` (pairwise, SIMD) differs from the sequential order on such data."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal(100_003) * np.exp(rng.uniform(-30, 30, 100_003))
    assert float(np.sum(values)) != _python_sum(values.tolist())


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 72), cols=st.integers(1, 72), seed=st.integers(0, 2**32))
def test_numpy_kernel_equals_the_scalar_reference(rows: int, cols: int, seed: int) -> None:
    m, n = max(rows, cols), min(rows, cols)
    matrix = np.random.default_rng(seed).standard_normal((m, n))
    assert _bits(haar_q(matrix)) == _bits(np.array(ref.haar_q(matrix.tolist())))


def _degenerate() -> list[F64]:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 36))
    zero_column = a.copy()
    zero_column[:, 3] = 0.0
    repeated = a.copy()
    repeated[:, 34] = repeated[:, 1]  # rank deficient: a column below the diagonal becomes ~0
    zero_below = a.copy()
    zero_below[5:, 5] = 0.0  # σ = 0 exactly for column 5: H₅ = I, R₅₅ = alpha
    negative_zero = a.copy()
    negative_zero[:, 0] = -0.0
    return [zero_column, repeated, zero_below, negative_zero, np.zeros((33, 33)), np.eye(34)[:, :33].copy()]


@pytest.mark.parametrize("matrix", _degenerate(), ids=["zero-column", "repeated", "zero-below", "-0", "zeros", "eye"])
def test_degenerate_matrices_follow_the_document_and_stay_orthogonal(matrix: F64) -> None:
    q = haar_q(matrix)
    assert _bits(q) == _bits(np.array(ref.haar_q(matrix.tolist())))
    assert np.abs(q.T @ q - np.eye(q.shape[1])).max() < 1e-13


def test_panels_of_32_columns_are_part_of_the_algorithm() -> None:
    # Sizes around the panel edges all agree with the reference (the narrow last panel, exactly one panel).
    rng = np.random.default_rng(9)
    for n in (PANEL - 1, PANEL, PANEL + 1, 2 * PANEL):
        matrix = rng.standard_normal((n + 3, n))
        assert _bits(haar_q(matrix)) == _bits(np.array(ref.haar_q(matrix.tolist())))


def test_haar_q_refuses_wide_input() -> None:
    with pytest.raises(ValueError, match="rows ≥ cols"):
        haar_q(np.zeros((3, 5)))


@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (64, 64)])
def test_algorithm_1_is_the_first_release_lapack_orthogonal(shape: tuple[int, int]) -> None:
    spec = parse_spec({"shape": list(shape), "scheme": "orthogonal", "seed": 3, "dtype": "float64", "algorithm": 1})
    normals = draw(STANDARD_NORMAL, spec.key, math.prod(shape), resolve_kernel("numpy")).reshape(shape)
    wide = shape[0] < shape[1]
    q, r = np.linalg.qr(normals.T if wide else normals, mode="reduced")
    q = q * np.where(np.diagonal(r) < 0.0, -1.0, 1.0)
    expected = (q.T if wide else q) * 1.0
    assert generate(spec).tobytes() == np.ascontiguousarray(expected).tobytes()
    # Algorithm 2 is a different computation of the same matrix: equal to rounding, not in bits.
    second = generate(parse_spec({**spec.canonical(), "algorithm": 2}))
    assert np.abs(second - expected).max() < 1e-13


@pytest.mark.parametrize(
    ("shape", "dtype", "gram", "bound"),
    [
        ((48, 80), "float64", "WWᵀ", 1e-13),
        ((80, 48), "float64", "WᵀW", 1e-13),
        ((64, 64), "float32", "WWᵀ", 1e-5),
        ((40, 3, 3), "bfloat16", "WᵀW", 0.1),
    ],
)
def test_stats_report_orthogonality_and_fans(shape: tuple[int, ...], dtype: str, gram: str, bound: float) -> None:
    gain = 1.5
    body = {"shape": list(shape), "scheme": "orthogonal", "seed": 1, "dtype": dtype, "params": {"gain": gain}}
    report = compute_stats(parse_spec(body))
    rows, cols = shape[0], math.prod(shape[1:])
    orthogonality = report["orthogonality"]
    assert orthogonality["gram"] == gram and orthogonality["matrix_shape"] == [rows, cols]
    assert orthogonality["expected_diagonal"] == gain * gain
    assert 0.0 < orthogonality["max_abs_deviation"] < bound * gain * gain
    receptive = math.prod(shape[2:])
    assert (report["fan_in"], report["fan_out"]) == (shape[1] * receptive, shape[0] * receptive)
    # A slice reports the whole matrix's orthogonality (the slice alone is not a square Gram).
    sliced = compute_stats(parse_spec({**body, "slice": [[0, 5]]}))
    assert sliced["orthogonality"] == orthogonality
    assert sliced["numel"] == 5 * cols


# --- the native kernel: the same bytes as the numpy kernel, for any thread count ------------------
@pytest.fixture
def native() -> Kernel:
    return load("native")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 300), cols=st.integers(1, 300), seed=st.integers(0, 2**32), threads=st.integers(1, 5))
def test_native_kernel_equals_the_numpy_kernel(native: Kernel, rows: int, cols: int, seed: int, threads: int) -> None:
    m, n = max(rows, cols), min(rows, cols)
    matrix = np.random.default_rng(seed).standard_normal((m, n)) * 10.0 ** float(seed % 7 - 3)
    assert _bits(haar_q(matrix, native=native.qr, threads=threads)) == _bits(haar_q(matrix))


@pytest.mark.parametrize("matrix", _degenerate(), ids=["zero-column", "repeated", "zero-below", "-0", "zeros", "eye"])
def test_native_kernel_follows_the_document_on_degenerate_matrices(native: Kernel, matrix: F64) -> None:
    assert _bits(haar_q(matrix, native=native.qr, threads=2)) == _bits(np.array(ref.haar_q(matrix.tolist())))


def test_native_kernel_at_a_size_with_every_tile_remainder(native: Kernel) -> None:
    # 8-column tiles, 4-row tiles and 128-row passes all end mid-way; threads split the columns.
    matrix = np.random.default_rng(3).standard_normal((645, 531))
    expected = _bits(haar_q(matrix))
    for threads in (1, 2, 3, 7):
        assert _bits(haar_q(matrix, native=native.qr, threads=threads)) == expected, threads


def test_generated_orthogonal_is_the_same_under_both_kernels(native: Kernel) -> None:
    for body in (
        {"shape": [200, 300], "scheme": "orthogonal", "seed": 4, "dtype": "float64"},
        {"shape": [64, 16, 3, 3], "scheme": "orthogonal", "seed": 5, "layout": "keras", "dtype": "bfloat16"},
    ):
        spec = parse_spec(body)
        assert generate(spec, kernel=native).tobytes() == generate(spec, kernel=resolve_kernel("numpy")).tobytes()
