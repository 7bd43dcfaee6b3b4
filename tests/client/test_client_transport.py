"""The readinto download transport against a real server: same bytes as httpx, resumption, async
cancellation, proxies from the environment, and the cache layout it writes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from initserve_client import AsyncClient, Cache, Client, RetryPolicy
from initserve_client._rawhttp import RawTransport

from tests.live_server import LiveServer as Server

from .fault_proxy import FaultProxy

FAST = RetryPolicy(attempts=5, base=0.05, max_backoff=0.2)
SHAPE = [1024, 1024]  # 4 MiB of float32: the proxy cuts the first download after 1 MiB


def reference(server: Server, shape: list[int], scheme: str, seed: int) -> bytes:
    """The tensor's bytes as plain httpx sees them (no client code involved)."""
    response = httpx.post(server.url + "/v1/init", json={"shape": shape, "scheme": scheme, "seed": seed}, timeout=60)
    assert response.status_code == 200
    (header_size,) = memoryview(response.content)[:8].cast("Q")
    return response.content[8 + header_size :]


@pytest.mark.parametrize("transport", ["readinto", "httpx"])
@pytest.mark.parametrize("cache", [True, False])
def test_both_transports_give_the_servers_bytes_through_a_broken_stream(
    server: Server, proxy_factory: Callable[..., FaultProxy], transport: str, cache: bool
) -> None:
    expected = reference(server, SHAPE, "uniform", 41)
    proxy = proxy_factory(cut_after=1 << 20, cuts=1)
    with Client(base_url=proxy.url, cache=cache, retry_policy=FAST) as client:
        assert client._raw_downloads, "no proxy in the environment: downloads use the readinto transport"
        client._raw_downloads = transport == "readinto"
        array = client.tensor(SHAPE, "uniform", seed=41, name="weight")
    assert array.tobytes() == expected
    assert proxy.cuts_left == 0
    if cache:  # resumed from the tensor URL: only the missing bytes came again
        assert proxy.bytes_to_client < len(expected) + (64 << 10)


def test_async_readinto_resumes_and_equals_sync(server: Server, proxy_factory: Callable[..., FaultProxy]) -> None:
    expected = reference(server, SHAPE, "normal", 42)
    proxy = proxy_factory(cut_after=1 << 20, cuts=2)

    async def run() -> bytes:
        async with AsyncClient(base_url=proxy.url, retry_policy=FAST) as client:
            assert client._raw_downloads
            return (await client.tensor(SHAPE, "normal", seed=42, name="weight")).tobytes()

    assert asyncio.run(run()) == expected
    assert proxy.cuts_left == 0
    with Client(base_url=server.url) as client:  # and from the cache the async client filled
        assert client.tensor(SHAPE, "normal", seed=42, name="weight").tobytes() == expected


def _download_threads() -> list[str]:
    prefixes = ("initserve-download", "initserve-sha256", "initserve-range")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


def test_cancelling_an_async_download_stops_its_thread_and_leaves_no_partial_file(
    server: Server, isolated_env: Path
) -> None:
    tmp_dir = isolated_env / "v2" / "tmp"

    async def run() -> bool:
        async with AsyncClient(base_url=server.url) as client:
            task = asyncio.create_task(client.tensor([64, 4 << 20], "kaiming_normal", seed=43, name="weight"))  # 1 GiB
            while not (tmp_dir.exists() and any(tmp_dir.iterdir())):
                await asyncio.sleep(0.005)
                assert not task.done(), "the download should still be running"
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return task.cancelled()

    assert asyncio.run(run())
    assert list(tmp_dir.iterdir()) == [], "the temp file is removed once the worker thread has stopped"
    assert list((isolated_env / "v2" / "blobs").iterdir()) == []
    assert _download_threads() == []


def test_a_proxy_from_the_environment_keeps_downloads_on_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert not RawTransport().usable_for(httpx.URL("http://192.0.2.1:8000/v1/init"))
    assert RawTransport(trust_env=False).usable_for(httpx.URL("http://192.0.2.1:8000/v1/init"))
    with Client(base_url="http://192.0.2.1:8000") as client:
        assert not client._raw_downloads
    monkeypatch.setenv("NO_PROXY", "192.0.2.1")
    assert RawTransport().usable_for(httpx.URL("http://192.0.2.1:8000/v1/init"))


def test_the_old_cache_layout_is_ignored_and_pruned(
    server: Server, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy_blob = isolated_env / "blobs" / ("0" * 64)
    legacy_blob.parent.mkdir(parents=True)
    legacy_blob.write_bytes(b"an old blob, never read")
    (isolated_env / "index" / "etags").mkdir(parents=True)
    (isolated_env / "index" / "etags" / "e.json").write_text('{"etag": "e", "sha256": "' + "0" * 64 + '", "size": 23}')
    with Client(base_url=server.url) as client:
        first = client.tensor([8, 8], "normal", seed=44, name="weight")
        assert client.tensor([8, 8], "normal", seed=44, name="weight").tobytes() == first.tobytes()
    cache = Cache(isolated_env)
    assert len(cache.entries()) == 1 and cache.legacy_size() > 0
    from initserve.cli import main

    assert main(["cache", "--cache-dir", str(isolated_env), "ls"]) == 0
    assert "older cache layout" in capsys.readouterr().out
    assert cache.prune(everything=True) > 0
    assert not (isolated_env / "blobs").exists() and not (isolated_env / "index").exists()
    assert cache.legacy_size() == 0 and cache.entries() == []
