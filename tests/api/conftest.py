"""Fixtures: real ``initserve serve`` processes on free loopback ports (see api_helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.live_server import LiveServer, start_server, stop_server


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []
    log_dir = tmp_path_factory.mktemp("servers")

    def factory(**env: str) -> LiveServer:
        server = start_server(log_dir, {f"INITSERVE_{k.upper()}": v for k, v in env.items()})
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture(scope="session")
def live(server_factory: Callable[..., LiveServer]) -> LiveServer:
    """The default server: default settings except a modest size limit for the error tests."""
    # Small diagnosis limits: the fuzzer must not send minute-long diagnoses.
    return server_factory(max_bytes=str(3 << 30), diagnose_max_cells=str(1 << 14), diagnose_max_weights=str(1 << 14))


@pytest.fixture(scope="session")
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client
