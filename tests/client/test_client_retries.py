"""Retries against a real server behind a fault-injecting proxy: dropped connections, 503 + Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from initserve_client import AsyncClient, Client, RetriesExhaustedError, RetryPolicy, ServiceUnavailableError

from tests.live_server import LiveServer as Server

from .fault_proxy import FaultProxy

FAST = RetryPolicy(attempts=5, base=0.05, max_backoff=0.2)


def reference(server: Server) -> bytes:
    with Client(base_url=server.url, cache=False) as client:
        return client.tensor([50, 40], "kaiming_normal", seed=6, name="weight").tobytes()


@pytest.mark.parametrize("cache", [True, False])
def test_dropped_connections_are_retried(server: Server, proxy_factory: Callable[..., FaultProxy], cache: bool) -> None:
    proxy = proxy_factory(drop_first=3)
    with Client(base_url=proxy.url, cache=cache, retry_policy=FAST) as client:
        array = client.tensor([50, 40], "kaiming_normal", seed=6, name="weight")
    assert array.tobytes() == reference(server)
    assert proxy.connections >= 4


@pytest.mark.parametrize("cache", [True, False])
def test_503_retry_after_is_honoured(server: Server, proxy_factory: Callable[..., FaultProxy], cache: bool) -> None:
    proxy = proxy_factory(reject_first=2, retry_after="1")
    start = time.monotonic()
    with Client(base_url=proxy.url, cache=cache, retry_policy=FAST) as client:
        array = client.tensor([50, 40], "kaiming_normal", seed=6, name="weight")
    elapsed = time.monotonic() - start
    assert array.tobytes() == reference(server)
    assert proxy.rejected == 2
    gaps = [b - a for a, b in zip(proxy.arrivals, proxy.arrivals[1:], strict=False)][:2]
    # told to wait 1 s each time: never earlier, and not much later (jitter ≤ 0.1 s, plus scheduling)
    assert all(1.0 <= gap < 1.6 for gap in gaps), gaps
    assert 2.0 <= elapsed < 4.0


def test_async_client_retries_the_same_way(server: Server, proxy_factory: Callable[..., FaultProxy]) -> None:
    proxy = proxy_factory(drop_first=1, reject_first=1, retry_after="1")

    async def fetch() -> bytes:
        async with AsyncClient(base_url=proxy.url, retry_policy=FAST) as client:
            return (await client.tensor([50, 40], "kaiming_normal", seed=6, name="weight")).tobytes()

    start = time.monotonic()
    data = asyncio.run(fetch())
    assert data == reference(server)
    assert time.monotonic() - start >= 1.0
    assert proxy.rejected == 1


def test_gives_up_after_the_configured_attempts(proxy_factory: Callable[..., FaultProxy]) -> None:
    proxy = proxy_factory(reject_first=100, retry_after="0")
    policy = RetryPolicy(attempts=3, base=0.01)
    with Client(base_url=proxy.url, retry_policy=policy) as client, pytest.raises(RetriesExhaustedError) as info:
        client.tensor([4, 4], "normal", name="weight")
    assert proxy.rejected == 3
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ServiceUnavailableError)
    assert "after 3 attempt(s)" in str(info.value) and "503" in str(info.value)


def test_gives_up_on_dead_server_with_a_clear_error(proxy_factory: Callable[..., FaultProxy]) -> None:
    proxy = proxy_factory(drop_first=100)
    with Client(base_url=proxy.url, retries=2, cache=False) as client, pytest.raises(RetriesExhaustedError) as info:
        client.tensor([4, 4], "normal", name="weight")
    assert proxy.connections == 2
    assert isinstance(info.value.last_error, httpx.TransportError)
    assert "failed after 2 attempt(s)" in str(info.value)


def test_retry_after_beyond_the_cap_fails_at_once(proxy_factory: Callable[..., FaultProxy]) -> None:
    proxy = proxy_factory(reject_first=100, retry_after="3600")
    policy = RetryPolicy(max_retry_after=60)
    with Client(base_url=proxy.url, retry_policy=policy) as client, pytest.raises(ServiceUnavailableError) as info:
        client.tensor([4, 4], "normal", name="weight")
    assert proxy.rejected == 1
    assert info.value.retry_after == "3600"


def test_broken_stream_resumes_with_a_range(server: Server, proxy_factory: Callable[..., FaultProxy]) -> None:
    shape = [1024, 1024]  # 4 MiB: the proxy cuts each of the first two downloads after 1 MiB
    with Client(base_url=server.url, cache=False) as client:
        expected = client.tensor(shape, "uniform", seed=31, name="weight").tobytes()
    proxy = proxy_factory(cut_after=1 << 20, cuts=2)
    ranged = server.request_count("GET", "tensors", status="206")
    with Client(base_url=proxy.url, retry_policy=FAST) as client:
        array = client.tensor(shape, "uniform", seed=31, name="weight")
    assert array.tobytes() == expected
    assert proxy.cuts_left == 0
    assert server.request_count("GET", "tensors", status="206") - ranged == 2, "each resume asks only for the rest"
    assert proxy.bytes_to_client < len(expected) + (64 << 10), "nothing is downloaded twice"


def test_broken_post_stream_restarts(server: Server, proxy_factory: Callable[..., FaultProxy]) -> None:
    with Client(base_url=server.url, cache=False) as client:
        expected = client.tensor([1024, 1024], "uniform", seed=32, name="weight").tobytes()
    proxy = proxy_factory(cut_after=1 << 20, cuts=1)
    with Client(base_url=proxy.url, cache=False, retry_policy=FAST) as client:
        assert client.tensor([1024, 1024], "uniform", seed=32, name="weight").tobytes() == expected
    assert proxy.cuts_left == 0
