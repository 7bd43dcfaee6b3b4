"""The client and CLI side of the first hour (issue #12): names are required, dtype objects are
understood, bfloat16 never lands in an unreadable .npy, a down server fails fast with a hint,
messages name the setting actually used, and the CLI shows what tells things apart."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from initserve_client import AsyncClient, Client, NameRequiredError, OfflineError, TransportError

from tests.live_server import LiveServer as Server


def _main(argv: list[str]) -> int:
    from initserve.cli import main

    return main(argv)


# --- 4: names ------------------------------------------------------------------------------------------
def test_same_seed_without_names_would_be_correlated_so_the_client_refuses(server: Server) -> None:
    with Client(base_url=server.url) as client:
        for call in (client.tensor, client.torch, client.stats):
            with pytest.raises(NameRequiredError, match="rescaled prefix"):
                call([256, 784], "kaiming_normal", seed=42)
        for spec_call in (client.stats_of, client.safetensors, client.resolve):
            with pytest.raises(NameRequiredError, match="the spec's name is required"):
                spec_call({"shape": [4], "scheme": "zeros"})
        # The trap itself, made visible with the server's default name on both: a rescaled prefix.
        big = client.tensor([256, 784], "kaiming_normal", seed=42, name="weight").ravel()
        small = client.tensor([128, 256], "kaiming_normal", seed=42, name="weight").ravel()
        assert np.corrcoef(big[: small.size], small)[0, 1] == pytest.approx(1.0, abs=1e-6)
        # Named, they are independent.
        fc1 = client.tensor([256, 784], "kaiming_normal", seed=42, name="fc1.weight").ravel()
        fc2 = client.tensor([128, 256], "kaiming_normal", seed=42, name="fc2.weight").ravel()
        assert abs(np.corrcoef(fc1[: fc2.size], fc2)[0, 1]) < 0.02
        # Bundles name every tensor by its key: nothing to require there.
        assert set(client.bundle({"a": {"shape": [2], "scheme": "ones"}})) == {"a"}


def test_async_client_requires_names_too(server: Server) -> None:
    async def run() -> None:
        async with AsyncClient(base_url=server.url) as client:
            with pytest.raises(NameRequiredError):
                await client.tensor([4], "zeros")

    asyncio.run(run())


def test_cli_requires_a_name(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.safetensors"
    assert _main(["fetch", "--shape", "4", "--scheme", "zeros", "-o", str(out), "--url", server.url]) == 1
    assert "--name is required" in capsys.readouterr().err and not out.exists()
    assert _main(["stats", "--shape", "4", "--scheme", "zeros", "--url", server.url]) == 1
    assert "--name is required" in capsys.readouterr().err
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shape": [4], "scheme": "zeros"}))
    assert _main(["fetch", "--spec", str(spec), "-o", str(out), "--url", server.url]) == 1
    assert "name is required" in capsys.readouterr().err


# --- 11: dtypes and shapes as Python objects ---------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, np.float16),
        (np.float16, np.float16),
        (np.dtype("float64"), np.float64),
        (torch.float32, np.float32),
        (ml_dtypes.bfloat16, ml_dtypes.bfloat16),
        (torch.bfloat16, ml_dtypes.bfloat16),
        ("float16", np.float16),
    ],
)
def test_dtype_objects_are_accepted(server: Server, dtype: Any, expected: Any) -> None:
    with Client(base_url=server.url) as client:
        array = client.tensor([3, 4], "normal", dtype=dtype, name="w", seed=1)
        tensor = client.torch([3, 4], "normal", dtype=dtype, name="w", seed=1)
        stats = client.stats([3, 4], "normal", dtype=dtype, name="w", seed=1)
    assert array.dtype == np.dtype(expected)
    assert str(tensor.dtype).removeprefix("torch.") == stats["dtype"] == np.dtype(expected).name


def test_shapes_as_torch_size_numpy_ints_and_arrays(server: Server) -> None:
    with Client(base_url=server.url) as client:
        reference = client.tensor([3, 5], "uniform", name="w")
        for shape in (torch.Size([3, 5]), (np.int64(3), np.int32(5)), np.array([3, 5]), torch.empty(3, 5).shape):
            np.testing.assert_array_equal(client.tensor(shape, "uniform", name="w"), reference)
        stats = client.stats_of({"shape": np.array([3, 5]), "scheme": "uniform", "name": "w", "dtype": torch.float32})
    assert stats["shape"] == [3, 5]


# --- 12: bfloat16 and .npy ---------------------------------------------------------------------------
def test_cli_refuses_bfloat16_npy_and_points_to_safetensors(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npy, st = tmp_path / "w.npy", tmp_path / "w.safetensors"
    flags = ["fetch", "--shape", "8", "--scheme", "normal", "--name", "w", "--url", server.url]
    assert _main([*flags, "--dtype", "bfloat16", "-o", str(npy)]) == 1
    assert ".safetensors" in capsys.readouterr().err and not npy.exists()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shape": [8], "scheme": "normal", "name": "w", "dtype": "bfloat16"}))
    assert _main(["fetch", "--spec", str(spec), "-o", str(npy), "--url", server.url]) == 1
    assert _main([*flags, "--dtype", "bfloat16", "-o", str(st)]) == 0
    import safetensors.torch

    assert safetensors.torch.load(st.read_bytes())["w"].dtype == torch.bfloat16
    assert _main([*flags, "--dtype", "float16", "-o", str(npy)]) == 0
    assert np.load(npy).dtype == np.float16


# --- 13: a down server, and messages that name the setting -------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_local_connection_fails_fast_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with Client(base_url=url, cache=False) as client, pytest.raises(TransportError) as info:
        client.tensor([4], "zeros", name="w")
    assert time.monotonic() - started < 2.0  # no 6-8 s of retries against nothing
    assert f"is `initserve serve` running at {url}?" in str(info.value)
    assert "the URL comes from base_url=" in str(info.value)
    monkeypatch.setenv("INITSERVE_URL", url)
    with Client() as client, pytest.raises(TransportError, match="comes from INITSERVE_URL"):
        client.stats([4], "zeros", name="w")

    async def run() -> None:
        async with AsyncClient(base_url=url) as client:
            with pytest.raises(TransportError, match="running at"):
                await client.tensor([4], "zeros", name="w")

    asyncio.run(run())


def test_cli_on_a_down_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    argv = ["fetch", "--shape", "4", "--scheme", "zeros", "--name", "w", "-o", str(tmp_path / "w.npy"), "--url", url]
    assert _main(argv) == 1
    assert f"is `initserve serve` running at {url}?" in capsys.readouterr().err


def test_offline_errors_name_the_setting_used(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(base_url=server.url, offline=True) as client, pytest.raises(OfflineError) as info:
        client.tensor([4], "zeros", name="w")
    assert "(offline=True)" in str(info.value) and "offline=False" in str(info.value)
    assert "INITSERVE_OFFLINE" not in str(info.value)
    monkeypatch.setenv("INITSERVE_OFFLINE", "1")
    with Client(base_url=server.url) as client, pytest.raises(OfflineError) as info:
        client.tensor([4], "zeros", name="w")
    assert "(INITSERVE_OFFLINE=1)" in str(info.value) and "unset INITSERVE_OFFLINE" in str(info.value)


def test_cli_errors_name_the_flags_used(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INITSERVE_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["fetch", "--shape", "4", "--scheme", "zeros", "--name", "w", "-o", str(tmp_path / "w.npy")]
    assert _main([*argv, "--url", server.url, "--offline"]) == 1
    err = capsys.readouterr().err
    assert "(--offline)" in err and "drop --offline" in err and "offline=True" not in err
    down = f"http://127.0.0.1:{_free_port()}"
    assert _main([*argv, "--url", down]) == 1
    assert "(the URL comes from --url)" in capsys.readouterr().err


# --- 14: the CLI tells things apart ------------------------------------------------------------------
def test_cache_ls_tells_entries_apart(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(base_url=server.url) as client:
        client.tensor([64, 64], "normal", seed=1, name="weight")
        client.tensor([64, 64], "normal", seed=2, name="weight")
        client.tensor([64, 64], "kaiming_uniform", seed=1, name="weight")
        client.tensor([64, 64], "normal", seed=1, name="task a")
    capsys.readouterr()
    assert _main(["cache", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[2:6]
    for column in ("size", "last used", "seed", "name scheme dtype[shape]"):
        assert column in header
    assert len({row.split(maxsplit=1)[1] for row in rows}) == 4  # no two rows alike beyond the hash
    text = "\n".join(rows)
    assert "kaiming_uniform" in text and "'task a' normal F32[64, 64]" in text
    assert sorted(row.split()[5] for row in rows) == ["1", "1", "1", "2"]


def test_stats_from_a_spec_file(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "layer.json"
    spec.write_text(json.dumps({"shape": [784, 256], "scheme": "he_normal", "layout": "keras", "name": "dense"}))
    assert _main(["stats", "--spec", str(spec), "--json", "--url", server.url]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["fan_in"], stats["layout"], stats["spec"]["name"]) == (784, "keras", "dense")
    assert _main(["stats", "--spec", str(spec), "--url", server.url]) == 0
    assert "layout" in capsys.readouterr().out


def test_schemes_shows_every_framework_and_json_consistently(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", server.url]
    assert _main(["schemes", *url]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[:6] == ["scheme", "params", "torch", "keras", "jax", "TF1"]
    assert "HeNormal()" in table and "glorot_uniform_initializer()" in table
    assert _main(["schemes", "HeNormal", *url]) == 0
    text = capsys.readouterr().out
    assert text.startswith("he_normal: ") and "keras  HeNormal() ≡ {} + layout keras" in text and "aliases:" in text
    assert _main(["schemes", "truncated_normal", "--json", *url]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "truncated_normal"
    assert _main(["schemes", "--json", *url]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 23


def test_plan_command(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    kwargs = json.dumps(
        {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 64}
    )
    assert _main(["plan", "torch.nn:Transformer", "--kwargs", kwargs, "--json", "--url", server.url]) == 0
    plan = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    linear1 = plan["encoder.layers.0.linear1.weight"]
    assert (linear1["scheme"], linear1["fan_in"], linear1["fan_out"]) == ("xavier_uniform", 16, 64)
    assert linear1["source"] == "Transformer._reset_parameters"
    assert _main(["plan", "torch.nn.Linear", "--args", "[784, 256]", "--no-server"]) == 0
    table = capsys.readouterr().out
    assert "torch_default" in table and "Linear.reset_parameters" in table
    assert _main(["plan", "no_such_module:thing", "--no-server"]) == 1


@pytest.mark.parametrize("shape", ["256,x", "256,,128", ",", "4,-", "4.5,2", "x"])
def test_cli_refuses_a_shape_with_a_part_that_is_not_an_integer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    # "256,x" once fetched a [256] tensor: the stray part was dropped, not refused.
    out = tmp_path / "w.npy"
    assert _main(["fetch", f"--shape={shape}", "--scheme", "zeros", "--name", "w", "-o", str(out), "--no-cache"]) == 1
    assert "--shape must be comma-separated integers" in capsys.readouterr().err and not out.exists()


def test_cli_shapes_that_are_accepted() -> None:
    from initserve_client.cli import _parse_shape

    assert _parse_shape("256,128") == _parse_shape(" 256 , 128 ") == _parse_shape("256x128") == [256, 128]
    assert _parse_shape("") == _parse_shape("  ") == []  # a scalar, as --help says


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "torch.nn:Linear", "--args", "[4]"], "Linear.__init__() missing 1 required positional"),
        (["plan", "json:dumps", "--args", "[4]"], "json:dumps(...) returned str, not a torch.nn.Module"),
        (["plan", "torch.nn:Linear", "--args", "[4,"], "--args must be a JSON list"),
    ],
)
def test_cli_plan_errors_are_messages_not_tracebacks(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _main([*argv, "--no-server"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
