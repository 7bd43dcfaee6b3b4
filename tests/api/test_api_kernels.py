"""The generation kernel in real servers: INITSERVE_KERNEL=numpy and =native serve identical files, the
active kernel is visible (/healthz, /metrics), a missing extension is a start-up error (native) or a
logged fallback (auto), and slices with millions of runs are served in bounded memory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from initserve.engine import ALGORITHM_VERSION, generate, parse_spec, resolve_kernel
from initserve.engine.kernels import native_unavailable_reason

from tests.live_server import LiveServer, free_port, start_server, stop_server

pytestmark = pytest.mark.skipif(native_unavailable_reason() is not None, reason="the native kernel is not built")

SPECS: list[dict[str, Any]] = [
    {"shape": [256, 300], "scheme": "kaiming_normal", "seed": 1, "dtype": "bfloat16"},
    {"shape": [64, 32, 3, 3], "scheme": "he_uniform", "seed": (1 << 64) - 1, "layout": "keras"},
    {"shape": [513, 77], "scheme": "truncated_normal", "params": {"std": 0.02}, "dtype": "float16"},
    {"shape": [1000, 999], "scheme": "normal", "seed": 1 << 63, "dtype": "float64", "slice": [[3, 900], [7, 70]]},
    {"shape": [97, 31], "scheme": "sparse", "params": {"sparsity": 0.3}},
    {"shape": [1 << 22], "scheme": "uniform", "params": {"low": -2.0, "high": 3.0}},  # streamed, several blocks
]
BUNDLE = {
    "seed": 9,
    "tensors": {
        "a.weight": {"shape": [300, 200], "scheme": "xavier_uniform"},
        "a.bias": {"shape": [300], "scheme": "zeros"},
    },
}
# A column of a (16M, 2) tensor: 16M runs of one element. Materialising the runs took 2.4 GB.
COLUMN = {"shape": [16_000_000, 2], "scheme": "normal", "slice": [[0, 16_000_000], [0, 1]]}
# A column of a (2^32, 2) float16 tensor: 2^32 runs, an 8 GiB file.
HUGE_COLUMN = {"shape": [1 << 32, 2], "scheme": "normal", "dtype": "float16", "slice": [[0, 1 << 32], [1, 2]]}
RSS_LIMIT = 400 << 20  # peak resident memory of a server that served the above (it starts at ~100 MB)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    log_dir = tmp_path_factory.mktemp("kernel-servers")
    started: dict[str, LiveServer] = {}
    try:
        for kernel in ("numpy", "native"):
            started[kernel] = start_server(log_dir, {"INITSERVE_KERNEL": kernel, "INITSERVE_MAX_BYTES": str(16 << 30)})
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_healthz_and_metrics_name_the_kernel(servers: dict[str, LiveServer]) -> None:
    for kernel, server in servers.items():
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "kernel": kernel}
        metrics = httpx.get(server.url + "/metrics").text
        assert f'initserve_kernel_info{{kernel="{kernel}"}} 1.0' in metrics


def test_numpy_and_native_servers_serve_identical_files(servers: dict[str, LiveServer]) -> None:
    bodies: dict[str, list[bytes]] = {}
    for kernel, server in servers.items():
        with server.client() as http:
            files = [http.post("/v1/init", json=spec) for spec in SPECS]
            files.append(http.post("/v1/bundle", json=BUNDLE))
            files.append(http.post("/v1/init?format=stats", json=SPECS[0]))
            assert all(response.status_code == 200 for response in files), [r.text[:200] for r in files]
            bodies[kernel] = [response.content for response in files]
    assert bodies["numpy"] == bodies["native"]
    # and both are the engine's bytes (the files are not just equal to each other)
    spec = parse_spec(SPECS[3])
    data = generate(spec, kernel=resolve_kernel("numpy")).tobytes()
    assert bodies["native"][3].endswith(data)


def _range(server: LiveServer, spec: dict[str, Any], first: int, last: int) -> bytes:
    with server.client() as http:
        url = http.post("/v1/resolve", json=spec).json()["url"]
        response = http.get(url, headers={"Range": f"bytes={first}-{last}"})
    assert response.status_code == 206, response.text
    return response.content


def _header_length(server: LiveServer, spec: dict[str, Any]) -> tuple[int, int]:
    """(data start, file length) of the spec's safetensors file, from the resolve answer and a 8-byte range."""
    with server.client() as http:
        total = int(http.post("/v1/resolve", json=spec).json()["content_length"])
    header = int.from_bytes(_range(server, spec, 0, 7), "little")
    return 8 + header, total


@pytest.mark.parametrize("kernel", ["native", "numpy"])
def test_column_slices_with_millions_of_runs_are_served_in_bounded_memory(
    kernel: str, servers: dict[str, LiveServer]
) -> None:
    server = servers[kernel]
    for spec, itemsize in ((COLUMN, 4), (HUGE_COLUMN, 2)):
        start, total = _header_length(server, spec)
        rows = spec["shape"][0]
        column = spec["slice"][1][0]
        for row in (0, 1, rows // 2 + 3, rows - 1):  # first, odd, middle and last runs
            offset = start + row * itemsize
            value = _range(server, spec, offset, offset + itemsize - 1)
            whole = {"shape": spec["shape"], "scheme": "normal", "dtype": spec.get("dtype", "float32")}
            element = parse_spec({**whole, "slice": [[row, row + 1], [column, column + 1]]})
            assert value == generate(element, kernel=resolve_kernel("numpy")).tobytes(), (spec, row)
        assert total == start + rows * itemsize
    assert _peak_rss(server.pid) < RSS_LIMIT, f"{kernel} server peaked at {_peak_rss(server.pid) >> 20} MiB"


def test_a_streamed_column_slice_keeps_memory_bounded(servers: dict[str, LiveServer]) -> None:
    """The whole 64 MB body of the (16M, 2) column, streamed: memory stays at the ring of blocks."""
    server = servers["native"]
    digest = hashlib.sha256()
    with server.client() as http, http.stream("POST", "/v1/init", json=COLUMN) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(1 << 20):
            digest.update(chunk)
    start, _ = _header_length(server, COLUMN)
    expected = hashlib.sha256(_range(server, COLUMN, 0, start - 1))
    expected.update(generate(parse_spec(COLUMN), kernel=resolve_kernel("native")).tobytes())
    assert digest.hexdigest() == expected.hexdigest()
    assert _peak_rss(server.pid) < RSS_LIMIT, f"peaked at {_peak_rss(server.pid) >> 20} MiB"


# --- selection at start-up --------------------------------------------------------------------------
_HIDE_NATIVE = textwrap.dedent(
    """
    import sys

    class _HideNative:  # makes the compiled kernel unimportable, as on a machine without a compiler
        def find_spec(self, name, path=None, target=None):
            if name == "initserve.engine._native":
                raise ImportError("hidden by the test")
            return None

    sys.meta_path.insert(0, _HideNative())
    """
)


@pytest.fixture
def without_native(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(_HIDE_NATIVE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def test_native_without_the_extension_is_a_start_up_error(without_native: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "initserve.cli", "serve", "--port", str(free_port())],
        env={**without_native, "INITSERVE_KERNEL": "native"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "INITSERVE_KERNEL=native" in result.stderr and "not built" in result.stderr, result.stderr
    version = subprocess.run(
        [sys.executable, "-m", "initserve.cli", "--version"],
        env=without_native,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip().endswith("kernel numpy)"), version.stdout


def test_auto_without_the_extension_falls_back_to_numpy_with_one_warning(
    without_native: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in without_native.items():
        monkeypatch.setenv(name, value)
    server = start_server(tmp_path, {"INITSERVE_KERNEL": "auto"})
    try:
        assert httpx.get(server.url + "/healthz").json()["kernel"] == "numpy"
        with server.client() as http:
            body = http.post("/v1/init", json=SPECS[0]).content
    finally:
        stop_server(server)
    warnings = [line for line in server.log_text().splitlines() if "native kernel unavailable" in line]
    assert len(warnings) == 1, server.log_text()
    assert body.endswith(generate(parse_spec(SPECS[0]), kernel=resolve_kernel("native")).tobytes())


def test_version_prints_the_kernel() -> None:
    for choice, expected in (("native", "kernel native)"), ("numpy", "kernel numpy)"), ("auto", "kernel native)")):
        env = {**os.environ, "INITSERVE_KERNEL": choice}
        output = subprocess.run(
            [sys.executable, "-m", "initserve.cli", "--version"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        assert (
            output.startswith("initserve ")
            and f"algorithm {ALGORITHM_VERSION}" in output
            and output.strip().endswith(expected)
        )
