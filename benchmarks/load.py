"""Closed-loop HTTP load on loopback: wrk (Debian package) when available, else an asyncio+httpx loop."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.servers import ensure_program

LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""
# One body per request: SEED_MARK in the body becomes first_seed, first_seed + 1, ... (Lua numbers are
# doubles, exact up to 2^53, so first_seed stays below 2^52).
SEED_MARK = "__SEED__"
LUA_VARYING = """local prefix, suffix = '{prefix}', '{suffix}'
local seed = {first_seed}
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  seed = seed + 1
  return wrk.format("POST", nil, headers, prefix .. string.format("%d", seed) .. suffix)
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p99_ms: float
    failures: int  # non-2xx responses and socket errors
    tool: str
    requests: int  # responses completed during the run


def _to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _first_seed() -> int:
    return random.randrange(1 << 52)


def _lua(body: str) -> str:
    if SEED_MARK not in body:
        return LUA.format(body=body)
    prefix, suffix = body.split(SEED_MARK, 1)
    return LUA_VARYING.format(prefix=prefix, suffix=suffix, first_seed=_first_seed())


def run_wrk(wrk: str, url: str, body: str, connections: int, duration: float, workdir: Path) -> LoadResult:
    script = workdir / "post.lua"
    script.write_text(_lua(body))
    # One wrk thread drives all connections from one core; the server gets the other.
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if rps is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failures = int(non_2xx.group(1)) if non_2xx else 0
    failures += sum(int(n) for n in errors.groups()) if errors else 0
    count = re.search(r"(\d+) requests in", output)
    requests = int(count.group(1)) if count else 0
    return LoadResult(float(rps.group(1)), _to_ms(p99.group(1), p99.group(2)), failures, "wrk", requests)


async def _httpx_load(url: str, body: str, connections: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Content-Type": "application/json"}
    seeds = itertools.count(_first_seed())
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                content = body.replace(SEED_MARK, str(next(seeds))) if SEED_MARK in body else body
                try:
                    response = await client.post(url, content=content, headers=headers)
                    await response.aread()
                    ok = response.is_success
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - begin)
                failures += 0 if ok else 1

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - begin
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3
    return LoadResult(len(latencies) / elapsed, p99, failures, "asyncio+httpx", len(latencies))


def post_load(url: str, body: str, *, connections: int, duration: float, workdir: Path) -> LoadResult:
    """``connections`` keep-alive connections POSTing ``body`` back to back for ``duration`` seconds.

    If ``body`` contains :data:`SEED_MARK`, every request replaces it by a different integer (counting
    up from a random start per call), so no two requests of any run carry the same body."""
    wrk = ensure_program("wrk", "wrk")
    if wrk is not None:
        return run_wrk(wrk, url, body, connections, duration, workdir)
    return asyncio.run(_httpx_load(url, body, connections, duration))
