"""Every scheme × every param at extreme values × every dtype: a field error or finite, in-bound bytes.

The failures of issue #11 (a 500 from scheme arithmetic, +inf from an overflowing ``high − low``)
were all scalars a scheme derives from valid params. The property: ``parse_spec`` either raises a
:class:`SpecError` whose every error names a field, or the spec generates finite values inside the
documented support (``expected.low/high``, cast to the dtype), and its statistics compute.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from initserve.engine import CATALOG, DTYPES, SpecError, compute_stats, generate, parse_spec
from initserve.engine.dtypes import cast_into, to_float64

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")

EXTREMES: list[float | int] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    1e-320,
    1e-300,
    1e-154,
    1e-30,
    1e-8,
    0.5,
    1.0,
    2.0,
    1e8,
    1e30,
    1e154,
    1e300,
    9e307,
    1.7976931348623157e308,
    2**62,
    2**63,
    10**400,
]
EXTREME = st.sampled_from(EXTREMES + [-x for x in EXTREMES if x]) | st.floats(allow_nan=False, allow_infinity=False)
# Schemes whose rank excludes [3, 4] get a shape they accept, so the property reaches their arithmetic.
SHAPES = {"dirac": [4, 2, 3], "delta_orthogonal": [4, 2, 3], "stft": [3, 1, 3]}


def _value(param: Any) -> st.SearchStrategy[object]:
    if param.kind == "choice":
        return st.sampled_from([*param.choices, *param.aliases, "bogus", 1.0])
    if param.kind == "bool":
        return st.sampled_from([True, False, 0, 1, "true", None])
    if param.kind == "int":
        return st.sampled_from([0, 1, 2, 3, -1, 2**62, 2**62 + 1, 2**64, 10**400, 1e308, 2.5])
    return EXTREME


@st.composite
def extreme_specs(draw: st.DrawFn) -> dict[str, Any]:
    scheme = CATALOG[draw(st.sampled_from(sorted(CATALOG)))]
    names = draw(st.lists(st.sampled_from([p.name for p in scheme.params]), unique=True)) if scheme.params else []
    by_name = {p.name: p for p in scheme.params}
    params = {name: draw(_value(by_name[name])) for name in names}
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    return {"shape": SHAPES.get(scheme.name, [3, 4]), "scheme": scheme.name, "params": params, "dtype": dtype}


def _cast(value: float, dtype: str) -> float:
    """``value`` rounded to ``dtype`` by the engine's one rounding rule, back as a float."""
    info = DTYPES[dtype]
    out = np.empty(1, dtype=info.storage)
    with np.errstate(over="ignore"):
        cast_into(np.array([value], dtype=np.float64), out, info)
    return float(to_float64(out, info)[0])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extreme_specs())
def test_extreme_params_give_a_field_error_or_finite_values_in_bounds(body: dict[str, Any]) -> None:
    try:
        spec = parse_spec(body)
    except SpecError as error:
        assert error.errors, "a SpecError lists its errors"
        for item in error.errors:
            assert item.loc, f"an error without a field: {item.msg}"
            assert item.msg
        return
    values = to_float64(generate(spec, threads=1).reshape(-1), spec.dtype_info)
    assert np.isfinite(values).all(), f"non-finite values for {body}"
    moments = spec.built.sampler.moments()
    # Rounding is monotonic, so the cast values lie within the cast bounds (which may be ±inf in float16).
    # A whole-tensor scheme computed by linear algebra (QR, frames) documents the exact-arithmetic bound (e.g.
    # ±gain for unit vectors × gain); its float64 products may pass it by a few ulps (simplex_etf: 1e154 →
    # 1.0000000000000002e154) — under algorithm 2 too, where they are bitwise (the same ulps everywhere).
    entry = spec.scheme_entry
    ulps = 8.0 * 2.0**-52 if entry.whole_tensor or entry.reproducibility_for(spec.algorithm) == "numerical" else 0.0
    if moments.low is not None:
        low = _cast(moments.low - abs(moments.low) * ulps, spec.dtype)
        assert values.min() >= low, f"{values.min()} < low {moments.low} for {body}"
    if moments.high is not None:
        high = _cast(moments.high + abs(moments.high) * ulps, spec.dtype)
        assert values.max() <= high, f"{values.max()} > high {moments.high} for {body}"
    stats = compute_stats(spec, threads=1)
    for figure in ("mean", "std", "min", "max"):
        assert stats[figure] is None or isinstance(stats[figure], float)
    assert all(math.isfinite(edge) for edge in stats["histogram"]["edges"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"shape": [4, 4], "scheme": "kaiming_uniform", "params": {"a": 1e200}}, "a"),
        ({"shape": [4, 4], "scheme": "xavier_normal", "params": {"gain": 0}}, "gain"),
        ({"shape": [4, 4], "scheme": "xavier_uniform", "params": {"fan_in": 1e308, "fan_out": 1e308}}, "fan_in"),
        ({"shape": [4], "scheme": "normal", "params": {"mean": 10**400}}, "mean"),
        ({"shape": [4, 4], "scheme": "xavier_uniform", "params": {"gain": -1}}, "gain"),
        ({"shape": [1], "scheme": "uniform", "dtype": "float64", "params": {"low": -9e307, "high": 9e307}}, "low"),
        ({"shape": [4], "scheme": "truncated_normal", "params": {"mean": 1e308, "std": 1e308}}, "mean"),
        ({"shape": [4, 4], "scheme": "sparse", "params": {"sparsity": 0.5, "std": 1e308}}, "std"),
        # gain² of the expected moments overflows Python floats (OverflowError, not inf)
        ({"shape": [8, 4, 3], "scheme": "delta_orthogonal", "params": {"gain": 1e300}}, "gain"),
        ({"shape": [8, 4, 3], "scheme": "delta_orthogonal", "params": {"gain": -1e160, "centre": "jax"}}, "gain"),
    ],
)
def test_issue_examples_name_the_param(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    assert ("params", field) in [item.loc for item in caught.value.errors], caught.value.errors


@pytest.mark.parametrize(
    "body",
    [
        {"shape": [3, 4], "scheme": "normal", "params": {"std": 1.5e-323}},
        {"shape": [3, 4], "scheme": "normal", "params": {"std": 5e-324, "mean": -5e-324}},
        {"shape": [3, 4], "scheme": "uniform", "params": {"low": -8.89e-322, "high": 8.89e-322}},
        {"shape": [3, 4], "scheme": "truncated_normal", "params": {"std": 1e-322}, "dtype": "float64"},
    ],
)
def test_a_support_a_few_subnormals_wide_has_ordered_histogram_edges(body: dict[str, Any]) -> None:
    """Edges spaced below float64's resolution round out of order unless kept in order: the statistics
    of such a spec compute (np.histogram refused them: a ValueError, a 500 on ?format=stats)."""
    stats = compute_stats(parse_spec(body), threads=1)
    edges = stats["histogram"]["edges"]
    assert len(edges) == len(stats["histogram"]["counts"]) + 1
    assert all(a <= b for a, b in itertools.pairwise(edges)), edges
    assert sum(stats["histogram"]["counts"]) + stats["histogram"]["below"] + stats["histogram"]["above"] == 12
