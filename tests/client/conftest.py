"""Fixtures for the client tests: a real ``initserve serve`` on a free loopback port, a fault-injecting
TCP/HTTP proxy in front of it, and an isolated cache directory per test."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .fault_proxy import FaultProxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request_count(self, method: str, route_part: str, status: str = "") -> float:
        """Sum of ``initserve_http_requests_total`` over routes containing ``route_part`` (from /metrics)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(r"initserve_http_requests_total\{(.*)\} ([0-9.e+]+)$", line)
            labels = match.group(1) if match else ""
            if match and f'method="{method}"' in labels and route_part in labels and f'status="{status}' in labels:
                total += float(match.group(2))
        return total


def start_server(log_dir: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = log_dir / f"client-tests-server-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    child_env.update(env or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "initserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=child_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server did not answer /healthz within 30 s:\n{log.read_text(errors='replace')}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # SIGTERM to the PID we started
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


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
