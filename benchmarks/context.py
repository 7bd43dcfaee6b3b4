"""Run-wide settings and shared resources handed to every row."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.servers import Server, start_service


@dataclass
class Context:
    """``quick`` shrinks sizes and repeats for development; the service server is started on demand."""

    quick: bool = False
    repeats: int = 5
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="initserve-bench-")))
    started: float = field(default_factory=time.monotonic)
    _service: Server | None = None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)

    def service(self) -> Server:
        """The shared initserve server (one process, default settings except generation slots)."""
        if self._service is None or self._service.process.poll() is not None:
            self._service = start_service(self.workdir)
            self.log(f"initserve serving on {self._service.url} (pid {self._service.pid})")
        return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
