"""HTTP helpers shared by the rows: curl timings and the service's /v1/resolve."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

CURL_TIMEOUT = 300.0


@dataclass(frozen=True)
class Transfer:
    seconds: float
    size: int
    status: int

    @property
    def gbytes_per_s(self) -> float:
        return self.size / self.seconds / 1e9


def curl(url: str, *, headers: dict[str, str] | None = None, expect_status: int = 200) -> Transfer:
    """``curl -o /dev/null`` of ``url``: curl's own total time, bytes received and status."""
    program = shutil.which("curl")
    if program is None:
        raise RuntimeError("curl is required (Debian package curl)")
    argv = [program, "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=CURL_TIMEOUT, check=True)
    seconds, size, status = done.stdout.split()
    transfer = Transfer(float(seconds), int(size), int(status))
    if transfer.status != expect_status:
        raise RuntimeError(f"GET {url}: status {transfer.status}, expected {expect_status}")
    return transfer


def resolve(base_url: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/resolve``: the tensor URL, length and ETag of ``spec`` without generating it."""
    response = httpx.post(base_url + "/v1/resolve", json=spec, timeout=30.0)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
