"""The traps a new user meets in the first hour (issue #12), at the engine: names, scheme spellings,
keras-family layouts, canonical fans, the overflow rule, one-sided truncation, sparse per layout."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
from initserve.engine import CATALOG, SpecError, compute_stats, generate, parse_bundle, parse_spec
from initserve.engine.catalog import ALIASES, NEAR_MISSES, unknown_scheme_message
from initserve.engine.dtypes import DTYPES, bfloat16_bits_to_float64
from initserve.engine.rng import derive_key
from scipy import stats


def _errors(body: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    return [f"{'.'.join(map(str, error.loc))}: {error.msg}" for error in info.value.errors]


# --- names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["task a", "ünïcode.weight", "层.权重", "emoji 😀", "a/b:c[0]", "quote\"and'apostrophe", "x" * 256, "tab-less"],
)
def test_any_unicode_name_without_controls_is_accepted_and_keyed_by_its_utf8(name: str) -> None:
    spec = parse_spec({"shape": [3, 4], "scheme": "normal", "seed": 5, "name": name})
    assert spec.name == name
    digest = hashlib.sha256(b"initserve/v1\x00" + (5).to_bytes(8, "little") + name.encode("utf-8")).digest()
    assert derive_key(5, name) == int.from_bytes(digest[:16], "little")  # k0 | k1 << 64, UTF-8 unchanged


def test_ascii_names_keep_their_bytes() -> None:
    # The golden vector's name: the new rule must not change what an old (ASCII) name gives.
    body = {"shape": [3, 7], "scheme": "uniform", "seed": 2**64 - 1, "dtype": "float64", "name": "layer.0.weight"}
    data = generate(parse_spec(body)).tobytes()
    assert hashlib.sha256(data).hexdigest() == "c3731ce168ceeacc9c84c95ed60a65e5e62ae1d3d698676c93f9e3ccf06c8c0e"


def test_names_differing_only_in_unicode_give_different_tensors() -> None:
    a = generate(parse_spec({"shape": [64], "scheme": "normal", "name": "task a"}))
    b = generate(parse_spec({"shape": [64], "scheme": "normal", "name": "task ä"}))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "tab\there", "del\x7f", "a\u2029b", "\ud83d", "x" * 257, ""])
def test_control_characters_and_overlong_names_are_refused(bad: str) -> None:
    messages = _errors({"shape": [2], "scheme": "zeros", "name": bad})
    assert messages and messages[0].startswith("name: name must")


def test_bundle_keys_follow_the_same_name_rule() -> None:
    bundle = parse_bundle(
        {"tensors": {"task a": {"shape": [2], "scheme": "zeros"}, "b ü": {"shape": [2], "scheme": "ones"}}}
    )
    assert sorted(spec.name for spec in bundle.tensors) == ["b ü", "task a"]
    with pytest.raises(SpecError, match="U\\+000A"):
        parse_bundle({"tensors": {"a\nb": {"shape": [2], "scheme": "zeros"}}})


# --- scheme spellings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_framework_aliases_canonicalise_to_the_catalog_name(alias: str) -> None:
    scheme = ALIASES[alias]
    shape = {"dirac": [4, 2, 3], "eye": [3, 3], "stft": [4, 1, 6]}.get(scheme, [4, 6])
    params = {"sparse": {"sparsity": 0.5}, "constant": {"value": 0.5}}.get(scheme, {})
    body = {"shape": shape, "params": params, "seed": 3, "layout": "keras"}
    by_alias, by_name = parse_spec({**body, "scheme": alias}), parse_spec({**body, "scheme": scheme})
    assert by_alias.canonical_json() == by_name.canonical_json()
    assert by_alias.digest() == by_name.digest()
    assert generate(by_alias).tobytes() == generate(by_name).tobytes()


def test_every_alias_names_its_scheme_in_the_equivalents() -> None:
    for alias, scheme in ALIASES.items():
        equivalents = " ".join(text or "" for text in CATALOG[scheme].equivalents.values())
        assert alias.rstrip("_") in equivalents.replace("()", ""), (alias, scheme)


@pytest.mark.parametrize(
    ("typo", "suggested"),
    [
        ("kaiming_unifrom", "kaiming_uniform"),
        ("he_normall", "he_normal"),
        ("Kaiming_Normal", "kaiming_normal"),
        ("xavier-uniform", "xavier_uniform"),
        ("HeNormal_", "he_normal"),
        ("orthogonl", "orthogonal"),
    ],
)
def test_typos_get_the_closest_names(typo: str, suggested: str) -> None:
    (message,) = _errors({"shape": [4, 4], "scheme": typo})
    assert f"did you mean '{suggested}'" in message
    assert "known:" not in message  # not the whole list again


@pytest.mark.parametrize("near", sorted(NEAR_MISSES))
def test_spellings_with_other_defaults_are_refused_with_the_arguments_to_use(near: str) -> None:
    (message,) = _errors({"shape": [4, 4], "scheme": near})
    assert NEAR_MISSES[near] in message and "scheme '" in message


def test_unknown_scheme_message_for_non_strings() -> None:
    assert "must be a string" in unknown_scheme_message(3)


# --- keras-family schemes and the layout -----------------------------------------------------------------
KERAS_FAMILY = [name for name, scheme in CATALOG.items() if scheme.family == "keras"]


def test_keras_family_is_exactly_the_keras_and_jax_schemes() -> None:
    assert set(KERAS_FAMILY) == {
        "lecun_uniform",
        "lecun_normal",
        "he_uniform",
        "he_normal",
        "glorot_uniform",
        "glorot_normal",
        "variance_scaling",
        "stft",
    }
    for name in KERAS_FAMILY:
        assert "layout 'keras'" in CATALOG[name].notes, name


@pytest.mark.parametrize("scheme", ["lecun_uniform", "lecun_normal", "he_uniform", "he_normal", "variance_scaling"])
def test_keras_family_without_layout_is_refused_when_the_fans_differ(scheme: str) -> None:
    (message,) = _errors({"shape": [784, 256], "scheme": scheme})
    assert message.startswith("layout: ")
    assert "layout 'keras'" in message and "fan_in 784" in message and "fan_in 256" in message


@pytest.mark.parametrize("scheme", ["glorot_uniform", "glorot_normal"])
def test_glorot_dense_kernels_are_layout_free_but_conv_kernels_are_not(scheme: str) -> None:
    dense = parse_spec({"shape": [784, 256], "scheme": scheme})  # fan_avg is symmetric: same law
    assert dense.layout == "torch"
    both = [parse_spec({"shape": [784, 256], "scheme": scheme, "layout": layout}) for layout in ("torch", "keras")]
    assert generate(dense).tobytes() == generate(both[0]).tobytes()
    assert "fan_in 36, fan_out 72" in _errors({"shape": [3, 3, 4, 8], "scheme": scheme})[0]


def test_keras_layout_gives_keras_he_normal_std() -> None:
    spec = parse_spec({"shape": [784, 256], "scheme": "he_normal", "layout": "keras", "seed": 1})
    result = compute_stats(spec)
    assert (result["fan_in"], result["fan_out"], result["layout"]) == (784, 256, "keras")
    assert result["expected"]["std"] == pytest.approx(math.sqrt(2 / 784), rel=1e-12)  # keras HeNormal: 0.0505
    assert result["std"] == pytest.approx(0.0505, abs=0.0005)


def test_layout_free_cases_are_accepted_without_a_layout() -> None:
    for body in (
        {"shape": [256, 256], "scheme": "he_normal"},  # square
        {"shape": [10], "scheme": "he_uniform"},  # rank 1: (n, n) in both
        {"shape": [6, 10], "scheme": "variance_scaling", "params": {"mode": "fan_geo_avg"}},  # symmetric mode
        {"shape": [784, 256], "scheme": "he_normal", "params": {"fan_in": 784, "fan_out": 256}},  # explicit fans
        {"shape": [0, 5], "scheme": "he_normal"},  # nothing to generate
    ):
        parse_spec(body)


@pytest.mark.parametrize("spelling", ["Orthogonal", "orthogonal_initializer"])
def test_keras_spellings_of_orthogonal_without_layout_are_refused_when_the_flattening_differs(spelling: str) -> None:
    """keras' Orthogonal flattens a (3, 3, 16, 32) kernel to (144, 32); torch's orthogonal_ to (3, 1536).
    Read silently as torch's, a keras user got rows orthonormal where keras makes columns so."""
    (message,) = _errors({"shape": [3, 3, 16, 32], "scheme": spelling})
    assert message.startswith("layout: ") and spelling in message
    assert "(144, 32)" in message and "(3, 1536)" in message
    keras = parse_spec({"shape": [3, 3, 16, 32], "scheme": spelling, "layout": "keras"})
    columns = np.asarray(generate(keras), dtype=np.float64).reshape(144, 32)
    np.testing.assert_allclose(columns.T @ columns, np.eye(32), atol=1e-5)
    # 2-D kernels flatten alike in both layouts: accepted, as before (and the same bytes either way)
    plain = parse_spec({"shape": [64, 32], "scheme": spelling})
    spelled_out = parse_spec({"shape": [64, 32], "scheme": "orthogonal", "layout": "keras"})
    assert plain.layout == "torch" and generate(plain).tobytes() == generate(spelled_out).tobytes()
    # the catalog name keeps torch's reading (torch's orthogonal_ is spelled that way too)
    assert parse_spec({"shape": [3, 3, 16, 32], "scheme": "orthogonal"}).layout == "torch"


def test_tf1_spelling_of_uniform_unit_scaling_without_layout_is_refused_when_d_differs() -> None:
    """TF1's uniform_unit_scaling_initializer divides by d = ∏shape[:-1] (784 for a (784, 256) kernel);
    read as torch's (out, in) it silently used 256."""
    (message,) = _errors({"shape": [784, 256], "scheme": "uniform_unit_scaling_initializer"})
    assert message.startswith("layout: ") and "uniform_unit_scaling_initializer" in message
    assert "fan_in 784" in message and "fan_in 256" in message
    tf1 = parse_spec({"shape": [784, 256], "scheme": "uniform_unit_scaling_initializer", "layout": "keras"})
    assert dict(tf1.params)["fan_in"] == 784
    assert parse_spec({"shape": [784, 256], "scheme": "uniform_unit_scaling"}).layout == "torch"  # golden v1
    parse_spec({"shape": [64, 64], "scheme": "uniform_unit_scaling_initializer"})  # square: layout-free


def test_keras_spellings_are_aliases_of_their_scheme() -> None:
    for scheme in CATALOG.values():
        assert set(scheme.keras_spellings) <= set(scheme.aliases), scheme.name
    assert parse_spec({"shape": [3, 5], "scheme": "Identity"}).scheme == "eye"  # 2-D only: layout-free


def test_bundle_level_layout_counts_as_given() -> None:
    bundle = parse_bundle({"layout": "keras", "tensors": {"k": {"shape": [784, 256], "scheme": "he_normal"}}})
    assert bundle.tensors[0].layout == "keras"
    with pytest.raises(SpecError, match="keras/jax-family"):
        parse_bundle({"tensors": {"k": {"shape": [784, 256], "scheme": "he_normal"}}})


# --- canonical fans ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fan_in"),
    [
        ({"shape": [5, 6], "scheme": "uniform_unit_scaling", "params": {"factor": 1.43}}, 6),
        ({"shape": [5, 6], "scheme": "uniform_unit_scaling", "layout": "keras"}, 5),
        ({"shape": [7], "scheme": "uniform_unit_scaling"}, 1),
        ({"shape": [], "scheme": "uniform_unit_scaling"}, 1),
    ],
)
def test_uniform_unit_scaling_writes_the_d_it_uses_as_fan_in(body: dict[str, Any], fan_in: int) -> None:
    spec = parse_spec(body)
    assert dict(spec.params)["fan_in"] == fan_in
    spelled = parse_spec({**body, "params": {**body.get("params", {}), "fan_in": fan_in}})
    assert spelled.canonical_json() == spec.canonical_json() and spelled.digest() == spec.digest()
    assert generate(spelled).tobytes() == generate(spec).tobytes()
    assert compute_stats(spec)["fan_in"] == fan_in


@pytest.mark.parametrize("scheme", ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal"])
def test_rank_one_torch_schemes_need_both_fans(scheme: str) -> None:
    assert "explicit params.fan_in and params.fan_out" in _errors({"shape": [8], "scheme": scheme})[0]
    assert (
        "explicit params.fan_in and params.fan_out"
        in _errors({"shape": [8], "scheme": scheme, "params": {"fan_in": 8}})[0]
    )
    parse_spec({"shape": [8], "scheme": scheme, "params": {"fan_in": 8, "fan_out": 4}})
    assert "Rank < 2" in CATALOG[scheme].notes


# --- overflow rule -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "accepted", "refused", "rounds_to"),
    [
        ("float16", 65519.0, 65520.0, 65504.0),
        ("bfloat16", (2 - 2**-8) * 2**127 * (1 - 2**-40), (2 - 2**-8) * 2**127, (2 - 2**-7) * 2**127),
        ("float32", (2 - 2**-24) * 2**127 * (1 - 2**-40), (2 - 2**-24) * 2**127, float(np.finfo(np.float32).max)),
    ],
)
def test_values_that_round_to_the_largest_finite_are_accepted(
    dtype: str, accepted: float, refused: float, rounds_to: float
) -> None:
    for value in (65510.0, accepted) if dtype == "float16" else (accepted,):
        spec = parse_spec({"shape": [2], "scheme": "constant", "params": {"value": value}, "dtype": dtype})
        out = generate(spec)
        values = bfloat16_bits_to_float64(out) if dtype == "bfloat16" else out.astype(np.float64)
        assert values.tolist() == [rounds_to, rounds_to]
        assert rounds_to == DTYPES[dtype].max_finite
    assert (
        "rounds to infinity"
        in _errors({"shape": [2], "scheme": "constant", "params": {"value": -refused}, "dtype": dtype})[0]
    )


# --- truncation --------------------------------------------------------------------------------------
def test_one_sided_truncation_with_a_far_bound_is_the_half_normal() -> None:
    spec = parse_spec(
        {
            "shape": [20000],
            "scheme": "truncated_normal",
            "seed": 4,
            "dtype": "float64",
            "params": {"mean": 0.0, "std": 2.0, "low": 0.0, "high": 80.0},
        }
    )
    values = generate(spec)
    assert values.min() >= 0.0
    assert stats.kstest(values, stats.halfnorm(scale=2.0).cdf).pvalue > 1e-3
    assert compute_stats(spec)["expected"]["std"] == pytest.approx(stats.halfnorm(scale=2.0).std(), rel=1e-9)


def test_truncated_normal_reproduces_torch_trunc_normal_with_the_documented_arguments() -> None:
    # torch: trunc_normal_(w, std=0.02) cuts at the absolute ±2 (no effective cut): std 0.0200.
    torch_args = {"std": 0.02, "low": -2.0, "high": 2.0}
    spec = parse_spec({"shape": [50000], "scheme": "truncated_normal", "dtype": "float64", "params": torch_args})
    assert compute_stats(spec)["std"] == pytest.approx(0.02, rel=0.02)
    assert "low: lo, high: hi" in CATALOG["truncated_normal"].equivalents["torch"]  # type: ignore[operator]
    # Our defaults are keras/TF's: cut at mean ± 2·std, std 0.0176.
    keras_like = compute_stats(parse_spec({"shape": [50000], "scheme": "truncated_normal", "params": {"std": 0.02}}))
    assert keras_like["max"] <= 0.04 and keras_like["expected"]["std"] == pytest.approx(0.0175925, rel=1e-4)


# --- sparse per layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("layout", "axis"), [("torch", 0), ("keras", 1)])
def test_sparse_zeros_per_input_unit_follow_the_layout(layout: str, axis: int) -> None:
    shape = [12, 7]
    spec = parse_spec({"shape": shape, "scheme": "sparse", "params": {"sparsity": 0.3}, "layout": layout})
    values = generate(spec).reshape(shape)
    n_out = shape[axis]
    assert ((values == 0).sum(axis=axis) == math.ceil(0.3 * n_out)).all()
    assert "⌈sparsity·shape[1]⌉ per row" in CATALOG["sparse"].formula


# --- stats of zero-size tensors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "gain"),
    [
        ({"shape": [0, 4], "scheme": "kaiming_uniform", "params": {"nonlinearity": "relu"}}, math.sqrt(2)),
        ({"shape": [4, 0], "scheme": "xavier_normal", "params": {"gain": 0.5}}, 0.5),
        ({"shape": [0, 3], "scheme": "orthogonal", "params": {"gain": 2.0}}, 2.0),
        ({"shape": [0, 3], "scheme": "torch_default"}, 1 / math.sqrt(3)),
        ({"shape": [0], "scheme": "zeros"}, None),
    ],
)
def test_zero_size_stats_know_the_gain(body: dict[str, Any], gain: float | None) -> None:
    result = compute_stats(parse_spec(body))
    assert result["numel"] == 0
    assert result["gain"] == (pytest.approx(gain) if gain is not None else None)
    full = compute_stats(parse_spec({**body, "shape": [3, 3]}))
    assert full["gain"] == result["gain"]
