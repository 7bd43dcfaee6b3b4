"""Fixtures for the client tests: a real ``initserve serve`` on a free loopback port, a fault-injecting
TCP/HTTP proxy in front of it, and an isolated cache directory per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.live_server import LiveServer as Server
from tests.live_server import start_server, stop_server

from .fault_proxy import FaultProxy


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = start_server(tmp_path_factory.mktemp("client-server"))
    yield live
    stop_server(live)


@pytest.fixture
def proxy_factory(server: Server) -> Iterator[Callable[..., FaultProxy]]:
    started: list[FaultProxy] = []

    def factory(**faults: object) -> FaultProxy:
        proxy = FaultProxy(server.port, **faults)  # type: ignore[arg-type]
        proxy.start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's cache or a configured server: each test gets its own cache dir."""
    for name in list(os.environ):
        if name.startswith("INITSERVE_"):
            monkeypatch.delenv(name)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("INITSERVE_CACHE_DIR", str(cache_dir))
    return cache_dir
