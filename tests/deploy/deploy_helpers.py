"""Real processes for the deployment tests: initserve replicas and nginx on loopback, stopped by PID.

Every process is started in its own session (process group id == its PID), so stopping it by that
PID also stops whatever it started (``make`` -> ``initserve``, nginx master -> workers).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "initserve.conf.template"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# Prefixes of the nginx instances started in this session, for failure reports (conftest.py).
NGINX_PREFIXES: list[Path] = []


@dataclass
class Managed:
    """A subprocess we started, with the log file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL the process alone (a crash, not a shutdown): no chance to finish anything."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group led by our PID; SIGKILL it if it outlives ``grace``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:  # the group is already gone
                break
            try:
                self.popen.wait(timeout=grace)
                # The leader is gone; make sure no member of its group outlives it.
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        if self.popen.poll() is None:
            self.popen.wait(timeout=grace)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def spawn(
    name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Managed:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log``."""
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Managed(name, popen, log)


def wait_healthy(url: str, proc: Managed, timeout: float) -> float:
    """Poll ``url`` until it answers 200; return the seconds it took. Fails early if ``proc`` dies."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s:\n{proc.log_text()[-4000:]}")


def service_env(**settings: str) -> dict[str, str]:
    """The test process's environment without stray INITSERVE_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    env.update({f"INITSERVE_{k.upper()}": v for k, v in settings.items()})
    return env


def start_initserve(port: int, log: Path, python: str = sys.executable, **settings: str) -> Managed:
    """One real replica: ``initserve serve`` (uvicorn) on 127.0.0.1:``port``."""
    proc = spawn(
        f"initserve:{port}",
        [python, "-m", "initserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=service_env(**settings),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    except BaseException:
        proc.stop()
        raise
    return proc


def render_template(text: str, values: Mapping[str, str]) -> str:
    """envsubst semantics of the nginx image: replace ``${NAME}`` for the names given, nothing else."""
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise KeyError(f"template placeholders without a value: {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def upstream_lines(ports: list[int]) -> str:
    """PROXY_UPSTREAMS for replicas on loopback, with the same passive-health parameters as compose."""
    return " ".join(f"server 127.0.0.1:{p} max_fails=2 fail_timeout=5s;" for p in ports)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def start_nginx(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Managed:
    """Real nginx (not a daemon) with the deploy template rendered into a minimal main config."""
    binary = nginx_binary()
    assert binary is not None, "nginx is not installed"
    for sub in ("cache", "tmp", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    fragment = render_template(
        NGINX_TEMPLATE.read_text(),
        {
            "PROXY_LISTEN": f"127.0.0.1:{listen_port}",
            "PROXY_UPSTREAMS": upstream_lines(upstream_ports),
            "PROXY_CACHE_DIR": str(prefix / "cache"),
            "PROXY_CACHE_MAX_SIZE": "1g",
        },
    )
    (prefix / "initserve.conf").write_text(fragment)
    NGINX_PREFIXES.append(prefix)
    # As root, nginx would switch its workers to `nobody`, who cannot enter pytest's private temp
    # directories; run them as whoever runs the test instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    tmp = prefix / "tmp"
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
        f"  fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n"
        f"  include {prefix / 'initserve.conf'};\n"
        "}\n"
    )
    argv = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"nginx -t rejected the rendered config:\n{check.stderr}"
    proc = spawn(f"nginx:{listen_port}", argv, prefix / "logs" / "access.log")
    start = time.monotonic()
    while time.monotonic() - start < 15:
        if not proc.alive():
            raise RuntimeError(f"nginx exited: {(prefix / 'logs' / 'error.log').read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", listen_port)) == 0:
                return proc
        time.sleep(0.05)
    proc.stop()
    raise TimeoutError("nginx did not listen within 15 s")


def nginx_diagnostics(prefix: Path, lines: int = 40) -> str:
    """nginx's warnings/errors and its access lines that were not 2xx/3xx, for a failure report."""
    error_log = prefix / "logs" / "error.log"
    access_log = prefix / "logs" / "access.log"
    errors = [
        line
        for line in (error_log.read_text(errors="replace").splitlines() if error_log.exists() else [])
        if "[warn]" in line or "[error]" in line or "[crit]" in line
    ]
    unusual = [
        line
        for line in (access_log.read_text(errors="replace").splitlines() if access_log.exists() else [])
        if line.startswith("{") and not re.search(r'"status":[23]\d\d,', line)
    ]
    return "\n".join(
        ["-- error.log (warn and worse)", *errors[-lines:], "-- access.log (not 2xx/3xx)", *unusual[-lines:]]
    )
