"""Every command in README.md runs: its ```bash and ```python blocks are extracted and executed against a
real `initserve serve` on a free loopback port (the README's 127.0.0.1:8000 is rewritten to that port).

The two set-up commands, `make serve` and `make test`, are not run from here (a test suite running
itself, or a second install, would prove nothing more): `.ci/run` runs `make test` in a fresh clone
and `.ci/check-serve` proves `make serve` answers /healthz within 30 s. This file checks that the
README's set-up blocks hold exactly those two commands and that .ci/run still runs both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import REPO, Managed, start_initserve
from safetensors.numpy import load_file

from tests.live_server import free_port

README = REPO / "README.md"
README_ADDRESS = "127.0.0.1:8000"
SETUP_COMMANDS = {"make serve", "make test"}
_BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.timeout(300)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README.read_text()) if lang == language]


def _commands(block: str) -> list[str]:
    """The block's commands without comments (bash), for telling set-up blocks from tour blocks."""
    lines = (line.split("#", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line]


def _is_setup(block: str) -> bool:
    return set(_commands(block)) <= SETUP_COMMANDS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Managed, int]]:
    port = free_port()
    proc = start_initserve(port, tmp_path_factory.mktemp("readme") / "server.log")
    yield proc, port
    proc.stop()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    env["INITSERVE_CACHE_DIR"] = str(tmp_path / "client-cache")  # not the user's own cache
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_setup_blocks_are_exactly_make_serve_and_make_test_and_ci_runs_both() -> None:
    setup = [c for block in _blocks("bash") if _is_setup(block) for c in _commands(block)]
    assert sorted(setup) == sorted(SETUP_COMMANDS)
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and ".ci/check-serve" in ci
    assert re.search(r"make\b.*\bserve\b", (REPO / ".ci" / "check-serve").read_text())


def test_bash_blocks_run(server: tuple[Managed, int], tmp_path: Path) -> None:
    _, port = server
    tour = [block for block in _blocks("bash") if not _is_setup(block)]
    assert tour, "the README has no tour"
    for block in tour:
        assert README_ADDRESS in block, "a README command that does not talk to the local server"
        script = block.replace(README_ADDRESS, f"127.0.0.1:{port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    # curl saved a real safetensors file, and the CLI fetched the very same tensor.
    tensors = load_file(tmp_path / "fc.safetensors")
    assert tensors["fc.weight"].shape == (256, 128)
    assert np.array_equal(np.load(tmp_path / "fc.npy"), tensors["fc.weight"])


def test_python_blocks_run(server: tuple[Managed, int], tmp_path: Path) -> None:
    _, port = server
    blocks = _blocks("python")
    assert blocks, "the README has no Python example"
    for block in blocks:
        assert README_ADDRESS in block
        code = block.replace(README_ADDRESS, f"127.0.0.1:{port}")
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
