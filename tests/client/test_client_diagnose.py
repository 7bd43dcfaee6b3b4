"""``Client.diagnose`` / ``AsyncClient.diagnose`` and ``initserve diagnose`` against a real server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from initserve.cli import main
from initserve_client import AsyncClient, Client, InvalidSpecError, TooLargeError, TransportError

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


# Well over 50 ms of work on any machine (about 0.5 s idle: 20 layers of 256, the 256² Jacobian), answered whole.
SLOW = {"depth": 20, "width": 256, "activation": "tanh", "schemes": [{"scheme": "normal"}], "batch": 256}
STREAM_TIMEOUT = httpx.Timeout(0.05, connect=10.0)  # 50 ms between the bytes of a stream


def test_answers_computed_whole_wait_for_compute_timeout_not_the_stream_timeout(server: Server) -> None:
    # `timeout` bounds the gaps of a stream; a diagnosis (or stats) sends nothing until it is done, so its
    # wait is `compute_timeout`: a 50 ms stream timeout does not cut a diagnosis of half a second.
    with Client(base_url=server.url, cache=False, timeout=STREAM_TIMEOUT, compute_timeout=300) as client:
        assert client.diagnose_of(SLOW)["schemes"][0]["layers"][19]["measured_std"] > 0

    async def run() -> dict:
        async with AsyncClient(base_url=server.url, cache=False, timeout=STREAM_TIMEOUT, compute_timeout=300) as client:
            return await client.diagnose_of(SLOW)

    assert len(asyncio.run(run())["schemes"][0]["layers"]) == 20


def test_a_compute_timeout_is_not_retried(server: Server) -> None:
    # A retry would start the same computation again from scratch (and again, `retries` times).
    before = server.request_count("POST", "/v1/diagnose")
    client = Client(base_url=server.url, cache=False, compute_timeout=0.05, retries=5)
    with client, pytest.raises(TransportError, match=r"no answer within compute_timeout = 0\.05 s"):
        client.diagnose_of(SLOW)
    # The server counts an abandoned request when it notices the disconnect: on a loaded machine that took
    # over 1 s. Wait for the first to be counted, then long enough for any retry (sent before the client
    # gave up, so already in flight) to be counted too.
    deadline = time.monotonic() + 30
    while server.request_count("POST", "/v1/diagnose") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    assert server.request_count("POST", "/v1/diagnose") - before == 1
