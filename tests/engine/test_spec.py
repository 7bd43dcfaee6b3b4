"""Spec validation names the field and the rule; the canonical form makes defaults invisible."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from initserve.engine import (
    ALGORITHM_VERSION,
    IMPLICIT_ALGORITHM,
    SUPPORTED_ALGORITHMS,
    SpecError,
    SpecTooLarge,
    check_size,
    format_loc,
    parse_bundle,
    parse_spec,
)

GOOD = {"shape": [4, 3], "scheme": "normal"}

# (spec, field that must be named, words the message must contain)
INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"scheme": "normal"}, "shape", "required"),
    ({"shape": "4x3", "scheme": "normal"}, "shape", "array of integers"),
    ({"shape": [4, -3], "scheme": "normal"}, "shape[1]", "must be ≥ 0, got -3"),
    ({"shape": [4, 2.5], "scheme": "normal"}, "shape[1]", "must be an integer"),
    ({"shape": [4, True], "scheme": "normal"}, "shape[1]", "must be an integer, got a boolean"),
    # What was sent, in JSON's words, never a Python type name (list, dict, int).
    ({"shape": [4], "scheme": "normal", "params": {"std": [1]}}, "params.std", "got an array"),
    ({"shape": [4], "scheme": "normal", "params": {"std": {"a": 1}}}, "params.std", "got an object"),
    ({"shape": [4], "scheme": 5}, "scheme", "got a number"),
    ({"shape": [1] * 9, "scheme": "normal"}, "shape", "at most 8 dimensions"),
    ({"shape": [2**63, 1], "scheme": "normal"}, "shape[0]", "≤ 2^63-1"),
    ({"shape": [4, 3]}, "scheme", "required"),
    ({"shape": [4, 3], "scheme": "gaussian"}, "scheme", "unknown scheme 'gaussian'"),
    ({**GOOD, "params": {"stdev": 1}}, "params.stdev", "unknown parameter 'stdev' for scheme 'normal'"),
    ({**GOOD, "params": {"std": "1"}}, "params.std", "must be a number"),
    ({**GOOD, "params": {"std": True}}, "params.std", "must be a number, got a boolean"),
    ({**GOOD, "params": {"std": 0}}, "params.std", "must be > 0"),
    ({**GOOD, "params": {"std": -1.0}}, "params.std", "must be > 0"),
    ({**GOOD, "params": {"mean": float("nan")}}, "params.mean", "must be finite"),
    ({**GOOD, "params": {"mean": float("inf")}}, "params.mean", "must be finite"),
    ({**GOOD, "params": [1, 2]}, "params", "JSON object"),
    ({"shape": [4, 3], "scheme": "sparse"}, "params.sparsity", "params.sparsity is required for scheme 'sparse'"),
    ({"shape": [4, 3], "scheme": "sparse", "params": {"sparsity": 1.5}}, "params.sparsity", "must be ≤ 1"),
    ({"shape": [4, 3], "scheme": "kaiming_uniform", "params": {"mode": "fan_avg"}}, "params.mode", "must be one of"),
    (
        {"shape": [4, 3], "scheme": "kaiming_uniform", "params": {"nonlinearity": "gelu"}},
        "params.nonlinearity",
        "must be one of",
    ),
    (
        {"shape": [4, 3], "scheme": "variance_scaling", "params": {"distribution": "cauchy"}},
        "params.distribution",
        "must be one of",
    ),
    ({"shape": [4, 3], "scheme": "dirac"}, "shape", "3 to 5 dimensions"),
    ({"shape": [4, 3, 3], "scheme": "eye"}, "shape", "exactly 2 dimensions"),
    ({"shape": [4], "scheme": "xavier_uniform"}, "shape", "at least 2 dimensions"),
    ({"shape": [4], "scheme": "orthogonal"}, "shape", "at least 2 dimensions"),
    ({"shape": [4, 3, 3], "scheme": "sparse", "params": {"sparsity": 0.1}}, "shape", "exactly 2 dimensions"),
    ({"shape": [6, 2, 3], "scheme": "dirac", "params": {"groups": 4}}, "params.groups", "divisible by groups"),
    ({"shape": [6, 2, 3], "scheme": "dirac", "params": {"groups": 0}}, "params.groups", "must be ≥ 1"),
    ({"shape": [6, 2, 3], "scheme": "dirac", "params": {"groups": 1.5}}, "params.groups", "must be an integer"),
    ({**GOOD, "seed": -1}, "seed", "0..2^64-1"),
    ({**GOOD, "seed": 2**64}, "seed", "0..2^64-1"),
    ({**GOOD, "seed": 1.0}, "seed", "must be an integer"),
    ({**GOOD, "seed": True}, "seed", "must be an integer, got a boolean"),
    ({**GOOD, "dtype": "int8"}, "dtype", "must be one of float32, float64, float16, bfloat16"),
    ({**GOOD, "layout": "jax"}, "layout", "must be one of torch, keras"),
    ({**GOOD, "name": ""}, "name", "must not be empty"),
    ({**GOOD, "name": "x" * 257}, "name", "at most 256 characters, got 257"),
    ({**GOOD, "name": "__metadata__"}, "name", "__metadata__"),
    ({**GOOD, "name": "a\nb"}, "name", "control characters, line separators or lone surrogates; got U+000A"),
    ({**GOOD, "name": "a\u2028b"}, "name", "got U+2028 at position 1"),
    ({**GOOD, "name": "a\ud800"}, "name", "got U+D800 at position 1"),
    ({**GOOD, "slice": [[0, 5]]}, "slice[0]", "0 ≤ start ≤ stop ≤ shape[0] = 4, got [0, 5]"),
    ({**GOOD, "slice": [[3, 2]]}, "slice[0]", "0 ≤ start ≤ stop"),
    ({**GOOD, "slice": [[0, 1], [0, 1], [0, 1]]}, "slice", "3 pairs but shape has 2"),
    ({**GOOD, "slice": [[0]]}, "slice[0]", "pair of integers"),
    ({**GOOD, "extra": 1}, "extra", "unknown field 'extra'"),
    # The magnitude rule names the param that makes the values (its value first), not the dtype.
    (
        {**GOOD, "params": {"std": 1e300}, "dtype": "float32"},
        "params.std",
        "1e+300 makes values of magnitude 8.3e+300, which rounds to infinity in float32",
    ),
    (
        {"shape": [2], "scheme": "constant", "params": {"value": 70000.0}, "dtype": "float16"},
        "params.value",
        "70000.0 makes values of magnitude 70000, which rounds to infinity in float16",
    ),
    ({"shape": [4, 3], "scheme": "uniform", "params": {"low": 2.0, "high": 1.0}}, "params.high", "≥ params.low"),
    (
        {"shape": [4, 3], "scheme": "truncated_normal", "params": {"low": 1.0, "high": 1.0}},
        "params.high",
        "> params.low",
    ),
    ({"shape": [4, 3], "scheme": "truncated_normal", "params": {"low": 100.0, "high": 101.0}}, "params", "probability"),
    ({"shape": [4096, 16384], "scheme": "orthogonal"}, "shape", "at most 33554432 elements"),
]


@pytest.mark.parametrize(("body", "field", "words"), INVALID, ids=[f"{i}-{c[1]}" for i, c in enumerate(INVALID)])
def test_invalid_spec_names_the_field_and_the_rule(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(body)
    fields = [format_loc(error.loc) for error in raised.value.errors]
    assert field in fields, (fields, str(raised.value))
    message = next(error.msg for error in raised.value.errors if format_loc(error.loc) == field)
    assert words in message


def test_every_broken_rule_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({"shape": [-1], "scheme": "normal", "seed": -5, "dtype": "int8"})
    assert {format_loc(error.loc) for error in raised.value.errors} == {"shape[0]", "seed", "dtype"}


def test_spelling_out_defaults_gives_the_same_canonical_spec() -> None:
    short = parse_spec({"shape": [8, 4], "scheme": "kaiming_uniform"})
    long = parse_spec(
        {
            "shape": [8, 4],
            "scheme": "kaiming_uniform",
            "seed": 0,
            "dtype": "float32",
            "layout": "torch",
            "name": "weight",
            "slice": [[0, 8], [0, 4]],
            "params": {"a": 0, "mode": "fan_in", "nonlinearity": "leaky_relu", "fan_in": 4, "fan_out": 8},
        }
    )
    assert short == long
    assert short.canonical_json() == long.canonical_json()
    assert short.digest() == long.digest()


def test_computed_defaults_are_filled_in() -> None:
    spec = parse_spec({"shape": [3], "scheme": "truncated_normal", "params": {"mean": 1.0, "std": 0.5}})
    assert dict(spec.params) == {"mean": 1.0, "std": 0.5, "low": 0.0, "high": 2.0}
    assert parse_spec({**spec.canonical()}) == spec


def test_aliases_and_integer_floats_normalise() -> None:
    alias = parse_spec(
        {"shape": [4, 4], "scheme": "variance_scaling", "params": {"distribution": "untruncated_normal"}}
    )
    plain = parse_spec({"shape": [4, 4], "scheme": "variance_scaling", "params": {"distribution": "normal"}})
    assert alias == plain
    assert parse_spec({**GOOD, "params": {"std": 2}}) == parse_spec({**GOOD, "params": {"std": 2.0}})


def test_canonical_json_is_sorted_compact_and_round_trips() -> None:
    body = {"shape": [2, 3], "scheme": "uniform", "seed": 2**64 - 1, "params": {"high": 0.25}}
    spec = parse_spec(body)
    text = spec.canonical_json()
    assert text == (
        '{"algorithm":2,"dtype":"float32","layout":"torch","name":"weight","params":{"high":0.25,"low":0.0},'
        '"scheme":"uniform","seed":18446744073709551615,"shape":[2,3]}'
    )
    assert parse_spec(spec.canonical()) == spec
    # Algorithm 1's canonical form is the one made before versions existed: no "algorithm" key, so
    # its tokens, ETags and metadata are unchanged; read back as a canonical form it means 1.
    first = parse_spec({**body, "algorithm": 1})
    assert first.canonical_json() == (
        '{"dtype":"float32","layout":"torch","name":"weight","params":{"high":0.25,"low":0.0},'
        '"scheme":"uniform","seed":18446744073709551615,"shape":[2,3]}'
    )
    assert parse_spec(first.canonical(), default_algorithm=IMPLICIT_ALGORITHM) == first
    assert first.digest() == hashlib.sha256(f"initserve-algorithm-1\n{first.canonical_json()}".encode()).hexdigest()
    assert spec.digest() == hashlib.sha256(f"initserve-algorithm-2\n{text}".encode()).hexdigest()


def test_algorithm_is_validated_and_selectable() -> None:
    body = {"shape": [3, 3], "scheme": "normal"}
    assert parse_spec(body).algorithm == ALGORITHM_VERSION == max(SUPPORTED_ALGORITHMS)
    for bad, shown in ((3, "3"), (0, "0"), (True, "a boolean"), ("2", "a string"), (2.0, "a number")):
        with pytest.raises(SpecError) as info:
            parse_spec({**body, "algorithm": bad})
        assert info.value.errors[0].loc == ("algorithm",)
        assert f"algorithm must be one of 1, 2; got {shown}" in info.value.errors[0].msg
    for version in SUPPORTED_ALGORITHMS:
        assert parse_spec({**body, "algorithm": version}).algorithm == version


def test_bundle_algorithm_is_the_bundle_s_and_written_once() -> None:
    tensors = {"a": {"shape": [2, 2], "scheme": "normal"}, "b": {"shape": [4, 4], "scheme": "orthogonal"}}
    default = parse_bundle({"tensors": tensors})
    assert default.algorithm == ALGORITHM_VERSION
    assert all(spec.algorithm == ALGORITHM_VERSION for spec in default.tensors)
    assert default.canonical()["algorithm"] == ALGORITHM_VERSION
    assert all("algorithm" not in body for body in default.canonical()["tensors"].values())
    first = parse_bundle({"tensors": tensors, "algorithm": 1})
    assert "algorithm" not in first.canonical()
    assert all(spec.algorithm == 1 for spec in first.tensors)
    assert parse_bundle(first.canonical(), default_algorithm=IMPLICIT_ALGORITHM) == first
    with pytest.raises(SpecError) as info:
        parse_bundle({"tensors": {"a": {"shape": [2], "scheme": "normal", "algorithm": 1}}})
    assert info.value.errors[0].loc == ("tensors", "a", "algorithm")


def test_digest_depends_on_every_identity_field() -> None:
    base = parse_spec({"shape": [4, 4], "scheme": "normal"})
    variants = [
        {"seed": 1},
        {"name": "bias"},
        {"dtype": "float64"},
        {"layout": "keras"},
        {"shape": [4, 5]},
        {"scheme": "uniform"},
        {"params": {"std": 2.0}},
        {"slice": [[0, 2]]},
    ]
    digests = {parse_spec({"shape": [4, 4], "scheme": "normal", **variant}).digest() for variant in variants}
    assert base.digest() not in digests and len(digests) == len(variants)


def test_full_slices_are_dropped_and_result_shape_follows_the_slice() -> None:
    spec = parse_spec({"shape": [10, 6, 2], "scheme": "normal", "slice": [[2, 5], [0, 6]]})
    assert spec.slice == ((2, 5),)
    assert spec.result_shape == (3, 6, 2) and spec.numel == 36 and spec.nbytes == 144


def test_zero_element_shapes_give_empty_tensors() -> None:
    for scheme in ("normal", "xavier_uniform", "kaiming_normal", "orthogonal", "he_normal"):
        spec = parse_spec({"shape": [0, 5], "scheme": scheme})
        assert spec.numel == 0
    assert parse_spec({"shape": [], "scheme": "ones"}).numel == 1


def test_size_check_is_pure_integer_arithmetic_and_fast() -> None:
    spec = parse_spec({"shape": [2**31, 2**31], "scheme": "normal"})
    started = time.perf_counter()
    with pytest.raises(SpecTooLarge) as raised:
        check_size(spec, 8 << 30)
    assert time.perf_counter() - started < 0.25  # no element loop or allocation: 2^62 of either takes years
    assert raised.value.nbytes == 2**62 * 4 and raised.value.limit == 8 << 30
    check_size(parse_spec({"shape": [1024, 1024], "scheme": "normal"}), 4 << 20)


def test_shapes_beyond_the_counter_space_are_too_large_not_invalid() -> None:
    started = time.perf_counter()
    with pytest.raises(SpecTooLarge):
        parse_spec({"shape": [2**40, 2**40], "scheme": "normal"})
    assert time.perf_counter() - started < 0.25  # as above: a scheduler hiccup fits, a loop over 2^80 does not


def test_a_bundle_tensor_beyond_the_counter_space_is_too_large_not_invalid() -> None:
    tensors = {"a": {"shape": [4], "scheme": "zeros"}, "b": {"shape": [2**40, 2**40], "scheme": "normal"}}
    with pytest.raises(SpecTooLarge) as raised:
        parse_bundle({"tensors": tensors})
    assert [error.loc for error in raised.value.errors] == [("tensors", "b", "shape")]
    # A malformed tensor beside it is still named first: the request is invalid before it is too large.
    with pytest.raises(SpecError) as invalid:
        parse_bundle({"tensors": {**tensors, "c": {"shape": [-1], "scheme": "zeros"}}})
    assert not isinstance(invalid.value, SpecTooLarge)
    assert [error.loc for error in invalid.value.errors] == [("tensors", "c", "shape", 0)]


def test_explicit_fans_allow_one_dimensional_biases() -> None:
    bias = parse_spec({"shape": [16], "scheme": "torch_default", "params": {"fan_in": 64}})
    moments = bias.built.sampler.moments()
    assert (moments.low, moments.high) == (-1 / 8, 1 / 8)
    with pytest.raises(SpecError, match=r"params\.fan_in"):
        parse_spec({"shape": [16], "scheme": "torch_default"})


def test_bundle_tensors_share_the_seed_and_are_named() -> None:
    bundle = parse_bundle(
        {
            "seed": 7,
            "dtype": "float16",
            "tensors": {
                "fc.weight": {"shape": [4, 8], "scheme": "kaiming_uniform"},
                "fc.bias": {"shape": [4], "scheme": "torch_default", "params": {"fan_in": 8}, "dtype": "float32"},
            },
        }
    )
    assert [spec.name for spec in bundle.tensors] == ["fc.bias", "fc.weight"]
    weight = next(spec for spec in bundle.tensors if spec.name == "fc.weight")
    assert weight == parse_spec(
        {"shape": [4, 8], "scheme": "kaiming_uniform", "seed": 7, "name": "fc.weight", "dtype": "float16"}
    )
    assert bundle.canonical()["tensors"]["fc.bias"]["dtype"] == "float32"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tensors": {}}, "tensors"),
        ({"tensors": {"w": {"shape": [-1], "scheme": "normal"}}}, "tensors.w.shape[0]"),
        ({"tensors": {"w": {"shape": [2], "scheme": "normal", "seed": 3}}}, "tensors.w.seed"),
        ({"tensors": {"bad\tname": {"shape": [2], "scheme": "normal"}}}, "tensors.bad\tname"),
        ({"seed": "x", "tensors": {"w": {"shape": [2], "scheme": "normal"}}}, "seed"),
        ({"tensors": {"w": {"shape": [2], "scheme": "normal"}}, "extra": 1}, "extra"),
    ],
)
def test_invalid_bundles_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_bundle(body)
    assert field in [format_loc(error.loc) for error in raised.value.errors]


def test_bundle_tensor_count_limit() -> None:
    tensors = {f"t{i}": {"shape": [1], "scheme": "zeros"} for i in range(5)}
    with pytest.raises(SpecError, match="at most 4 tensors"):
        parse_bundle({"tensors": tensors}, max_tensors=4)
