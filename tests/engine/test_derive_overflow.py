"""Derive overflow rules: every action × target dtype whose output could round to infinity is refused with a
field error before any tensor is read; the boundary that just fits is served, finite; and a property over
actions × dtypes × magnitudes: a field error, or a file with no infinity the sources did not hold."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from initserve.engine.checkpoint import tensor_digest
from initserve.engine.derive import ManifestTensor, plan_derive
from initserve.engine.derive_rules import parse_derive
from initserve.engine.dtypes import DTYPES, bfloat16_bits_to_float64, float64_to_bfloat16_bits
from initserve.engine.errors import SpecError, format_loc
from initserve.engine.magnitudes import MagnitudeScan, magnitude

CKPT = "a" * 64
OTHER = "b" * 64
F16_OVERFLOW = DTYPES["float16"].overflow  # 65520
BF16_OVERFLOW = DTYPES["bfloat16"].overflow
F32_OVERFLOW = DTYPES["float32"].overflow
F32_MAX = DTYPES["float32"].max_finite


def _bits(code: str, values: np.ndarray[Any, Any]) -> bytes:
    """The raw little-endian bytes of float64 ``values`` stored as ``code`` (values must be exact in it)."""
    if code == "BF16":
        bits = float64_to_bfloat16_bits(np.asarray(values, dtype=np.float64))
        assert np.array_equal(bfloat16_bits_to_float64(bits), values, equal_nan=True)
        return bits.tobytes()
    stored = np.asarray(values, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[code])
    assert np.array_equal(stored.astype(np.float64), values, equal_nan=True), "test values must be exact"
    return stored.tobytes()


Sources = dict[str, dict[str, tuple[str, np.ndarray[Any, Any]]]]  # checkpoint -> name -> (code, values)


def _store(sources: Sources, *, record: bool = True) -> tuple[dict[str, Any], dict[str, bytes]]:
    manifests: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    for checkpoint, tensors in sources.items():
        manifest = {}
        for name, (code, values) in tensors.items():
            raw = _bits(code, np.asarray(values, dtype=np.float64))
            digest = tensor_digest(code, values.shape, raw)
            blobs[digest] = raw
            found = magnitude(code, raw) if record else None
            manifest[name] = ManifestTensor(code, tuple(values.shape), digest, found)
        manifests[checkpoint] = manifest
    return manifests, blobs


def _derive(sources: Sources, tensors: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """The derived tensors as float64 values (SpecError when refused)."""
    manifests, blobs = _store(sources)
    request = parse_derive({"source": CKPT, "target": {"seed": 1, "tensors": tensors}, "rules": rules})
    data = plan_derive(request, manifests).to_bytes(blobs.__getitem__)
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[8 + size + begin : 8 + size + end]
        if entry["dtype"] == "BF16":
            values = bfloat16_bits_to_float64(np.frombuffer(raw, dtype="<u2"))
        else:
            values = np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[entry["dtype"]])
        out[name] = values.astype(np.float64).reshape(entry["shape"])
    return out


def _refusal(sources: Sources, tensors: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        _derive(sources, tensors, rules)
    return {format_loc(error.loc): error.msg for error in caught.value.errors}


def _one(code: str, *values: float, shape: tuple[int, ...] | None = None) -> Sources:
    array = np.array(values, dtype=np.float64)
    return {CKPT: {"w": (code, array.reshape(shape) if shape else array)}}


def _below(limit: float, code: str) -> float:
    """The largest value of ``code`` below ``limit``: the magnitude that just fits."""
    dtype = {"F16": np.float16, "F32": np.float32, "F64": np.float64}[code]
    return float(np.nextafter(dtype(limit), dtype(0)))


# --- magnitudes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["F16", "BF16", "F32", "F64"])
def test_the_scan_gives_the_largest_finite_magnitude_and_counts_inf_and_nan(code: str) -> None:
    rng = np.random.default_rng(3)
    values = rng.standard_normal(1001) * 100.0
    values[[5, 600]] = [np.inf, np.nan]
    values[17] = -np.inf
    if code == "BF16":
        values = bfloat16_bits_to_float64(float64_to_bfloat16_bits(values))
    elif code != "F64":
        values = values.astype({"F16": np.float16, "F32": np.float32}[code]).astype(np.float64)
    raw = _bits(code, values)
    finite = values[np.isfinite(values)]
    whole = magnitude(code, raw)
    assert whole.max_abs == float(np.abs(finite).max()) and whole.nonfinite == 3
    scan = MagnitudeScan(code)
    for start in range(0, len(raw), 7):  # pieces that split elements
        scan.update(raw[start : start + 7])
    assert scan.result() == whole
    assert magnitude(code, b"").max_abs == 0.0
    broken = MagnitudeScan(code)
    broken.update(raw[:1])
    with pytest.raises(ValueError, match="trailing bytes"):
        broken.result()


# --- each action × dtype: refused past the bound, served at the boundary --------------------------------
T16 = {"w": {"shape": [2], "dtype": "float16"}}


@pytest.mark.parametrize(
    ("code", "dtype", "limit"),
    [("F32", "float16", F16_OVERFLOW), ("F32", "bfloat16", BF16_OVERFLOW), ("F64", "float32", F32_OVERFLOW)],
)
@pytest.mark.parametrize("action", ["copy", "slice", "pad"])
def test_a_conversion_is_refused_iff_the_source_max_rounds_to_infinity(
    code: str, dtype: str, limit: float, action: str
) -> None:
    rule: dict[str, Any] = {"match": "w", "action": action}
    if action == "pad":
        rule |= {"scheme": "zeros"}
    tensors = {"w": {"shape": [2], "dtype": dtype}}
    refused = _refusal(_one(code, 1.0, -limit), tensors, [rule])
    assert "rounds to infinity" in refused["target.tensors.w.dtype"] or dtype in refused["target.tensors.w.dtype"]
    assert f"beyond {dtype}'s largest finite" in refused["target.tensors.w.dtype"]
    fits = _below(limit, code)
    out = _derive(_one(code, 1.0, -fits), tensors, [rule])["w"]
    assert out.tolist() == [1.0, -DTYPES[dtype].max_finite]


def test_a_slice_is_bounded_by_the_whole_source_tensor() -> None:
    """The manifest knows the whole tensor's max |x|: a slice of its small part is refused too (documented)."""
    refused = _refusal(
        _one("F32", 1.0, 70000.0),
        {"w": {"shape": [1], "dtype": "float16"}},
        [{"match": "w", "action": "slice", "slice": [[0, 1]]}],
    )
    assert "whole tensor" in refused["target.tensors.w.dtype"]
    assert _derive(
        _one("F32", 1.0, 70000.0),
        {"w": {"shape": [1], "dtype": "float32"}},
        [{"match": "w", "action": "slice", "slice": [[0, 1]]}],
    )["w"].tolist() == [1.0]


def test_inf_and_nan_sources_convert_as_themselves() -> None:
    out = _derive(_one("F32", np.inf, np.nan, 2.0), {"w": {"shape": [3], "dtype": "float16"}}, [])["w"]
    assert out[0] == np.inf and np.isnan(out[1]) and out[2] == 2.0


def test_shrink_perturb_names_the_term_that_overflows() -> None:
    source = _one("F32", 1.0, -1.0)
    shrink = _refusal(source, T16, [{"match": "w", "action": "shrink_perturb", "shrink": 1e5, "noise": 0.0}])
    assert (
        "shrink_perturb output" in shrink["rules[0].shrink"]
        and "float16's largest finite 65504" in shrink["rules[0].shrink"]
    )
    noise = _refusal(source, T16, [{"match": "w", "action": "shrink_perturb", "shrink": 1.0, "noise": 1e4}])
    assert "max |x| 83001" in noise["rules[0].noise"]  # 1·1 + 1e4·8.3 (the normal's largest |ε|)
    out = _derive(source, T16, [{"match": "w", "action": "shrink_perturb", "shrink": 65519.0, "noise": 0.0}])["w"]
    assert out.tolist() == [65504.0, -65504.0]
    # noise that just fits: 1 + σ·8.3 below 65520
    sigma = (F16_OVERFLOW - 1.0) / 8.3 * (1 - 1e-9)
    out = _derive(source, T16, [{"match": "w", "action": "shrink_perturb", "shrink": 1.0, "noise": sigma}])["w"]
    assert np.isfinite(out).all()
    for dtype, shrink_value in (("float32", 1e39), ("bfloat16", 1e39), ("float64", 1e308)):
        refused = _refusal(
            _one("F32", 10.0),
            {"w": {"shape": [1], "dtype": dtype}},
            [{"match": "w", "action": "shrink_perturb", "shrink": shrink_value, "noise": 0.0}],
        )
        assert f"beyond {dtype}'s largest finite" in refused["rules[0].shrink"], refused
    # a huge noise scheme param: the ε spec (float64) accepts it, the target dtype does not
    refused = _refusal(
        source,
        {"w": {"shape": [2], "dtype": "float32"}},
        [{"match": "w", "action": "shrink_perturb", "shrink": 1.0, "noise": 1.0, "params": {"std": 1e300}}],
    )
    assert "float32" in refused["rules[0].noise"]


def test_mean_rows_bounds_new_rows_by_the_source_max_and_the_noise() -> None:
    rows = np.array([[60000.0, -1.0], [-60000.0, 1.0]])
    source = {CKPT: {"e": ("F32", rows)}}
    tensors = {"e": {"shape": [4, 2], "dtype": "float16"}}
    out = _derive(source, tensors, [{"match": "e", "action": "mean_rows"}])["e"]
    assert out[:2].tolist() == rows.tolist() and out[2:].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    refused = _refusal(source, tensors, [{"match": "e", "action": "mean_rows", "noise": 0.1}])
    assert "mean_rows's new rows" in refused["rules[0].noise"] and "float16" in refused["rules[0].noise"]
    # the noise that just fits M·(1 + noise·8.3) < 65520
    noise = (F16_OVERFLOW / 60000.0 - 1.0) / 8.3 * (1 - 1e-9)
    out = _derive(source, tensors, [{"match": "e", "action": "mean_rows", "noise": noise}])["e"]
    assert np.isfinite(out).all()
    # kept rows beyond the target's range: the conversion rule, at dtype
    big = {CKPT: {"e": ("F32", rows * 2)}}
    assert "kept rows" in _refusal(big, tensors, [{"match": "e", "action": "mean_rows"}])["target.tensors.e.dtype"]


def test_mean_rows_refuses_float64_sums_that_overflow_and_non_finite_sources() -> None:
    huge = {CKPT: {"e": ("F64", np.array([[1e200], [-1e200]]))}}
    tensors = {"e": {"shape": [3, 1], "dtype": "float64"}}
    assert _derive(huge, tensors, [{"match": "e", "action": "mean_rows"}])["e"].tolist() == [[1e200], [-1e200], [0.0]]
    refused = _refusal(huge, tensors, [{"match": "e", "action": "mean_rows", "noise": 1e-3}])
    assert "sum of squared deviations" in refused["target.tensors.e"]
    nan = {CKPT: {"e": ("F32", np.array([[1.0], [np.nan]]))}}
    refused = _refusal(nan, {"e": {"shape": [3, 1], "dtype": "float32"}}, [{"match": "e", "action": "mean_rows"}])
    assert "1 inf or NaN values" in refused["target.tensors.e"]


def test_channel_adapt_bounds_the_float32_arithmetic_and_the_target() -> None:
    weight = np.full((1, 3, 1, 1), 2e38)
    weight[0, 1] = 1.0
    weight = np.float32(weight).astype(np.float64)
    tensors32 = {"c": {"shape": [1, 1, 1, 1], "dtype": "float32"}}
    rule = [{"match": "c", "action": "channel_adapt"}]
    refused = _refusal({CKPT: {"c": ("F32", weight)}}, tensors32, rule)
    assert "float32 arithmetic timm uses" in refused["rules[0].mode"]
    # a float64 source sums in float64: fits a float64 target, not a float32 one
    out = _derive({CKPT: {"c": ("F64", weight)}}, {"c": {"shape": [1, 1, 1, 1], "dtype": "float64"}}, rule)["c"]
    assert np.isfinite(out).all() and out.item() == weight.sum()
    assert "beyond float32's" in _refusal({CKPT: {"c": ("F64", weight)}}, tensors32, rule)["target.tensors.c.dtype"]
    # repeat scales by base/in_chans = 3/2: 2e38 · 1.5 fits float32, 3e38 · 1.5 does not
    wide = {"c": {"shape": [1, 2, 1, 1], "dtype": "float32"}}
    out = _derive({CKPT: {"c": ("F32", weight)}}, wide, rule)["c"]
    assert np.isfinite(out).all() and out.max() == float(np.float32(weight.max()) * np.float32(1.5))
    larger = np.float32(weight * 1.5).astype(np.float64)
    assert "repeat" in _refusal({CKPT: {"c": ("F32", larger)}}, wide, rule)["rules[0].mode"]


def test_soup_is_bounded_by_its_sources_and_needs_them_finite() -> None:
    sources = {CKPT: {"w": ("F32", np.array([70000.0, 1.0]))}, OTHER: {"w": ("F32", np.array([1.0, 1.0]))}}
    rule = [{"match": "w", "action": "soup", "checkpoints": [CKPT, OTHER], "weights": [1.0, 0.0]}]
    assert "soup" in _refusal(sources, T16, rule)["target.tensors.w.dtype"]
    assert _derive(sources, {"w": {"shape": [2], "dtype": "float32"}}, rule)["w"].tolist() == [70000.0, 1.0]
    sources[OTHER]["w"] = ("F32", np.array([np.inf, 1.0]))
    assert "inf or NaN" in _refusal(sources, {"w": {"shape": [2], "dtype": "float32"}}, rule)["target.tensors.w"]


def test_reinit_and_pad_schemes_follow_the_spec_magnitude_rule() -> None:
    refused = _refusal(
        _one("F32", 1.0, 1.0), T16, [{"match": "w", "action": "reinit", "scheme": "normal", "params": {"std": 1e4}}]
    )
    assert "rounds to infinity in float16" in refused["rules[0].params.std"]


def test_a_manifest_without_magnitudes_is_measured_when_a_rule_needs_it() -> None:
    manifests, blobs = _store(_one("F32", 1.0, 70000.0), record=False)
    request = parse_derive({"source": CKPT, "target": {"tensors": T16}, "rules": []})
    measured: list[str] = []

    def measure(tensor: ManifestTensor) -> Any:
        measured.append(tensor.digest)
        return magnitude(tensor.dtype, blobs[tensor.digest])

    with pytest.raises(SpecError, match="float16"):
        plan_derive(request, manifests, measure=measure)
    assert measured == [manifests[CKPT]["w"].digest]


# --- the property -------------------------------------------------------------------------------------
MAGNITUDES = [0.0, 1e-30, 1.0, 3e4, 6e4, 7e4, 1e38, 3.3e38, 3.4e38, 1e39, 1e150, 1e200, 1e300, 1.7e308]
FACTORS = [0.0, 1e-3, 0.5, 1.0, 2.0, 8.0, 1e4, 1e30, 1e300]


@st.composite
def overflow_requests(draw: st.DrawFn) -> tuple[Sources, dict[str, Any], list[dict[str, Any]]]:
    code = draw(st.sampled_from(["F16", "BF16", "F32", "F64"]))
    top = draw(st.sampled_from(MAGNITUDES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(-1.0, 1.0, (3, 3, 1, 1)) * top
    values.reshape(-1)[draw(st.integers(0, 8))] = top * draw(st.sampled_from([1.0, -1.0]))
    if draw(st.booleans()) and code != "F64":
        values.reshape(-1)[draw(st.integers(0, 8))] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    with np.errstate(over="ignore"):
        if code == "BF16":
            values = bfloat16_bits_to_float64(float64_to_bfloat16_bits(values))
        elif code != "F64":
            values = values.astype({"F16": np.float16, "F32": np.float32}[code]).astype(np.float64)
    dtype = draw(st.sampled_from(["float16", "bfloat16", "float32", "float64"]))
    action = draw(st.sampled_from(["copy", "slice", "pad", "mean_rows", "channel_adapt", "shrink_perturb", "soup"]))
    shape = [3, 3, 1, 1]
    rule: dict[str, Any] = {"match": "w", "action": action}
    if action == "pad":
        shape, rule = [4, 3, 1, 1], rule | {"scheme": "normal", "params": {"std": draw(st.sampled_from(FACTORS))}}
    elif action == "slice":
        shape = [2, 3, 1, 1]
    elif action == "mean_rows":
        shape, rule = [5, 3, 1, 1], rule | {"noise": draw(st.sampled_from(FACTORS))}
    elif action == "channel_adapt":
        shape = [3, draw(st.sampled_from([1, 2, 5])), 1, 1]
    elif action == "shrink_perturb":
        rule |= {"shrink": draw(st.sampled_from(FACTORS)), "noise": draw(st.sampled_from(FACTORS))}
    elif action == "soup":
        rule |= {"checkpoints": [CKPT, OTHER], "weights": [draw(st.sampled_from(FACTORS)), 1.0]}
    sources: Sources = {CKPT: {"w": (code, values)}, OTHER: {"w": (code, values[::-1].copy())}}
    return sources, {"w": {"shape": shape, "dtype": dtype}}, [rule]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overflow_requests())
def test_a_derive_is_refused_with_a_field_or_writes_no_new_infinity(
    case: tuple[Sources, dict[str, Any], list[dict[str, Any]]],
) -> None:
    sources, tensors, rules = case
    try:
        with np.errstate(all="ignore"):
            out = _derive(sources, tensors, rules)["w"]
    except SpecError as error:
        for item in error.errors:
            assert item.loc and item.msg, item
        return
    source = sources[CKPT]["w"][1]
    if np.isfinite(source).all():
        assert np.isfinite(out).all(), (rules, tensors, out)
    else:  # only copies convert inf/NaN (as themselves): arithmetic needs finite sources
        assert rules[0]["action"] in ("copy", "slice", "pad") or (
            rules[0]["action"] == "channel_adapt" and tensors["w"]["shape"][1] == 3
        )
        assert np.isinf(out).sum() <= np.isinf(source).sum()


def test_soup_weights_that_sum_to_infinity_are_refused_not_a_soup_of_zeros() -> None:
    sources = {CKPT: {"w": ("F32", np.array([1.0, 2.0]))}, OTHER: {"w": ("F32", np.array([3.0, 4.0]))}}
    t64 = {"w": {"shape": [2], "dtype": "float64"}}
    rule = [{"match": "w", "action": "soup", "checkpoints": [CKPT, OTHER], "weights": [1e308, 1e308]}]
    assert "finite" in _refusal(sources, t64, rule)["rules[0].weights"]
    rule[0]["weights"] = [1e308, 0.5e308]  # the largest that still sums finitely: the weighted mean
    assert _derive(sources, t64, rule)["w"].tolist() == pytest.approx([(2 * 1.0 + 3.0) / 3, (2 * 2.0 + 4.0) / 3])


def test_a_non_finite_rule_number_is_named_as_such() -> None:
    sources = _one("F32", 1.0, 1.0)
    refused = _refusal(sources, T16, [{"match": "w", "action": "shrink_perturb", "shrink": 1.0, "noise": float("nan")}])
    assert refused["rules[0].noise"] == "noise must be a finite number, got nan"
