"""LocalClient refuses results above ``max_bytes`` before allocating, as a server refuses them with 413;
filling memory the caller already holds (bundle_into, init_module's in-place fill) is not limited."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from initserve.api.settings import Settings
from initserve.engine import DEFAULT_MAX_BYTES
from initserve_client import Client, LocalClient, TooLargeError, init_module
from torch import nn

from tests.live_server import LiveServer, start_server, stop_server

LIMIT = 1 << 20  # 1 MiB: a 512 x 512 float32 tensor fits exactly
HINT = "; LocalClient(max_bytes=...) sets this limit"
HUGE = {"shape": [100_000, 100_000, 100], "scheme": "normal", "dtype": "float64", "name": "w"}  # 7.3 TiB


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("limited"), {"INITSERVE_MAX_BYTES": str(LIMIT)})
    yield server
    stop_server(server)


def test_the_default_limit_is_the_servers() -> None:
    assert LocalClient().max_bytes == DEFAULT_MAX_BYTES == Settings().max_bytes == 8 << 30


def test_a_huge_spec_is_refused_before_anything_is_allocated() -> None:
    local = LocalClient(threads=1)
    local.tensor([2], "normal", name="w")  # first-call costs outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError) as caught:
            local.tensor(**HUGE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse a 7.3 TiB tensor"
    error = caught.value
    assert error.status == 413 and error.slug == "too-large"
    assert [e.loc for e in error.errors] == [("body", "shape")]
    assert "result would be 7.28 TiB (8,000,000,000,000 bytes), above the limit of 8 GiB" in str(error), str(error)
    assert str(error).endswith(HINT)


# Every method that returns a result it allocates, for a spec 1 byte ... many bytes over the limit.
OVER: list[tuple[str, Callable[[LocalClient], Any], tuple[str, ...]]] = [
    ("tensor", lambda c: c.tensor([512, 513], "normal", name="w"), ("body", "shape")),
    ("tensor float64", lambda c: c.tensor([512, 257], "normal", dtype="float64", name="w"), ("body", "shape")),
    ("torch", lambda c: c.torch([1 << 19, 3], "zeros", dtype="bfloat16", name="w"), ("body", "shape")),
    ("stats", lambda c: c.stats([1 << 40, 1 << 20], "normal", name="w"), ("body", "shape")),
    ("safetensors", lambda c: c.safetensors({"shape": [1 << 18, 2], "scheme": "ones", "name": "w"}), ("body", "shape")),
    (
        "bundle",
        lambda c: c.bundle(
            {"a": {"shape": [256, 512], "scheme": "normal"}, "b": {"shape": [257, 512], "scheme": "ones"}}
        ),
        ("body", "tensors"),
    ),
    (
        "bundle_torch",
        lambda c: c.bundle_torch({"e": {"shape": [1 << 30, 1 << 30], "scheme": "normal", "dtype": "float16"}}),
        ("body", "tensors"),
    ),
    (
        "safetensors bundle",
        lambda c: c.safetensors({"seed": 0, "tensors": {"a": {"shape": [1 << 19], "scheme": "ones"}}}),
        ("body", "tensors"),
    ),
]


@pytest.mark.parametrize(("call", "loc"), [(call, loc) for _, call, loc in OVER], ids=[name for name, _, _ in OVER])
def test_every_allocating_method_is_bounded(call: Callable[[LocalClient], Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(TooLargeError) as caught:
        call(LocalClient(threads=1, max_bytes=LIMIT))
    assert [e.loc for e in caught.value.errors] == [loc]
    assert "above the limit of 1 MiB (1,048,576 bytes)" in str(caught.value) and str(caught.value).endswith(HINT)


def test_results_up_to_the_limit_and_slices_of_huge_tensors_are_served() -> None:
    local = LocalClient(threads=1, max_bytes=LIMIT)
    assert local.tensor([512, 512], "normal", name="w").nbytes == LIMIT  # exactly at the limit
    assert LocalClient(threads=1, max_bytes=None).tensor([512, 513], "normal", name="w").nbytes == LIMIT + 2048
    # The limit is on the result: a small slice of a 7.3 TiB tensor is what the server would send too.
    part = LocalClient(threads=1).tensor(**{**HUGE, "slice": [[0, 2], [0, 3], [0, 4]]})
    assert part.shape == (2, 3, 4)


def test_the_refusal_is_the_servers(limited_server: LiveServer) -> None:
    """Same exception, status, slug, loc and message as a Client gets from a server with the same limit."""
    local = LocalClient(threads=1, max_bytes=LIMIT)
    with Client(base_url=limited_server.url, cache=False) as client:
        for shape, dtype in (([512, 513], "float32"), ([4096, 4096], "float16"), ([1 << 40, 1 << 30], "float64")):
            with pytest.raises(TooLargeError) as ours:
                local.tensor(shape, "normal", dtype=dtype, name="w")
            with pytest.raises(TooLargeError) as theirs:
                client.tensor(shape, "normal", dtype=dtype, name="w")
            assert (
                (ours.value.status, ours.value.slug) == (theirs.value.status, theirs.value.slug) == (413, "too-large")
            )
            assert [(e.loc, e.msg + HINT) for e in theirs.value.errors] == [(e.loc, e.msg) for e in ours.value.errors]


def test_max_bytes_is_validated() -> None:
    for bad in (0, -1, 1.5, True, "8GiB"):
        with pytest.raises(ValueError, match="max_bytes must be an integer ≥ 1"):
            LocalClient(max_bytes=bad)  # type: ignore[arg-type]


def test_filling_caller_memory_is_not_limited() -> None:
    """bundle_into and init_module's in-place fill write into memory that exists: a parameter far above
    max_bytes is filled, with the values an unlimited client gives."""
    small = LocalClient(threads=1, max_bytes=LIMIT)
    unlimited = LocalClient(threads=1, max_bytes=None)
    spec = {"w": {"shape": [1024, 1024], "scheme": "kaiming_uniform"}}  # 4 MiB, 4x the limit
    out = torch.empty(1024, 1024)
    small.bundle_into(spec, {"w": out}, seed=5)
    assert torch.equal(out, unlimited.bundle_torch(spec, seed=5)["w"])
    with pytest.raises(TooLargeError):
        small.bundle_torch(spec, seed=5)
    model, reference = nn.Linear(1024, 2048), nn.Linear(1024, 2048)  # an 8 MiB weight
    init_module(model, client=small, seed=3)
    init_module(reference, client=unlimited, seed=3)
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)


def test_init_module_from_the_meta_device_is_filled_in_place(tmp_path: Path) -> None:
    """A model built on the meta device and materialised on the CPU is filled parameter by parameter."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Embedding(4096, 512), nn.Linear(512, 512))  # an 8 MiB embedding
    init_module(model, client=LocalClient(threads=1, max_bytes=LIMIT), seed=1, device="cpu")
    reference = nn.Sequential(nn.Embedding(4096, 512), nn.Linear(512, 512))
    init_module(reference, client=LocalClient(threads=1, max_bytes=None), seed=1)
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(ours, theirs), name
