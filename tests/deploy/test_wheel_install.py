"""What the Docker image relies on, without Docker: the project's wheel, installed with its `server`
extra into a fresh virtual environment (no system site-packages, not the repo checkout), runs
`initserve serve`, which answers /healthz, and the Dockerfile's HEALTHCHECK command accepts it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from deploy_helpers import REPO, service_env, spawn, wait_healthy

from tests.live_server import free_port

# About 15 s with a warm pip cache (CI's `make install` warms it), so part of the default run.
pytestmark = pytest.mark.timeout(600)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=800)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _healthcheck_argv() -> list[str]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    line = next(line for line in text.splitlines() if line.strip().startswith("HEALTHCHECK"))
    argv: list[str] = json.loads(line[line.index("CMD") + 3 :].strip())
    return argv


def _clean_copy(tmp_path: Path) -> Path:
    """The project without what the development install built in place (the editable install puts the
    compiled kernel into the source tree, and a wheel built from there would ship it whatever happens)."""
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.so", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    return source


def test_wheel_with_server_extra_serves_healthz_from_a_fresh_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            str(_clean_copy(tmp_path)),
        ],
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("initserve-*.whl")

    venv = tmp_path / "venv"
    # The base interpreter, not this test's venv: nothing of the development install can leak in.
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[server]"],
        cwd=tmp_path,
        env=env,
    )

    where = _run([python, "-c", "import initserve, initserve_client; print(initserve.__file__)"], cwd=tmp_path, env=env)
    assert where.strip().startswith(str(venv)), f"imported from {where!r}, not from the fresh venv"

    port = free_port()
    serve_env = service_env(port=str(port))
    serve_env.pop("PYTHONPATH", None)
    proc = spawn(
        "wheel-initserve",
        [str(venv / "bin" / "initserve"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "serve.log",
        env=serve_env,
        cwd=tmp_path,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, timeout=30)
        # The wheel carries the compiled kernel (gcc is on every build machine) and the service runs it.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert json.load(response)["kernel"] == "native"
        # The image's HEALTHCHECK, run by the image's interpreter (the venv's), reads INITSERVE_PORT.
        probe = _healthcheck_argv()
        assert probe[0] == "python"
        result = subprocess.run([python, *probe[1:]], env=serve_env, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        proc.stop()
    assert not proc.alive()


def test_without_a_c_compiler_the_wheel_builds_and_runs_the_numpy_kernel(tmp_path: Path) -> None:
    """The extension is optional: a failing compiler (CC=false) still gives a working wheel, whose
    engine falls back to the numpy kernel (auto) and refuses native with a clear reason."""
    source = _clean_copy(tmp_path)
    wheels = tmp_path / "wheels"
    env = {**os.environ, "CC": "false", "LDSHARED": "false"}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)],
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = wheels.glob("initserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "initserve/engine/kernels.py" in names
    assert not [name for name in names if "engine/_native" in name]
    target = tmp_path / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)], tmp_path
    )
    probe = (
        "import initserve.engine as e; from initserve.engine.kernels import native_unavailable_reason as r;"
        "print(e.__file__); print(e.resolve_kernel('auto').name); print(r())"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    output = _run([sys.executable, "-c", probe], cwd=tmp_path, env={**clean, "PYTHONPATH": str(target)}).splitlines()
    assert output[0].startswith(str(target)), output
    assert output[1] == "numpy"
    assert "not built" in output[2]
