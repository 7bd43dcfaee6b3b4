"""Exact tests of the structured schemes: zeros, ones, constant, eye, dirac, orthogonal, sparse.

Expected tensors are built here from torch's definitions (init-schemes.md §4); values in the lower
precision dtypes are compared with an independent round-to-nearest-even of the float64 value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from initserve.engine import SpecError, compute_stats, generate, parse_spec
from initserve.engine.dtypes import bfloat16_bits_to_float64
from scipy import stats

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")

F64 = npt.NDArray[np.float64]
DTYPES = ("float32", "float64", "float16", "bfloat16")
PRECISION = {"float32": (24, -149), "float16": (11, -24), "bfloat16": (8, -133)}  # (bits, min quantum exp)


def round_to(values: F64, dtype: str) -> F64:
    """float64 → dtype, nearest with ties to even, computed in float64 (power-of-two scaling + rint)."""
    x = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        return x
    bits, min_quantum = PRECISION[dtype]
    _, exponent = np.frexp(x)
    quantum = np.maximum(exponent - bits, min_quantum)
    result: F64 = np.ldexp(np.rint(np.ldexp(x, -quantum)), quantum)
    return result


def body(scheme: str, shape: Sequence[int], params: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"shape": list(shape), "scheme": scheme, "params": dict(params or {})}
    spec.update(fields)
    return spec


def tensor(spec: Mapping[str, Any]) -> F64:
    """The result widened exactly to float64, in its shape."""
    parsed = parse_spec(spec)
    raw = generate(parsed)
    if parsed.dtype == "bfloat16":
        return bfloat16_bits_to_float64(raw.view(np.uint16)).reshape(parsed.result_shape)
    return np.asarray(raw, dtype=np.float64)


# --- constants -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("scheme", "params", "value"),
    [
        ("zeros", {}, 0.0),
        ("ones", {}, 1.0),
        ("constant", {"value": -2.5}, -2.5),
        ("constant", {"value": 0.1}, 0.1),
        ("constant", {"value": 1 / 3}, 1 / 3),
        ("constant", {"value": 1e-30}, 1e-30),
    ],
)
def test_constants_are_exact(scheme: str, params: dict[str, Any], value: float, dtype: str) -> None:
    result = tensor(body(scheme, (7, 3, 5), params, dtype=dtype))
    assert result.shape == (7, 3, 5)
    expected = round_to(np.array([value]), dtype)[0]
    assert np.all(result == expected)
    if value == 0.0:
        assert not np.signbit(result).any()  # +0.0, never -0.0


def test_constant_value_is_required() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(body("constant", (3,)))
    assert any(e.loc == ("params", "value") for e in error.value.errors)


# --- eye ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["torch", "keras"])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3), (1, 6), (6, 1)])
@pytest.mark.parametrize("gain", [1.0, 2.5, -0.3])
def test_eye_is_the_rectangular_identity_times_gain(shape: tuple[int, int], gain: float, layout: str) -> None:
    result = tensor(body("eye", shape, {"gain": gain}, dtype="float64", layout=layout))
    expected = gain * np.eye(*shape)
    np.testing.assert_array_equal(result, expected)
    assert np.count_nonzero(result) == min(shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eye_in_every_dtype(dtype: str) -> None:
    result = tensor(body("eye", (6, 9), {"gain": 0.1}, dtype=dtype))
    np.testing.assert_array_equal(result, round_to(0.1 * np.eye(6, 9), dtype))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_eye_needs_exactly_two_dimensions(shape: tuple[int, ...]) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(body("eye", shape))
    assert error.value.errors[0].loc == ("shape",)


# --- dirac -------------------------------------------------------------------------------------------
def torch_dirac(shape: Sequence[int], groups: int) -> F64:
    """torch.nn.init.dirac_: W[g·opg + d, d, k₁//2, …] = 1 for g < groups, d < min(opg, in)."""
    out = np.zeros(shape)
    per_group = shape[0] // groups
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            out[(g * per_group + d, d, *centre)] = 1.0
    return out


def to_keras(torch_layout: F64) -> F64:
    """(out, in, *k) → (*k, in, out)."""
    rank = torch_layout.ndim
    return np.transpose(torch_layout, (*range(2, rank), 1, 0))


def test_dirac_torch_example() -> None:
    result = tensor(body("dirac", (6, 2, 3), {"groups": 3}))
    ones = sorted(tuple(int(i) for i in index) for index in np.argwhere(result == 1.0))
    assert ones == [(0, 0, 1), (1, 1, 1), (2, 0, 1), (3, 1, 1), (4, 0, 1), (5, 1, 1)]
    assert np.count_nonzero(result) == 6


DIRAC_CASES = [
    ((6, 2, 3), 3),
    ((4, 4, 3), 1),
    ((5, 7, 2), 1),
    ((4, 4, 3, 3), 1),
    ((8, 3, 4, 5), 2),  # even kernel: centre k//2 = 2 (torch), not (k-1)//2
    ((6, 9, 3, 3), 3),
    ((3, 8, 1, 2), 1),
    ((4, 2, 3, 4, 5), 2),
    ((6, 6, 2, 2, 2), 6),
]


@pytest.mark.parametrize(("shape", "groups"), DIRAC_CASES, ids=[f"{s}-g{g}" for s, g in DIRAC_CASES])
def test_dirac_matches_torch_definition_in_both_layouts(shape: tuple[int, ...], groups: int) -> None:
    expected = torch_dirac(shape, groups)
    result = tensor(body("dirac", shape, {"groups": groups}))
    np.testing.assert_array_equal(result, expected)
    assert np.count_nonzero(result) == groups * min(shape[0] // groups, shape[1])
    keras_shape = (*shape[2:], shape[1], shape[0])
    keras = tensor(body("dirac", keras_shape, {"groups": groups}, layout="keras"))
    np.testing.assert_array_equal(keras, to_keras(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dirac_in_every_dtype(dtype: str) -> None:
    result = tensor(body("dirac", (8, 3, 4, 5), {"groups": 2}, dtype=dtype))
    np.testing.assert_array_equal(result, torch_dirac((8, 3, 4, 5), 2))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (body("dirac", (6, 2, 3), {"groups": 4}), ("params", "groups")),
        (body("dirac", (6, 2)), ("shape",)),
        (body("dirac", (2, 2, 2, 2, 2, 2)), ("shape",)),
        (body("dirac", (6, 2, 3), {"groups": 0}), ("params", "groups")),
    ],
)
def test_dirac_rules(spec: dict[str, Any], field: tuple[str, ...]) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec)
    assert error.value.errors[0].loc == field


# --- orthogonal --------------------------------------------------------------------------------------
TOLERANCE = {"float64": 1e-12, "float32": 2e-6}


def gram_error(matrix: F64, gain: float) -> float:
    """max |MᵀM − g²I| for a tall matrix, |MMᵀ − g²I| for a wide one (the smaller Gram matrix)."""
    rows, cols = matrix.shape
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    return float(np.abs(gram - gain**2 * np.eye(min(rows, cols))).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(64, 64), (100, 40), (40, 100), (1, 30), (30, 1)])
@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_orthogonal_matrix_is_gain_times_semi_orthogonal(shape: tuple[int, int], gain: float, dtype: str) -> None:
    result = tensor(body("orthogonal", shape, {"gain": gain}, dtype=dtype, seed=17))
    assert gram_error(result, gain) <= TOLERANCE[dtype] * gain**2 * math.sqrt(max(shape))
    singular = np.linalg.svd(result, compute_uv=False)
    np.testing.assert_allclose(singular, gain, rtol=10 * TOLERANCE[dtype] * math.sqrt(max(shape)))


@pytest.mark.parametrize(
    ("shape", "layout", "matrix_shape"),
    [
        ((16, 4, 3, 3), "torch", (16, 36)),  # torch: (shape[0], ∏rest) — wide: rows orthonormal
        ((64, 4, 3, 3), "torch", (64, 36)),  # tall: columns orthonormal
        ((3, 3, 4, 16), "keras", (36, 16)),  # keras: (∏shape[:-1], shape[-1])
        ((3, 3, 4, 64), "keras", (36, 64)),
        ((5, 6, 7), "torch", (5, 42)),
        ((5, 6, 7), "keras", (30, 7)),
    ],
)
def test_orthogonal_conv_flattening_follows_the_layout(
    shape: tuple[int, ...], layout: str, matrix_shape: tuple[int, int]
) -> None:
    result = tensor(body("orthogonal", shape, {"gain": 1.5}, dtype="float64", layout=layout, seed=4))
    assert gram_error(result.reshape(matrix_shape), 1.5) <= 1e-12 * math.sqrt(max(matrix_shape))
    # The other layout's flattening of the same tensor is not orthogonal.
    other = (math.prod(shape[:-1]), shape[-1]) if layout == "torch" else (shape[0], math.prod(shape[1:]))
    assert gram_error(result.reshape(other), 1.5) > 0.1


def test_orthogonal_is_haar_distributed() -> None:
    """Over 2500 seeds of 8×8 float64: E[tr Q] = 0 and E[(tr Q)²] = 1 for Haar Q. QR without the
    sign(diag R) fix gives ≈ −1.58 and 3.03 (init-schemes.md §5), far outside the tolerances."""
    traces = np.array(
        [np.trace(tensor(body("orthogonal", (8, 8), dtype="float64", seed=seed))) for seed in range(2500)]
    )
    se_mean = traces.std() / math.sqrt(traces.size)
    assert abs(traces.mean()) < 4 * se_mean, (traces.mean(), se_mean)
    squares = traces**2
    se_square = squares.std() / math.sqrt(squares.size)
    assert abs(squares.mean() - 1.0) < 4 * se_square, (squares.mean(), se_square)
    # An 8×8 Haar matrix's entries are exchangeable: Q[0, 0] and Q[7, 3] have the same law, mean 0, E[q²] = 1/8.
    corners = np.array([tensor(body("orthogonal", (8, 8), dtype="float64", seed=s)) for s in range(500)])
    for entry in (corners[:, 0, 0], corners[:, 7, 3]):
        assert abs(entry.mean()) < 4 * entry.std() / math.sqrt(entry.size)
        assert abs((entry**2).mean() - 1 / 8) < 4 * (entry**2).std() / math.sqrt(entry.size)
    assert stats.ks_2samp(corners[:, 0, 0], corners[:, 7, 3]).pvalue > 1e-3


def test_orthogonal_lower_precision_is_the_rounded_float64_matrix() -> None:
    exact = tensor(body("orthogonal", (48, 80), {"gain": 2.0}, dtype="float64", seed=6))
    for dtype in ("float32", "float16", "bfloat16"):
        rounded = tensor(body("orthogonal", (48, 80), {"gain": 2.0}, dtype=dtype, seed=6))
        np.testing.assert_array_equal(rounded, round_to(exact, dtype))


@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (6, 5, 7)])
def test_orthogonal_stats_match_its_exact_second_moment(shape: tuple[int, ...]) -> None:
    """‖W‖²_F = g²·min(r, c) exactly, so mean² + std² of the entries is g²/max(r, c)."""
    gain = 1.7
    rows, cols = shape[0], math.prod(shape[1:])
    report = compute_stats(parse_spec(body("orthogonal", shape, {"gain": gain}, dtype="float64", seed=2)))
    second_moment = gain**2 / max(rows, cols)
    assert report["std"] ** 2 + report["mean"] ** 2 == pytest.approx(second_moment, rel=1e-12)
    assert report["expected"]["std"] == pytest.approx(math.sqrt(second_moment), rel=1e-14)
    assert report["expected"]["mean"] == 0.0
    assert (report["expected"]["low"], report["expected"]["high"]) == (-gain, gain)
    assert -gain <= report["min"] and report["max"] <= gain


@pytest.mark.parametrize(
    ("scheme", "shape", "params"),
    [
        ("eye", (3, 5), {"gain": 2.0}),
        ("dirac", (8, 3, 4, 5), {"groups": 2}),
        ("constant", (4, 4), {"value": -0.5}),
        ("ones", (2, 3), {}),
    ],
)
def test_deterministic_schemes_realise_their_expected_moments(
    scheme: str, shape: tuple[int, ...], params: dict[str, Any]
) -> None:
    result = tensor(body(scheme, shape, params, dtype="float64"))
    report = compute_stats(parse_spec(body(scheme, shape, params, dtype="float64")))
    assert report["expected"]["mean"] == pytest.approx(result.mean(), rel=1e-14)
    assert report["expected"]["std"] == pytest.approx(result.std(), rel=1e-12, abs=1e-15)
    assert report["expected"]["low"] == min(0.0, result.min()) or report["expected"]["low"] == result.min()
    assert report["expected"]["high"] == result.max()


def test_orthogonal_needs_two_dimensions() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(body("orthogonal", (10,)))
    assert error.value.errors[0].loc == ("shape",)


def test_orthogonal_seed_and_name_select_different_matrices() -> None:
    base = tensor(body("orthogonal", (16, 16), seed=1))
    assert not np.array_equal(base, tensor(body("orthogonal", (16, 16), seed=2)))
    assert not np.array_equal(base, tensor(body("orthogonal", (16, 16), seed=1, name="other")))
    np.testing.assert_array_equal(base, tensor(body("orthogonal", (16, 16), seed=1)))


# --- sparse ------------------------------------------------------------------------------------------
SPARSITIES = [0.0, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.9, 0.99, 1.0]


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("rows", [10, 37])
def test_sparse_zeros_per_column_are_exact(sparsity: float, rows: int) -> None:
    """torch layout (out, in): every column has exactly ceil(sparsity·rows) zeros — computed as torch
    does, in float64 (so 0.3·10 = 3.0000000000000004 gives 4, as torch.nn.init.sparse_ does)."""
    cols = 50
    zeros = math.ceil(sparsity * rows)
    result = tensor(body("sparse", (rows, cols), {"sparsity": sparsity, "std": 0.2}, dtype="float64", seed=3))
    per_column = (result == 0.0).sum(axis=0)
    assert per_column.tolist() == [zeros] * cols
    # keras (in, out): the same rule along the out axis, i.e. per row.
    keras = tensor(
        body("sparse", (cols, rows), {"sparsity": sparsity, "std": 0.2}, dtype="float64", seed=3, layout="keras")
    )
    assert (keras == 0.0).sum(axis=1).tolist() == [zeros] * cols


def test_sparse_zero_positions_are_spread_uniformly() -> None:
    """Zero positions are random per column: each row is zeroed in Binomial(cols, ⌈s·rows⌉/rows) columns."""
    rows, cols = 400, 2000
    result = tensor(body("sparse", (rows, cols), {"sparsity": 0.5}, dtype="float64", seed=12))
    zeroed_per_row = (result == 0.0).sum(axis=1)
    mean, sd = cols * 0.5, math.sqrt(cols * 0.25)
    assert np.abs(zeroed_per_row - mean).max() < 6 * sd
    # Columns do not share one zero pattern.
    patterns = {bytes(np.packbits(result[:, j] == 0.0)) for j in range(cols)}
    assert len(patterns) == cols


def test_sparse_values_and_moments() -> None:
    rows, cols, sparsity, std = 1000, 800, 0.25, 0.03
    spec = parse_spec(body("sparse", (rows, cols), {"sparsity": sparsity, "std": std}, dtype="float64", seed=31))
    result = tensor(spec.canonical())
    nonzero = result[result != 0.0]
    assert nonzero.size == (rows - math.ceil(sparsity * rows)) * cols
    assert stats.kstest(nonzero, stats.norm(scale=std).cdf, method="asymp").pvalue > 1e-3
    assert stats.kstest(nonzero, stats.norm(scale=1.02 * std).cdf, method="asymp").pvalue < 1e-6
    kept = 1 - math.ceil(sparsity * rows) / rows
    report = compute_stats(spec)
    assert report["expected"]["std"] == pytest.approx(std * math.sqrt(kept), rel=1e-12)
    assert report["zeros_fraction"] == pytest.approx(math.ceil(sparsity * rows) / rows, rel=1e-12)
    se_var = std**2 * kept * math.sqrt(2 / nonzero.size)
    assert abs(result.var() - std**2 * kept) < 6 * se_var  # exactly K kept values: SE = σ²·kept·√(2/K)


def test_sparse_values_do_not_depend_on_the_sparsity_mask() -> None:
    """The nonzero values are the dense N(0, std²) draw with some positions zeroed."""
    dense = tensor(body("sparse", (30, 40), {"sparsity": 0.0}, dtype="float64", seed=8))
    sparse = tensor(body("sparse", (30, 40), {"sparsity": 0.4}, dtype="float64", seed=8))
    kept = sparse != 0.0
    np.testing.assert_array_equal(sparse[kept], dense[kept])
    assert np.count_nonzero(dense) == dense.size


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (body("sparse", (10, 10)), ("params", "sparsity")),
        (body("sparse", (10, 10), {"sparsity": 1.5}), ("params", "sparsity")),
        (body("sparse", (10, 10), {"sparsity": -0.1}), ("params", "sparsity")),
        (body("sparse", (10, 10, 3), {"sparsity": 0.1}), ("shape",)),
        (body("sparse", (10,), {"sparsity": 0.1}), ("shape",)),
    ],
)
def test_sparse_rules(spec: dict[str, Any], field: tuple[str, ...]) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec)
    assert error.value.errors[0].loc == field


# --- zero-element shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scheme", "shape", "params"),
    [
        ("zeros", (0, 4), {}),
        ("eye", (0, 3), {}),
        ("dirac", (0, 2, 3), {}),
        ("orthogonal", (4, 0), {}),
        ("sparse", (0, 5), {"sparsity": 0.5}),
    ],
)
def test_zero_element_shapes_give_empty_tensors(scheme: str, shape: tuple[int, ...], params: dict[str, Any]) -> None:
    for dtype in DTYPES:
        result = tensor(body(scheme, shape, params, dtype=dtype))
        assert result.shape == shape and result.size == 0


def test_structured_schemes_ignore_the_seed() -> None:
    for scheme, shape, params in [("eye", (4, 6), {}), ("dirac", (4, 4, 3), {}), ("constant", (3, 3), {"value": 2})]:
        a, b = (tensor(body(scheme, shape, params, seed=seed)) for seed in (0, 2**64 - 1))
        np.testing.assert_array_equal(a, b)


def test_dirac_keras_positions_enumerated() -> None:
    """Explicit positions for one keras case: (*k, in, out) with the ones at (k//2…, d, g·opg + d)."""
    result = tensor(body("dirac", (3, 4, 2, 6), {"groups": 3}, layout="keras"))
    ones = {tuple(int(i) for i in index) for index in np.argwhere(result == 1.0)}
    expected = {(1, 2, d, g * 2 + d) for g, d in itertools.product(range(3), range(2))}
    assert ones == expected
