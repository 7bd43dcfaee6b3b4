"""Memory and CPU time of a process from /proc (Linux): resident set now, its peak (high-water mark), CPU seconds."""

from __future__ import annotations

import os
import resource
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
