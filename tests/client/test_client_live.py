"""The client against a real server: bytes, dtypes, async == sync, bundles, stats, errors, ranges."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import safetensors.torch
import torch
from initserve_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    InvalidSpecError,
    NotFoundError,
    TooLargeError,
)

from tests.live_server import LiveServer as Server
from tests.live_server import start_server, stop_server

DTYPES = ["float32", "float64", "float16", "bfloat16"]
TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def server_file(server: Server, path: str, body: dict[str, Any]) -> bytes:
    """The server's bytes, fetched with plain httpx (no client code involved)."""
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.content


def data_section(raw: bytes) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n :]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cache", [True, False])
def test_numpy_and_torch_equal_server_bytes(server: Server, dtype: str, cache: bool) -> None:
    spec = {"shape": [33, 17], "scheme": "kaiming_normal", "seed": 123, "dtype": dtype, "name": "fc.weight"}
    raw = server_file(server, "/v1/init", spec)
    reference = safetensors.torch.load(raw)["fc.weight"]
    with Client(base_url=server.url, cache=cache) as client:
        array = client.tensor([33, 17], "kaiming_normal", seed=123, dtype=dtype, name="fc.weight")
        tensor = client.torch([33, 17], "kaiming_normal", seed=123, dtype=dtype, name="fc.weight")
    assert array.shape == (33, 17) and str(array.dtype) == dtype
    assert array.tobytes() == data_section(raw)
    assert tensor.dtype == TORCH_DTYPES[dtype] == reference.dtype
    assert tensor.shape == reference.shape
    assert tensor.view(torch.uint8).numpy().tobytes() == data_section(raw)
    assert torch.equal(tensor, reference)


def test_torch_bfloat16_shares_memory_with_the_numpy_buffer(server: Server) -> None:
    with Client(base_url=server.url) as client:
        t = client.torch([8, 8], "normal", seed=1, dtype="bfloat16", name="weight")
    # writable (copy-on-write map of the cache file), so torch warns about nothing and can modify in place
    t.add_(1)
    with Client(base_url=server.url) as client:
        again = client.torch([8, 8], "normal", seed=1, dtype="bfloat16", name="weight")
    assert torch.equal(again + 1, t), "in-place edits of a returned tensor must not reach the cache"


@pytest.mark.parametrize("cache", [True, False])
def test_async_equals_sync(server: Server, cache: bool) -> None:
    specs = [
        ([64, 32], "xavier_uniform", "float32"),
        ([5, 4, 3, 3], "kaiming_uniform", "bfloat16"),
        ([100], "uniform", "float16"),
    ]
    with Client(base_url=server.url, cache=cache) as client:
        sync = [client.tensor(shape, scheme, seed=9, dtype=dt, name="weight").tobytes() for shape, scheme, dt in specs]
        sync_bundle = client.bundle(
            {"a": {"shape": [3, 3], "scheme": "orthogonal"}, "b": {"shape": [4], "scheme": "ones"}}, seed=5
        )

    async def fetch() -> tuple[list[bytes], dict[str, np.ndarray[Any, Any]]]:
        async with AsyncClient(base_url=server.url, cache=cache) as client:
            arrays = await asyncio.gather(
                *(client.tensor(s, sc, seed=9, dtype=dt, name="weight") for s, sc, dt in specs)
            )
            bundle = await client.bundle(
                {"a": {"shape": [3, 3], "scheme": "orthogonal"}, "b": {"shape": [4], "scheme": "ones"}}, seed=5
            )
            return [a.tobytes() for a in arrays], bundle

    async_arrays, async_bundle = asyncio.run(fetch())
    assert async_arrays == sync
    assert sync_bundle.keys() == async_bundle.keys()
    for name in sync_bundle:
        assert sync_bundle[name].tobytes() == async_bundle[name].tobytes()


def test_bundle_tensors_equal_their_init(server: Server) -> None:
    tensors: dict[str, dict[str, Any]] = {
        "conv.weight": {"shape": [8, 3, 3, 3], "scheme": "kaiming_normal"},
        "conv.bias": {"shape": [8], "scheme": "uniform", "params": {"low": -0.1, "high": 0.1}},
        "emb": {"shape": [10, 4], "scheme": "normal", "dtype": "bfloat16"},
    }
    with Client(base_url=server.url) as client:
        bundle = client.bundle(tensors, seed=77)
        torch_bundle = client.bundle_torch(tensors, seed=77)
        for name, spec in tensors.items():
            single = client.tensor(
                spec["shape"], spec["scheme"], seed=77, name=name, params=spec.get("params"), dtype=spec.get("dtype")
            )
            assert bundle[name].tobytes() == single.tobytes()
            assert torch_bundle[name].shape == tuple(spec["shape"])


def test_slice_equals_slice_of_whole(server: Server) -> None:
    with Client(base_url=server.url) as client:
        whole = client.tensor([40, 6], "normal", seed=3, name="weight")
        part = client.tensor([40, 6], "normal", seed=3, slice=[[10, 25]], name="weight")
    np.testing.assert_array_equal(part, whole[10:25])


@pytest.mark.parametrize("cache", [True, False])
def test_parallel_ranges_equal_single_stream(server: Server, cache: bool) -> None:
    shape = [6 << 20]  # 24 MiB of float32
    with Client(base_url=server.url, cache=False) as client:
        single = client.tensor(shape, "uniform", seed=11, name="weight")
    with Client(base_url=server.url, cache=cache, parallel=4) as client:
        client._config = dataclasses.replace(client._config, parallel_threshold=1 << 20)
        before = server.request_count("GET", "tensors")
        parallel = client.tensor(shape, "uniform", seed=11, name="weight")
        ranged_gets = server.request_count("GET", "tensors") - before
    # 24 MiB split in ranges of >= 8 MiB gives 3 parts, plus one ?format=digest to verify them
    assert ranged_gets == 3 + 1, "3 ranged GETs and the digest GET"
    assert parallel.tobytes() == single.tobytes()


def server_metric(server: Server, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("cache", [True, False])
def test_a_fresh_fetch_is_verified_without_a_second_generation(server: Server, parallel: int, cache: bool) -> None:
    """The digest the client checks a multi-leaf download against is the one the server hashed while
    streaming it: the server generates the file once (ranges are cut on leaf boundaries)."""
    shape = [9216, 4096]  # 144 MiB of float32: two whole leaves and a short one
    seed = 20 + parallel + (1 if cache else 0)
    regenerated = "initserve_digest_generated_bytes_total"
    streamed = 'initserve_digests_total{source="streamed"}'
    before, answered = server_metric(server, regenerated), server_metric(server, streamed)
    with Client(base_url=server.url, cache=cache, parallel=parallel) as client:
        got = client.tensor(shape, "kaiming_normal", seed=seed, name="weight")
        assert server_metric(server, regenerated) == before
        assert server_metric(server, streamed) == answered + 1
        data = got.tobytes()
    with Client(base_url=server.url, cache=False) as client:
        assert (
            client.safetensors({"shape": shape, "scheme": "kaiming_normal", "seed": seed, "name": "weight"})
            .array("weight")
            .tobytes()
            == data
        )


def test_stats_and_schemes(server: Server) -> None:
    with Client(base_url=server.url) as client:
        stats = client.stats([256, 128], "kaiming_uniform", seed=42, name="weight")
        array = client.tensor([256, 128], "kaiming_uniform", seed=42, name="weight")
        schemes = client.schemes()
        one = client.scheme("kaiming_normal")
    assert stats["numel"] == array.size
    assert stats["std"] == pytest.approx(float(array.astype(np.float64).std()), rel=1e-9)
    names = {s["name"] for s in schemes}
    assert {"normal", "kaiming_normal", "orthogonal", "torch_default"} <= names
    assert one["name"] == "kaiming_normal"


def test_typed_errors_carry_field_and_rule(server: Server) -> None:
    with Client(base_url=server.url, cache=False) as client:
        with pytest.raises(InvalidSpecError) as info:
            client.tensor([4, -3], "normal", name="weight")
        assert info.value.status == 422
        assert [tuple(e.loc) for e in info.value.errors] == [("body", "shape", 1)]
        assert "shape[1]" in str(info.value) and "≥ 0" in str(info.value)
        with pytest.raises(InvalidSpecError) as info:
            client.tensor([4, 4], "normal", params={"stdev": 1}, name="weight")
        assert "stdev" in str(info.value)
        with pytest.raises(TooLargeError):
            client.tensor([1 << 40, 1 << 40], "zeros", name="weight")
        with pytest.raises(NotFoundError):
            client.scheme("no_such_scheme")
    with Client(base_url=server.url) as client, pytest.raises(InvalidSpecError):
        client.tensor([4, 4], "no_such_scheme", name="weight")


def test_cli_commands(server: Server, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from initserve.cli import main

    url = ["--url", server.url]
    out = tmp_path / "w.safetensors"
    fetch = ["fetch", "--shape", "16,8", "--scheme", "kaiming_uniform", "--seed", "4", "--name", "fc.weight"]
    assert main([*fetch, "-o", str(out), *url]) == 0
    assert out.read_bytes() == server_file(
        server, "/v1/init", {"shape": [16, 8], "scheme": "kaiming_uniform", "seed": 4, "name": "fc.weight"}
    )
    npy = tmp_path / "w.npy"
    assert (
        main(
            [
                "fetch",
                "--shape",
                "16,8",
                "--scheme",
                "kaiming_normal",
                "--param",
                "mode=fan_out",
                "--param",
                "a=0.1",
                "--name",
                "weight",
                "-o",
                str(npy),
                *url,
            ]
        )
        == 0
    )
    with Client(base_url=server.url) as client:
        expected = client.tensor([16, 8], "kaiming_normal", params={"mode": "fan_out", "a": 0.1}, name="weight")
    np.testing.assert_array_equal(np.load(npy), expected)
    spec_file = tmp_path / "bundle.json"
    spec_file.write_text(json.dumps({"seed": 1, "tensors": {"a": {"shape": [2, 2], "scheme": "eye"}}}))
    bundle_out = tmp_path / "b.safetensors"
    assert main(["fetch", "--spec", str(spec_file), "-o", str(bundle_out), *url]) == 0
    np.testing.assert_array_equal(safetensors.torch.load(bundle_out.read_bytes())["a"].numpy(), np.eye(2))
    capsys.readouterr()
    assert main(["stats", "--shape", "64,64", "--scheme", "normal", "--name", "w", *url]) == 0
    table = capsys.readouterr().out
    assert "std" in table and "sha256" in table
    assert main(["schemes", *url]) == 0
    assert "kaiming_normal" in capsys.readouterr().out
    assert main(["cache", "ls"]) == 0
    assert "3 entries" in capsys.readouterr().out
    assert main(["cache", "verify"]) == 0
    assert main(["fetch", "--shape", "4,-1", "--scheme", "normal", "--name", "w", "-o", str(npy), *url]) == 1
    assert "shape[1]" in capsys.readouterr().err
    assert main(["cache", "prune", "--all"]) == 0
    capsys.readouterr()
    assert main(["cache", "ls"]) == 0
    assert "0 entries" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", ["fetch", "stats", "schemes", "plan", "cache", "cache ls", "cache verify", "cache prune"]
)
def test_cli_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from initserve.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_api_key_from_argument_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secured = start_server(tmp_path, {"INITSERVE_API_KEYS": "k1,secret"})
    try:
        with Client(base_url=secured.url) as client, pytest.raises(AuthenticationError) as info:
            client.tensor([2, 2], "normal", name="weight")
        assert info.value.status == 401
        with Client(base_url=secured.url, api_key="wrong", cache=False) as client, pytest.raises(AuthenticationError):
            client.tensor([2, 2], "normal", name="weight")
        with Client(base_url=secured.url, api_key="secret") as client:
            assert client.tensor([2, 2], "normal", name="weight").shape == (2, 2)
        monkeypatch.setenv("INITSERVE_URL", secured.url)
        monkeypatch.setenv("INITSERVE_API_KEY", "k1")
        with Client(cache=False) as client:
            assert client.base_url == secured.url
            assert client.tensor([2, 2], "normal", name="weight").shape == (2, 2)
    finally:
        stop_server(secured)


@pytest.mark.parametrize("cache", [True, False])
def test_progress_bar_is_switchable(server: Server, cache: bool, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(base_url=server.url, cache=cache, progress=True) as client:
        client.tensor([256, 1024], "ones", name=f"bar-{cache}")
    assert "1.00M" in capsys.readouterr().err, "tqdm shows the 1 MiB body"
    with Client(base_url=server.url, cache=cache) as client:  # auto: stderr is not a terminal here
        client.tensor([256, 1024], "ones", name=f"quiet-{cache}")
    assert capsys.readouterr().err == ""


def test_async_parallel_ranges_and_ainit_module(server: Server) -> None:
    from initserve_client import ainit_module, init_module
    from torch import nn

    shape = [4 << 20]  # 16 MiB: two ranges of 8 MiB

    async def run() -> tuple[bytes, dict[str, torch.Tensor]]:
        async with AsyncClient(base_url=server.url, parallel=2) as client:
            client._config = dataclasses.replace(client._config, parallel_threshold=1 << 20)
            array = await client.tensor(shape, "normal", seed=12, name="weight")
            module = await ainit_module(nn.Linear(16, 4), client=client, seed=3)
            return array.tobytes(), dict(module.state_dict())

    before = server.request_count("GET", "tensors", status="206")
    data, state = asyncio.run(run())
    assert server.request_count("GET", "tensors", status="206") - before == 2
    with Client(base_url=server.url, cache=False) as client:
        assert data == client.tensor(shape, "normal", seed=12, name="weight").tobytes()
        sync_state = init_module(nn.Linear(16, 4), client=client, seed=3).state_dict()
    assert all(torch.equal(state[k], sync_state[k]) for k in sync_state)


def test_exported_members() -> None:
    import initserve_client

    for name in initserve_client.__all__:
        assert getattr(initserve_client, name) is not None, name
