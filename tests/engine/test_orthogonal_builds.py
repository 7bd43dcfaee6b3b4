"""Orthogonal's QR does not depend on the instruction set the kernel was compiled for.

The extension is built again from this checkout with other flags — the plain x86-64 baseline without
function multiversioning (SSE2 only), and ``-march=native`` — and each build's QR must give the
installed build's bytes (which picks its AVX-512/AVX2/baseline clone at load time).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from initserve.engine import Kernel
from initserve.engine.householder import NativeQr, haar_q

from .conftest import load

ROOT = Path(__file__).resolve().parents[2]
BUILDS = {
    "baseline-no-multiversioning": "-march=x86-64 -DINITSERVE_NO_MULTIVERSION",
    "march-native": "-march=native",
}


def _build(flags: str, where: Path) -> ModuleType:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("no C compiler")
    env = {**os.environ, "INITSERVE_NATIVE_CFLAGS": flags}
    result = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(where / "lib"),
            "--build-temp",
            str(where / "tmp"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = (where / "lib" / "initserve" / "engine").glob("_native*")
    # The init function is named after the last component: load it under another package name.
    spec = importlib.util.spec_from_file_location(f"build_{where.name}._native", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the flags are x86-64 ones")
@pytest.mark.parametrize("build", BUILDS)
def test_other_builds_give_the_same_qr_bytes(build: str, tmp_path: Path) -> None:
    installed: Kernel = load("native")
    assert installed.qr is not None
    other = _build(BUILDS[build], tmp_path)
    if build == "march-native":
        info = other.build_info()
        assert info["avx2"] or info["avx512f"] or platform.machine() != "x86_64", info
    rng = np.random.default_rng(17)
    for shape in ((300, 300), (517, 201), (64, 9)):
        matrix = rng.standard_normal(shape)
        expected = haar_q(matrix, native=installed.qr, threads=2)
        got = haar_q(matrix, native=other_qr(other), threads=3)
        assert got.tobytes() == expected.tobytes(), shape
        assert got.tobytes() == haar_q(matrix).tobytes(), shape  # and the numpy kernel's


def other_qr(module: ModuleType) -> NativeQr:
    assert hasattr(module, "qr_haar")
    qr: NativeQr = module  # type: ignore[assignment]
    return qr
