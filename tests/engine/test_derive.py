"""Derive: digests as documented, each action's formula against an independent computation, validation
that names the field, and bitwise results (golden hex, SIMD-restricted subprocess)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from initserve.engine import generate, parse_spec
from initserve.engine.checkpoint import (
    checkpoint_digest,
    parse_record_prefix,
    parse_upload_header,
    record_prefix,
    tensor_digest,
)
from initserve.engine.derive import ManifestTensor, plan_derive
from initserve.engine.derive_rules import parse_derive
from initserve.engine.dtypes import DTYPES, cast_into
from initserve.engine.errors import SpecError, SpecTooLarge

CKPT = "c" * 64
GOLDEN_ARANGE_DIGEST = "4ac3b7819a8e6681ae218f73726dfc02ffb8973b07f5773a678611a359bc9040"
OTHER = "d" * 64


# --- digests -------------------------------------------------------------------------------------------
def test_tensor_digest_is_sha256_of_the_documented_record() -> None:
    data = np.arange(6, dtype="<f4").tobytes()
    expected = hashlib.sha256(b"initserve-tensor/1 F32 2,3\n" + data).hexdigest()
    assert tensor_digest("F32", (2, 3), data) == expected
    assert record_prefix("I64", ()) == b"initserve-tensor/1 I64 \n"
    assert parse_record_prefix(record_prefix("BF16", (4, 5)) + b"xx") == (
        "BF16",
        (4, 5),
        len(record_prefix("BF16", (4, 5))),
    )
    assert expected == GOLDEN_ARANGE_DIGEST


def test_checkpoint_digest_is_sha256_of_the_sorted_name_map() -> None:
    tensors = {"b": "1" * 64, "a": "2" * 64}
    text = '{"a":"' + "2" * 64 + '","b":"' + "1" * 64 + '"}'
    assert checkpoint_digest(tensors) == hashlib.sha256(b"initserve-checkpoint/1\n" + text.encode()).hexdigest()


def test_upload_header_validation_names_the_tensor_and_the_rule() -> None:
    good = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    assert parse_upload_header(len(good), good).total_length == 8 + len(good) + 8
    cases = {
        "dtype": {"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}},
        "needs 8": {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
        "without gaps": {"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        "control": {"w\x07": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
        "__metadata__": {"__metadata__": {"a": 1}},
    }
    for needle, header in cases.items():
        text = json.dumps(header).encode()
        with pytest.raises(SpecError, match=needle):
            parse_upload_header(len(text), text)


# --- a synthetic checkpoint ------------------------------------------------------------------------------
RNG = np.random.default_rng(20260101)
SOURCE: dict[str, np.ndarray[Any, Any]] = {
    "emb.weight": RNG.standard_normal((50, 8)).astype(np.float32),
    "conv.weight": (RNG.standard_normal((6, 3, 3, 3)) * np.logspace(-3, 3, 162).reshape(6, 3, 3, 3)).astype(np.float32),
    "fc.weight": RNG.standard_normal((4, 8)).astype(np.float32),
    "fc.bias": RNG.standard_normal(4).astype(np.float32),
    "steps": np.array(7, dtype=np.int64),
}
SOURCE_B = {name: (value * 2 + 1).astype(value.dtype) for name, value in SOURCE.items()}
_CODES = {"float32": "F32", "int64": "I64", "float64": "F64", "float16": "F16"}


def _store(*checkpoints: tuple[str, dict[str, np.ndarray[Any, Any]]]) -> tuple[dict[str, Any], dict[str, bytes]]:
    manifests: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    for digest, tensors in checkpoints:
        manifest = {}
        for name, value in tensors.items():
            code = _CODES[value.dtype.name]
            tensor = tensor_digest(code, value.shape, value.tobytes())
            blobs[tensor] = value.tobytes()
            manifest[name] = ManifestTensor(code, tuple(value.shape), tensor)
        manifests[digest] = manifest
    return manifests, blobs


MANIFESTS, BLOBS = _store((CKPT, SOURCE), (OTHER, SOURCE_B))


def derive(tensors: dict[str, Any], rules: list[dict[str, Any]], seed: int = 5) -> dict[str, np.ndarray[Any, Any]]:
    from safetensors.numpy import load

    request = parse_derive({"source": CKPT, "target": {"seed": seed, "tensors": tensors}, "rules": rules})
    return dict(load(plan_derive(request, MANIFESTS).to_bytes(BLOBS.__getitem__)))


def served(shape: list[int], scheme: str, name: str, seed: int = 5, **extra: Any) -> np.ndarray[Any, Any]:
    """What /v1/init serves for (seed, name) — the definition reinit/pad/noise must meet."""
    return generate(parse_spec({"shape": shape, "scheme": scheme, "name": name, "seed": seed, **extra}))


# --- actions -------------------------------------------------------------------------------------------
def test_unmatched_tensors_are_copied_byte_for_byte_including_integers() -> None:
    out = derive({"fc.weight": {"shape": [4, 8]}, "steps": {"shape": [], "dtype": "int64"}}, [])
    assert out["fc.weight"].tobytes() == SOURCE["fc.weight"].tobytes()
    assert out["steps"].tobytes() == SOURCE["steps"].tobytes()


def test_copy_to_another_float_dtype_rounds_once_to_nearest_even() -> None:
    out = derive({"fc.weight": {"shape": [4, 8], "dtype": "float16"}}, [{"match": "*", "action": "copy"}])
    assert out["fc.weight"].tobytes() == SOURCE["fc.weight"].astype(np.float16).tobytes()


def test_slice_takes_the_leading_part_or_the_given_ranges() -> None:
    out = derive(
        {"fc.weight": {"shape": [2, 8]}, "emb.weight": {"shape": [3, 8]}},
        [{"match": "fc.*", "action": "slice"}, {"match": "emb.*", "action": "slice", "slice": [[10, 13]]}],
    )
    assert out["fc.weight"].tobytes() == SOURCE["fc.weight"][:2].tobytes()
    assert out["emb.weight"].tobytes() == SOURCE["emb.weight"][10:13].tobytes()


def test_pad_keeps_the_source_and_fills_the_rest_from_the_served_tensor() -> None:
    out = derive(
        {"fc.weight": {"shape": [7, 10]}},
        [{"match": "fc.weight", "action": "pad", "scheme": "normal", "params": {"std": 0.02}}],
    )
    fresh = served([7, 10], "normal", "fc.weight", params={"std": 0.02})
    expected = fresh.copy()
    expected[:4, :8] = SOURCE["fc.weight"]
    assert out["fc.weight"].tobytes() == expected.tobytes()


def test_reinit_is_exactly_the_tensor_served_for_seed_and_name() -> None:
    rules = [
        {"match": "fc.weight", "action": "reinit", "scheme": "kaiming_uniform", "params": {"a": math.sqrt(5)}},
        {"match": "fc.bias", "action": "reinit", "scheme": "uniform", "params": {"low": -0.3, "high": 0.3}},
    ]
    out = derive({"fc.weight": {"shape": [9, 8]}, "fc.bias": {"shape": [9], "dtype": "float16"}}, rules, seed=11)
    weight = served([9, 8], "kaiming_uniform", "fc.weight", 11, params={"a": math.sqrt(5)})
    bias = served([9], "uniform", "fc.bias", 11, params={"low": -0.3, "high": 0.3}, dtype="float16")
    assert out["fc.weight"].tobytes() == weight.tobytes()
    assert out["fc.bias"].tobytes() == bias.tobytes()


def _documented_row_sum(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """docs/pretrained.md's order, written from the text with Python floats: blocks of 1024 rows, each
    summed by the pairwise tree (row i + row i + ⌊n/2⌋, an odd last row carried), block sums left to right."""
    columns = []
    for column in rows.astype(np.float64).T.tolist():
        total = 0.0
        for first in range(0, len(column), 1024):
            level = column[first : first + 1024]
            while len(level) > 1:
                half = len(level) // 2
                level = [level[i] + level[i + half] for i in range(half)] + level[2 * half :]
            total = total + level[0]
        columns.append(total)
    return np.array(columns)


# 2500 rows: three blocks, odd sizes at several tree levels; float64 targets keep every bit of the sums.
LONG = (RNG.standard_normal((2500, 3)) * np.exp(RNG.standard_normal((2500, 1)) * 4)).astype(np.float32)


def _derive_long(rules: list[dict[str, Any]], rows: int) -> np.ndarray[Any, Any]:
    from safetensors.numpy import load

    manifests, blobs = _store((CKPT, {"long": LONG}))
    request = parse_derive(
        {
            "source": CKPT,
            "target": {"seed": 5, "tensors": {"long": {"shape": [rows, 3], "dtype": "float64"}}},
            "rules": rules,
        }
    )
    return load(plan_derive(request, manifests).to_bytes(blobs.__getitem__))["long"]


def test_mean_rows_without_noise_appends_the_fixed_order_mean() -> None:
    out = _derive_long([{"match": "*", "action": "mean_rows"}], 2503)
    mean = _documented_row_sum(LONG) / 2500.0
    assert out[:2500].tobytes() == LONG.astype(np.float64).tobytes()
    assert out[2500:].tobytes() == np.tile(mean, (3, 1)).tobytes()
    # The order matters at float64 precision: a left-to-right sum differs, so the test tells them apart.
    assert not np.array_equal(np.cumsum(LONG.astype(np.float64), axis=0)[-1] / 2500.0, mean)


def test_mean_rows_noise_is_scaled_by_the_column_std_with_z_from_the_tensor_key() -> None:
    noise = 0.25
    out = _derive_long([{"match": "*", "action": "mean_rows", "noise": noise}], 2504)
    source = LONG.astype(np.float64)
    mean = _documented_row_sum(source) / 2500.0
    sigma = np.sqrt(_documented_row_sum((source - mean) * (source - mean)) / 2500.0)
    z = served([2504, 3], "normal", "long", dtype="float64", slice=[[2500, 2504]])
    assert out[2500:].tobytes() == (mean + (noise * sigma) * z).tobytes()


def test_mean_rows_keeps_a_float32_source_bit_for_bit() -> None:
    out = derive({"emb.weight": {"shape": [53, 8]}}, [{"match": "emb.*", "action": "mean_rows"}])
    assert out["emb.weight"][:50].tobytes() == SOURCE["emb.weight"].tobytes()
    mean = _documented_row_sum(SOURCE["emb.weight"]) / 50.0
    assert out["emb.weight"][50:].tobytes() == np.tile(mean.astype(np.float32), (3, 1)).tobytes()


def _timm_adapt_input_conv(in_chans: int, weight: Any, base_chans: int = 3) -> Any:
    """timm's adapt_input_conv (timm/models/_manipulate.py) re-expressed in torch for this test: timm
    itself cannot be imported beside the pinned torch (it needs torchvision)."""
    out_ch, channels, kh, kw = weight.shape
    if in_chans == base_chans:
        return weight
    kind = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        if channels > base_chans:
            weight = weight.reshape(out_ch, channels // base_chans, base_chans, kh, kw).sum(dim=2, keepdim=False)
        else:
            weight = weight.sum(dim=1, keepdim=True)
    else:
        if channels != base_chans:
            raise NotImplementedError
        weight = weight.repeat(1, math.ceil(in_chans / base_chans), 1, 1)[:, :in_chans, :, :]
        weight *= base_chans / float(in_chans)
    return weight.to(kind)


def _timm_reference() -> Any:
    try:  # the real function when timm imports (it needs torchvision)
        from timm.models._manipulate import adapt_input_conv

        return adapt_input_conv
    except Exception:
        return _timm_adapt_input_conv


@pytest.mark.parametrize("channels", [1, 2, 4, 13])
def test_channel_adapt_reproduces_timm_adapt_input_conv_bit_for_bit(channels: int) -> None:
    torch = pytest.importorskip("torch")
    reference = _timm_reference()
    out = derive({"conv.weight": {"shape": [6, channels, 3, 3]}}, [{"match": "conv.*", "action": "channel_adapt"}])
    expected = reference(channels, torch.from_numpy(SOURCE["conv.weight"].copy())).numpy()
    assert out["conv.weight"].tobytes() == expected.tobytes()


def test_channel_adapt_generalises_to_any_source_channel_count() -> None:
    wide = RNG.standard_normal((4, 5, 3, 3)).astype(np.float32)
    manifests, blobs = _store((CKPT, {"stem": wide}))
    request = parse_derive(
        {
            "source": CKPT,
            "target": {"tensors": {"stem": {"shape": [4, 12, 3, 3]}, "mono": {"shape": [4, 1, 3, 3]}}},
            "rules": [
                {"match": "stem", "action": "channel_adapt"},
                {"match": "mono", "action": "channel_adapt", "from": "stem"},
            ],
        }
    )
    from safetensors.numpy import load

    out = load(plan_derive(request, manifests).to_bytes(blobs.__getitem__))
    tiled = np.concatenate([wide, wide, wide[:, :2]], axis=1)
    assert out["stem"].tobytes() == (tiled * np.float32(5 / 12)).tobytes()
    acc = wide[:, 0:1].copy()
    for c in range(1, 5):
        acc = acc + wide[:, c : c + 1]
    assert out["mono"].tobytes() == acc.tobytes()


def test_shrink_perturb_is_lambda_theta_plus_sigma_epsilon() -> None:
    out = derive(
        {"fc.weight": {"shape": [4, 8]}}, [{"match": "*", "action": "shrink_perturb", "shrink": 0.4, "noise": 0.01}]
    )
    epsilon = served([4, 8], "normal", "fc.weight", dtype="float64")
    expected = (SOURCE["fc.weight"].astype(np.float64) * 0.4 + epsilon * 0.01).astype(np.float32)
    assert out["fc.weight"].tobytes() == expected.tobytes()


def test_soup_is_the_weighted_average_in_listed_order() -> None:
    out = derive(
        {"fc.weight": {"shape": [4, 8]}},
        [{"match": "*", "action": "soup", "checkpoints": [CKPT, OTHER], "weights": [1, 3]}],
    )
    a, b = SOURCE["fc.weight"].astype(np.float64), SOURCE_B["fc.weight"].astype(np.float64)
    assert out["fc.weight"].tobytes() == (a * 0.25 + b * 0.75).astype(np.float32).tobytes()


def test_bfloat16_targets_use_the_engine_rounding() -> None:
    request = parse_derive(
        {"source": CKPT, "target": {"tensors": {"fc.weight": {"shape": [4, 8], "dtype": "bfloat16"}}}, "rules": []}
    )
    file = plan_derive(request, MANIFESTS)
    data = file.to_bytes(BLOBS.__getitem__)[file.data_start :]
    expected = np.empty((4, 8), dtype=np.uint16)
    cast_into(SOURCE["fc.weight"].astype(np.float64), expected, DTYPES["bfloat16"])
    assert data == expected.tobytes()


def test_a_derived_file_is_laid_out_by_itemsize_then_name_and_its_ranges_equal_the_whole() -> None:
    """Ranges that start and stop inside, at the edges of and across tensors of four itemsizes."""
    from safetensors.numpy import load

    tensors = {
        "emb.weight": {"shape": [50, 8]},
        "steps": {"shape": [], "dtype": "int64"},
        "fc.bias": {"shape": [4], "dtype": "float16"},
        "fc.weight": {"shape": [4, 8], "dtype": "float64"},
    }
    file = plan_derive(parse_derive({"source": CKPT, "target": {"tensors": tensors}, "rules": []}), MANIFESTS)
    assert [entry.item.target.name for entry in file.entries] == ["fc.weight", "steps", "emb.weight", "fc.bias"]
    whole = file.to_bytes(BLOBS.__getitem__)
    assert len(whole) == file.total_length and set(load(whole)) == set(tensors)
    edges = {0, file.data_start, len(whole)} | {file.data_start + e.begin for e in file.entries}
    cuts = sorted({min(max(edge + d, 0), len(whole)) for edge in edges for d in (-3, -1, 0, 1, 5)})
    rng = np.random.default_rng(11)
    pairs = [(a, b) for a in cuts for b in cuts if a <= b]
    pairs += [tuple(sorted(int(x) for x in rng.integers(0, len(whole) + 1, 2))) for _ in range(40)]
    for start, stop in pairs:
        part = b"".join(bytes(view) for view in file.iter_bytes_with(BLOBS.__getitem__, start, stop))
        assert part == whole[start:stop], (start, stop)


# --- validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tensors", "rules", "loc"),
    [
        ({"nope": {"shape": [2]}}, [], ("target", "tensors", "nope")),
        ({"fc.weight": {"shape": [5, 8]}}, [], ("target", "tensors", "fc.weight", "shape")),
        ({"fc.weight": {"shape": [4, 8]}}, [{"match": "*", "action": "melt"}], ("rules", 0, "action")),
        ({"fc.weight": {"shape": [4, 8]}}, [{"match": "*", "action": "reinit"}], ("rules", 0, "scheme")),
        (
            {"fc.weight": {"shape": [4, 8]}},
            [{"match": "*", "action": "reinit", "scheme": "normal", "params": {"sd": 1}}],
            ("rules", 0, "params", "sd"),
        ),
        (
            {"emb.weight": {"shape": [40, 8]}},
            [{"match": "*", "action": "mean_rows"}],
            ("target", "tensors", "emb.weight", "shape"),
        ),
        (
            {"conv.weight": {"shape": [6, 4, 3, 3]}},
            [{"match": "*", "action": "channel_adapt", "base_chans": 2}],
            ("rules", 0, "base_chans"),
        ),
        ({"steps": {"shape": [], "dtype": "float32"}}, [], ("target", "tensors", "steps", "dtype")),
        (
            {"fc.weight": {"shape": [4, 8]}},
            [{"match": "*", "action": "soup", "checkpoints": [CKPT], "weights": [1, 2]}],
            ("rules", 0, "weights"),
        ),
    ],
)
def test_invalid_requests_name_the_field(
    tensors: dict[str, Any], rules: list[dict[str, Any]], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(SpecError) as info:
        request = parse_derive({"source": CKPT, "target": {"tensors": tensors}, "rules": rules})
        plan_derive(request, MANIFESTS)
    assert any(tuple(error.loc[: len(loc)]) == loc for error in info.value.errors), info.value.errors


def test_the_size_limit_is_checked_before_computing() -> None:
    request = parse_derive(
        {
            "source": CKPT,
            "target": {"tensors": {"big": {"shape": [1 << 20, 1 << 20]}}},
            "rules": [{"match": "*", "action": "reinit", "scheme": "zeros"}],
        }
    )
    with pytest.raises(SpecTooLarge):
        plan_derive(request, MANIFESTS, max_bytes=1 << 30)


@pytest.mark.parametrize("shape", [[1 << 40, 1 << 40], [1 << 62, 1 << 62]])
def test_a_generated_tensor_beyond_every_limit_is_too_large_not_invalid(shape: list[int]) -> None:
    # Past the engine's own 16 EiB bound parse_spec raises SpecTooLarge; the plan must keep it a size
    # problem (413 at the route) and name the target's shape, as a tensor just above max_bytes does.
    request = parse_derive(
        {
            "source": CKPT,
            "target": {"tensors": {"big": {"shape": shape}}},
            "rules": [{"match": "*", "action": "reinit", "scheme": "zeros"}],
        }
    )
    with pytest.raises(SpecTooLarge) as info:
        plan_derive(request, MANIFESTS, max_bytes=1 << 30)
    assert info.value.errors[0].loc == ("target", "tensors", "big", "shape")
    assert info.value.limit == 1 << 30


# --- determinism ---------------------------------------------------------------------------------------
ALL_ACTIONS = {
    "tensors": {
        "emb.weight": {"shape": [60, 8]},
        "conv.weight": {"shape": [6, 13, 3, 3]},
        "conv1.weight": {"shape": [6, 1, 3, 3], "dtype": "bfloat16"},
        "fc.weight": {"shape": [6, 8]},
        "fc.bias": {"shape": [4], "dtype": "float16"},
        "head.weight": {"shape": [3, 8]},
        "steps": {"shape": [], "dtype": "int64"},
    },
    "rules": [
        {"match": "emb.*", "action": "mean_rows", "noise": 0.1},
        {"match": "conv1.weight", "action": "channel_adapt", "from": "conv.weight"},
        {"match": "conv.*", "action": "channel_adapt"},
        {"match": "fc.weight", "action": "pad", "scheme": "xavier_uniform"},
        {"match": "fc.bias", "action": "shrink_perturb", "shrink": 0.5, "noise": 0.001},
        {"match": "head.*", "action": "reinit", "scheme": "truncated_normal", "params": {"std": 0.02}},
    ],
}
# Golden vector (hex): the sha256 of that derived file. Never changes; a byte change needs a new version.
GOLDEN_ALL_ACTIONS = "db703d73b0c4cbde66e6c8e5e43315a11d0abe8a71be360cc5302b7717fb5fb1"


def _all_actions_digest() -> str:
    request = parse_derive(
        {"source": CKPT, "target": {"seed": 42, "tensors": ALL_ACTIONS["tensors"]}, "rules": ALL_ACTIONS["rules"]}
    )
    return hashlib.sha256(plan_derive(request, MANIFESTS).to_bytes(BLOBS.__getitem__)).hexdigest()


def test_derived_file_matches_its_golden_digest() -> None:
    assert _all_actions_digest() == GOLDEN_ALL_ACTIONS


# Golden vector (hex) of the float64 mean rows of LONG: pins the summation order bit for bit.
GOLDEN_MEAN_ROWS_F64 = "d40984cac2a0af3b330075a8492c817931391c48370c97682b39295071586fc7"


def test_mean_rows_float64_golden() -> None:
    out = _derive_long([{"match": "*", "action": "mean_rows", "noise": 0.5}], 2510)
    assert hashlib.sha256(out.tobytes()).hexdigest() == GOLDEN_MEAN_ROWS_F64


def test_derived_bytes_are_the_same_with_simd_dispatch_restricted() -> None:
    from numpy._core._multiarray_umath import __cpu_dispatch__  # type: ignore[attr-defined]

    features = list(__cpu_dispatch__)
    if not features:
        pytest.skip("this numpy build has no dispatchable SIMD levels above its baseline")
    script = (
        "import hashlib; from tests.engine.test_derive import _all_actions_digest, _derive_long;"
        "print(_all_actions_digest());"
        "rule = {'match': '*', 'action': 'mean_rows', 'noise': 0.5};"
        "print(hashlib.sha256(_derive_long([rule], 2510).tobytes()).hexdigest())"
    )
    restricted = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(features)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert restricted == [_all_actions_digest(), GOLDEN_MEAN_ROWS_F64]


def test_both_kernels_derive_the_same_bytes() -> None:
    from initserve.engine.kernels import KernelUnavailable, resolve_kernel

    try:
        native = resolve_kernel("native")
    except KernelUnavailable:
        pytest.skip("the native kernel is not built here")
    request = parse_derive(
        {"source": CKPT, "target": {"seed": 42, "tensors": ALL_ACTIONS["tensors"]}, "rules": ALL_ACTIONS["rules"]}
    )
    file = plan_derive(request, MANIFESTS)
    numpy_bytes = file.to_bytes(BLOBS.__getitem__, kernel=resolve_kernel("numpy"))
    assert file.to_bytes(BLOBS.__getitem__, kernel=native) == numpy_bytes
    assert hashlib.sha256(numpy_bytes).hexdigest() == GOLDEN_ALL_ACTIONS
