"""``initserve checkpoint upload|show|derive`` against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from initserve.cli import main
from safetensors.numpy import load, save_file

from tests.live_server import LiveServer, start_server, stop_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("cli-server"))
    yield server
    stop_server(server)


def test_upload_show_and_derive(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "fc.bias": np.ones(3, dtype=np.float32)}
    save_file(weights, str(tmp_path / "model.safetensors"))
    assert main(["checkpoint", "upload", str(tmp_path / "model.safetensors"), "--url", live.url]) == 0
    digest = capsys.readouterr().out.strip()
    assert len(digest) == 64
    assert main(["checkpoint", "show", digest, "--url", live.url]) == 0
    shown = capsys.readouterr().out
    assert "fc.weight" in shown and "3x4" in shown and digest in shown
    assert main(["checkpoint", "show", digest, "--json", "--url", live.url]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == digest
    request = {
        "source": digest,
        "target": {"seed": 3, "tensors": {"fc.weight": {"shape": [5, 4]}, "fc.bias": {"shape": [5]}}},
        "rules": [
            {"match": "fc.weight", "action": "pad", "scheme": "normal", "params": {"std": 0.02}},
            {"match": "fc.bias", "action": "mean_rows"},
        ],
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    out = tmp_path / "derived.safetensors"
    assert main(["checkpoint", "derive", str(tmp_path / "request.json"), "-o", str(out), "--url", live.url]) == 0
    derived = load(out.read_bytes())
    assert derived["fc.weight"][:3].tobytes() == weights["fc.weight"].tobytes()
    assert derived["fc.bias"].tolist() == [1.0] * 5


def test_errors_are_one_line_and_exit_1(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert main(["checkpoint", "upload", str(tmp_path / "bad.safetensors"), "--url", live.url, "--retries", "1"]) == 1
    assert "initserve checkpoint upload: error:" in capsys.readouterr().err


def test_async_client_uploads_and_derives_like_the_sync_one(live: LiveServer, tmp_path: Path) -> None:
    import asyncio

    from initserve_client import AsyncClient, Client

    weights = {"w": np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5), "b": np.zeros(4, dtype=np.float32)}
    save_file(weights, str(tmp_path / "m.safetensors"))
    tensors = {"w": {"shape": [6, 5]}, "b": {"shape": [4]}}
    rules = [{"match": "w", "action": "mean_rows", "noise": 0.1}]

    async def run() -> tuple[str, str, bytes, np.ndarray]:
        async with AsyncClient(base_url=live.url, cache=False) as client:
            from_path = (await client.upload_checkpoint(tmp_path / "m.safetensors"))["digest"]
            from_dict = (await client.upload_checkpoint(weights))["digest"]
            file = await client.derive_file(from_path, tensors, rules, seed=9)
            tensor = await client.checkpoint_tensor(from_path, "w")
            return from_path, from_dict, bytes(file.buffer), tensor

    from_path, from_dict, derived, tensor = asyncio.run(run())
    assert from_path == from_dict  # a checkpoint is its tensors, not its file layout
    assert tensor.tobytes() == weights["w"].tobytes()
    with Client(base_url=live.url, cache=False) as client:
        assert bytes(client.derive_file(from_path, tensors, rules, seed=9).buffer) == derived


def test_a_derive_that_overflows_is_an_api_error_naming_the_field(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client's derive paths (sync, async, CLI) surface the server's 422: the field and the rule."""
    import asyncio

    from initserve_client import APIError, AsyncClient, Client

    weights = {"w": np.array([[1.0, -70000.0]], dtype=np.float32)}
    tensors = {"w": {"shape": [1, 2], "dtype": "float16"}}
    rules = [{"match": "w", "action": "shrink_perturb", "shrink": 0.5, "noise": 0.0}]
    with Client(base_url=live.url, cache=False) as client:
        digest = client.upload_checkpoint(weights)["digest"]
        # λ = 0.5: 35000 fits float16 (rounded once, to 35008)
        assert client.derive(digest, tensors, rules)["w"].tolist() == [[0.5, float(np.float16(-35000.0))]]
        with pytest.raises(APIError) as caught:
            client.derive(digest, tensors, [{**rules[0], "shrink": 1.0}])
    assert caught.value.status == 422 and caught.value.errors[0].loc == ("body", "rules", 0, "shrink")
    assert "beyond float16's largest finite 65504" in str(caught.value)

    async def refused() -> APIError:
        async with AsyncClient(base_url=live.url, cache=False) as client:
            try:
                await client.derive_file(digest, tensors, [])
            except APIError as error:
                return error
        raise AssertionError("accepted")

    error = asyncio.run(refused())
    assert error.errors[0].loc == ("body", "target", "tensors", "w", "dtype")
    (tmp_path / "request.json").write_text(json.dumps({"source": digest, "target": {"tensors": tensors}}))
    out = tmp_path / "derived.safetensors"
    assert main(["checkpoint", "derive", str(tmp_path / "request.json"), "-o", str(out), "--url", live.url]) == 1
    assert "target.tensors.w.dtype" in capsys.readouterr().err and not out.exists()
