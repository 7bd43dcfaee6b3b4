"""How many threads the engine's parallel work uses by default: the cores this process may run on."""

from __future__ import annotations

import os


def default_threads() -> int:
    """The CPUs in this process's affinity mask (Linux), else the machine's CPU count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
