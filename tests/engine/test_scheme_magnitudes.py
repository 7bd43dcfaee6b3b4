"""Huge scheme params, over the whole catalog: the values they make either fit the dtype (served, with finite
expected and measured moments) or are refused at the param with the magnitude rule ("params.gain: 1e+200
makes values of magnitude 1e+200, which rounds to infinity in float32 …") — never a derived moment that
is NaN or infinite ("the derived expected std is nan", issue #11's structured-scheme case)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from initserve.engine import CATALOG, DTYPES, SpecError, compute_stats, generate, parse_spec
from initserve.engine.derived import MAX_REACH
from initserve.engine.dtypes import to_float64
from initserve.engine.errors import format_loc
from initserve.engine.samplers import scale_moments

SHAPES = {"dirac": [4, 2, 3], "delta_orthogonal": [4, 2, 3]}
NEEDS = {"sparse": {"sparsity": 0.5}}
MAGNITUDES = [1e200, -1e200, 1e155, 1e300, 1e308, 1e39, -1e39, 7e4, 1e130]
CASES = [
    (name, param.name) for name, scheme in sorted(CATALOG.items()) for param in scheme.params if param.kind == "float"
]
STRUCTURED = ["eye", "dct", "haar_wavelet", "delta_orthogonal", "hadamard_orthogonal", "orthogonal", "simplex_etf"]


def _body(scheme: str, params: dict[str, Any], dtype: str) -> dict[str, Any]:
    return {
        "shape": SHAPES.get(scheme, [4, 4]),
        "scheme": scheme,
        "params": {**NEEDS.get(scheme, {}), **params},
        "dtype": dtype,
    }


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize(("scheme", "param"), CASES, ids=[f"{s}.{p}" for s, p in CASES])
def test_a_huge_param_is_served_finite_or_refused_at_the_param_with_the_rule(
    scheme: str, param: str, dtype: str
) -> None:
    for value in MAGNITUDES:
        body = _body(scheme, {param: value}, dtype)
        try:
            spec = parse_spec(body)
        except SpecError as error:
            for item in error.errors:
                text = format_loc(item.loc)
                assert text.startswith("params") or text == "dtype", (body, text)
                assert "expected mean" not in item.msg and "expected std" not in item.msg, (body, item.msg)
                assert " nan" not in item.msg.lower(), (body, item.msg)
                if "makes values" in item.msg:
                    assert text == f"params.{param}", (body, text)
                    assert item.msg.startswith(repr(float(value))), item.msg
                    assert dtype in item.msg or "at most" in item.msg, item.msg
            continue
        reach = spec.built.sampler.max_abs()
        assert reach < DTYPES[dtype].overflow and reach <= MAX_REACH, body
        values = to_float64(generate(spec), spec.dtype_info)
        assert np.isfinite(values).all(), body
        expected = spec.built.sampler.moments()
        assert math.isfinite(expected.mean) and math.isfinite(expected.std), (body, expected)


@pytest.mark.parametrize("scheme", STRUCTURED)
def test_structured_schemes_with_gain_1e200(scheme: str) -> None:
    """float32 cannot hold 1e200: refused at params.gain naming float32. float64 can: served, and its expected
    and measured moments are finite (they were NaN: gain² overflowed in the variance)."""
    with pytest.raises(SpecError) as caught:
        parse_spec(_body(scheme, {"gain": 1e200}, "float32"))
    (error,) = caught.value.errors
    assert format_loc(error.loc) == "params.gain"
    assert error.msg.startswith("1e+200 makes values of magnitude") and "rounds to infinity in float32" in error.msg
    spec = parse_spec(_body(scheme, {"gain": 1e200}, "float64"))
    stats = compute_stats(spec)
    for figure in ("mean", "std"):
        assert math.isfinite(stats[figure]) and math.isfinite(stats["expected"][figure]), stats
    # the same matrix as at gain 1, × 1e200: figures agree to rounding
    unit = compute_stats(parse_spec(_body(scheme, {"gain": 1.0}, "float64")))
    assert stats["max"] == pytest.approx(unit["max"] * 1e200, rel=1e-12)
    assert stats["std"] == pytest.approx(unit["std"] * 1e200, rel=1e-12)
    assert stats["expected"]["std"] == pytest.approx(unit["expected"]["std"] * 1e200, rel=1e-12)


@pytest.mark.parametrize("scheme", ["eye", "dct", "haar_wavelet", "delta_orthogonal", "hadamard_orthogonal"])
def test_moments_of_a_huge_gain_are_the_unit_moments_scaled_exactly(scheme: str) -> None:
    """Beyond 2^400 the moments are computed at gain·2⁻ᵉ and scaled back by 2ᵉ — the same bits as at gain 1
    scaled by 2^600 (power-of-two scaling is exact); below it they are computed as ever."""
    unit = parse_spec(_body(scheme, {"gain": 1.0}, "float64")).built.sampler.moments()
    huge = parse_spec(_body(scheme, {"gain": 2.0**600}, "float64")).built.sampler.moments()
    assert huge == scale_moments(unit, 600)


def test_values_that_fit_are_served_bitwise_as_before() -> None:
    """The magnitude rule only moved before the moments: bytes of accepted specs are unchanged (the golden
    vectors pin the rest); gain 2^400 (the last unscaled) and 2^401 are both exact multiples of gain 1."""
    base = generate(parse_spec(_body("eye", {"gain": 1.0}, "float64")))
    for exponent in (400, 401, 900):
        spec = parse_spec(_body("eye", {"gain": 2.0**exponent}, "float64"))
        assert np.array_equal(generate(spec), np.ldexp(base, exponent))
