"""Servers the benchmarks start and stop themselves: initserve, a bytes-only FastAPI app, nginx.

Every server is a child process on a free 127.0.0.1 port, started in the foreground (no daemon),
waited for until it answers, and stopped by its own PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A running child process serving HTTP on ``url``."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}; log: {server.log_path}")
        try:
            if httpx.get(server.url + path, timeout=2.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer {path} within {START_TIMEOUT:.0f} s; log: {server.log_path}")


def _spawn(name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path, ready_path: str) -> Server:
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(name, process, f"http://{HOST}:{port}", log_path)
    _wait_ready(server, ready_path)
    return server


# Enough generation slots for B7's 32 connections: with the default (4) most requests would get 503.
SERVICE_ENV = {"INITSERVE_MAX_CONCURRENT_GENERATIONS": "64", "INITSERVE_LOG_LEVEL": "warning"}


def start_service(log_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    """``python -m initserve.api.cli serve`` (uvicorn + httptools + uvloop, 1 worker)."""
    port = free_port()
    env = {**os.environ, **SERVICE_ENV, **(extra_env or {})}
    argv = [sys.executable, "-m", "initserve.api.cli", "serve", "--host", HOST, "--port", str(port)]
    return _spawn("initserve", argv, env, port, log_dir, "/healthz")


def start_bytes_app(log_dir: Path) -> Server:
    """benchmarks.bytes_app under the same uvicorn configuration as the service."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.bytes_app", "--host", HOST, "--port", str(port)]
    return _spawn("bytes-app", argv, dict(os.environ), port, log_dir, "/healthz")


NGINX_CONF = """daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen {host}:{port};
        root {root};
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


def ensure_program(program: str, package: str) -> str | None:
    """Path of ``program``; installs the Debian ``package`` non-interactively when missing (as root)."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:
            return None
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")


def start_nginx(prefix: Path, root: Path) -> Server:
    """nginx in the foreground (``daemon off``, one process) serving ``root`` statically."""
    nginx = ensure_program("nginx", "nginx")
    if nginx is None:
        raise RuntimeError("nginx is not installed and could not be installed with apt-get")
    port = free_port()
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, host=HOST, port=port, root=root))
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return _spawn("nginx", argv, dict(os.environ), port, prefix, "/healthz")
