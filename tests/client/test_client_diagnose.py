"""``Client.diagnose`` / ``AsyncClient.diagnose`` and ``initserve diagnose`` against a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from initserve.cli import main
from initserve_client import AsyncClient, Client, InvalidSpecError, TooLargeError

from tests.live_server import LiveServer as Server

BODY = {
    "input_width": 24,
    "depth": 5,
    "width": 32,
    "activation": "tanh",
    "schemes": [{"scheme": "kaiming_normal", "params": {"nonlinearity": "tanh"}}, {"scheme": "orthogonal"}],
    "seed": 2,
    "batch": 16,
}


def without_timing(result: dict) -> dict:
    for scheme in result["schemes"]:
        scheme.pop("seconds")
    return result


def test_sync_and_async_equal_the_server(server: Server) -> None:
    direct = without_timing(httpx.post(server.url + "/v1/diagnose", json=BODY, timeout=60).json())
    kwargs = {key: value for key, value in BODY.items() if key != "schemes"}
    schemes = [BODY["schemes"][0], "orthogonal"]  # a name alone is a scheme with default params
    with Client(base_url=server.url, cache=False) as client:
        assert without_timing(client.diagnose(schemes, **kwargs)) == direct
        assert without_timing(client.diagnose_of(BODY)) == direct

    async def run() -> dict:
        async with AsyncClient(base_url=server.url, cache=False) as client:
            return await client.diagnose(schemes, **kwargs)

    assert without_timing(asyncio.run(run())) == direct


def test_errors_are_typed(server: Server) -> None:
    with Client(base_url=server.url, cache=False, retries=1) as client:
        with pytest.raises(InvalidSpecError) as invalid:
            client.diagnose(["xavier_normal"], depth=3, width=8, activation="swish")
        assert "activation" in str(invalid.value)
        with pytest.raises(TooLargeError):
            client.diagnose(["xavier_normal"], depth=600, width=8)  # over the default limit of 500


def test_cli_prints_a_summary_and_json(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--url", server.url]
    argv = ["diagnose", "--depth", "8", "--width", "32", "--activation", "tanh", "--batch", "16", *url]
    assert (
        main([*argv, "--scheme", "kaiming_normal:nonlinearity=tanh", "--scheme", "constant:value=0.0042", "--layers"])
        == 0
    )
    out = capsys.readouterr().out
    assert "kaiming_normal(nonlinearity=tanh)" in out and "collapsed" in out and "pred std" in out
    spec = tmp_path / "diagnose.json"
    spec.write_text(json.dumps(BODY))
    assert main(["diagnose", "--spec", str(spec), "--json", *url]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["label"] for s in printed["schemes"]] == ["kaiming_normal(nonlinearity=tanh)", "orthogonal"]
    assert main(["diagnose", "--depth", "2", "--width", "8", *url]) == 1  # no --scheme
    assert "at least one --scheme" in capsys.readouterr().err
