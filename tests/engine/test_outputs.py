"""safetensors bytes and statistics."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from initserve.engine import ALGORITHM_VERSION, SafetensorsFile, compute_stats, generate, parse_bundle, parse_spec
from initserve.engine.dtypes import bfloat16_bits_to_float64

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_safetensors_file_loads_with_the_reference_library(dtype: str) -> None:
    spec = parse_spec({"shape": [17, 9], "scheme": "kaiming_normal", "seed": 3, "dtype": dtype, "name": "conv.weight"})
    data = SafetensorsFile(spec).to_bytes()
    loaded = safetensors.torch.load(data)["conv.weight"]
    assert loaded.dtype == getattr(torch, dtype)
    raw = generate(spec)
    assert loaded.contiguous().view(torch.uint8).numpy().tobytes() == raw.tobytes()
    if dtype != "bfloat16":
        assert np.array_equal(safetensors.numpy.load(data)["conv.weight"], raw)


def test_header_is_sorted_aligned_and_carries_the_canonical_spec() -> None:
    spec = parse_spec({"shape": [3], "scheme": "ones", "dtype": "float16"})
    f = SafetensorsFile(spec)
    length = struct.unpack("<Q", f.header[:8])[0]
    assert (8 + length) % 8 == 0 and len(f.header) == 8 + length
    text = f.header[8:].decode()
    assert text == text.rstrip() + " " * (len(text) - len(text.rstrip()))
    header = json.loads(text)
    assert list(header) == sorted(header)
    assert header["__metadata__"] == {
        "initserve.algorithm": str(ALGORITHM_VERSION),
        "initserve.spec": spec.canonical_json(),
    }
    assert f.total_length == len(f.header) + 6


def test_bundle_orders_by_itemsize_then_name_and_aligns_every_tensor() -> None:
    bundle = parse_bundle(
        {
            "seed": 1,
            "tensors": {
                "b": {"shape": [3], "scheme": "normal", "dtype": "float16"},
                "a": {"shape": [5], "scheme": "normal", "dtype": "float64"},
                "c": {"shape": [2, 2], "scheme": "normal"},
            },
        }
    )
    data = SafetensorsFile(bundle).to_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    order = sorted((entry["data_offsets"][0], name) for name, entry in header.items() if name != "__metadata__")
    assert [name for _, name in order] == ["a", "c", "b"]
    loaded = safetensors.torch.load(data)
    for spec in bundle.tensors:
        alone = generate(parse_spec({**spec.canonical()}))
        assert loaded[spec.name].numpy().tobytes() == alone.tobytes()


def test_same_spec_same_bytes_in_two_files() -> None:
    body = {"shape": [64, 64], "scheme": "orthogonal", "seed": 5}
    assert SafetensorsFile(parse_spec(body)).to_bytes() == SafetensorsFile(parse_spec(body)).to_bytes()


def test_stats_describe_the_cast_values_and_hash_their_bytes() -> None:
    spec = parse_spec({"shape": [512, 300], "scheme": "he_normal", "seed": 4, "dtype": "bfloat16", "layout": "keras"})
    stats = compute_stats(spec)
    values = bfloat16_bits_to_float64(generate(spec).reshape(-1))
    assert stats["sha256"] == hashlib.sha256(generate(spec).tobytes()).hexdigest()
    assert stats["numel"] == values.size and stats["shape"] == [512, 300]
    assert stats["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert stats["std"] == pytest.approx(values.std(), rel=1e-9)
    assert (stats["min"], stats["max"]) == (values.min(), values.max())
    assert stats["fan_in"] == 512 and stats["fan_out"] == 300
    histogram = stats["histogram"]
    assert sum(histogram["counts"]) + histogram["below"] + histogram["above"] == values.size
    assert stats["expected"]["high"] == pytest.approx(2 / 0.87962566103423978 * np.sqrt(2 / 512))
    assert stats["spec"] == spec.canonical() and stats["algorithm"] == ALGORITHM_VERSION


def test_stats_do_not_depend_on_threads() -> None:
    spec = parse_spec({"shape": [3000, 1000], "scheme": "normal", "seed": 2})
    assert compute_stats(spec, threads=1) == compute_stats(spec, threads=2)


def test_stats_of_an_empty_tensor() -> None:
    stats = compute_stats(parse_spec({"shape": [0, 4], "scheme": "xavier_normal"}))
    assert stats["numel"] == 0 and stats["mean"] is None and stats["sha256"] == hashlib.sha256(b"").hexdigest()
