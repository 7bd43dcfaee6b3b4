"""Memory of a process from /proc (Linux): resident set now and its peak (high-water mark)."""

from __future__ import annotations

from pathlib import Path

KIB = 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") * KIB / 2**20


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the largest resident set the process has had since it started."""
    return _status_kib(pid, "VmHWM") * KIB / 2**20
