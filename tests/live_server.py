"""Real ``initserve serve`` processes for the tests: started on a free loopback port, stopped by PID."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_SECONDS = 30


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running ``initserve serve`` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

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


def start_server(log_dir: Path, env: dict[str, str] | None = None) -> LiveServer:
    """Start ``initserve serve`` (through the package's CLI) with only the given INITSERVE_* settings."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    # Checkpoints a test uploads stay in its temporary directory, never in the user's data directory.
    child_env["INITSERVE_STORE"] = str(log_dir / f"store-{port}")
    child_env.update(env or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "initserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=child_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server did not answer /healthz within {STARTUP_SECONDS} s:\n{server.log_text()}")


def stop_server(server: LiveServer) -> None:
    """SIGTERM to the PID we started; SIGKILL if it does not stop within 15 s."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)
