"""A description of the machine a run was measured on (for docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any, cast

import numpy as np


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def numpy_blas() -> str:
    """numpy's BLAS: threadpoolctl's view of the loaded library when installed, else numpy's build config."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")  # optional: not a project dependency
    except ImportError:
        config = cast(dict[str, Any], np.show_config(mode="dicts"))
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')} (numpy build config)".strip()
    infos: list[dict[str, Any]] = threadpoolctl.threadpool_info()
    return "; ".join(
        f"{info.get('internal_api')} {info.get('version')} kernel={info.get('architecture')} "
        f"threads={info.get('num_threads')}"
        for info in infos
        if info.get("user_api") == "blas"
    )


def describe() -> dict[str, str]:
    import torch

    flags = _cpuinfo_field("flags").split()
    simd = [flag for flag in ("avx2", "avx512f", "fma", "sha_ni") if flag in flags]
    blas_env = {key: os.environ[key] for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if key in os.environ}
    return {
        "CPU": f"{_cpuinfo_field('model name')} ({', '.join(simd)})",
        "cores": f"{len(os.sched_getaffinity(0))} usable (os.cpu_count() = {os.cpu_count()})",
        "memory": _memory_gib(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "numpy": f"{np.__version__}; BLAS {numpy_blas()}",
        "torch": f"{torch.__version__}; {torch.get_num_threads()} threads; BLAS {_torch_blas(torch)}",
        "BLAS environment": ", ".join(f"{k}={v}" for k, v in blas_env.items()) or "none set",
        "load average at start": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def _torch_blas(torch: Any) -> str:
    config: str = torch.__config__.show()
    for line in config.splitlines():
        if "BLAS_INFO" in line:
            return line.split("BLAS_INFO=")[-1].split(",")[0]
    return "unknown"
