"""B7: many small POST /v1/init requests vs a FastAPI endpoint returning the same bytes pre-made."""

from __future__ import annotations

import json

from benchmarks.bytes_app import SMALL_SPEC
from benchmarks.context import Context
from benchmarks.load import LoadResult, post_load
from benchmarks.measure import Series, interleaved
from benchmarks.model import Row, Target, ratios
from benchmarks.servers import start_bytes_app

CONNECTIONS = 32


def small_request_rows(ctx: Context) -> list[Row]:
    duration = 2.0 if ctx.quick else 5.0
    body = json.dumps(SMALL_SPEC, separators=(",", ":"))
    service = ctx.service()
    results: dict[str, list[LoadResult]] = {"initserve": [], "premade": []}
    with start_bytes_app(ctx.workdir) as premade:
        ctx.log(
            f"B7: {CONNECTIONS} connections, {duration:g} s per run, {ctx.repeats} rounds (bytes app pid {premade.pid})"
        )

        def load(name: str, url: str) -> float:
            result = post_load(url + "/v1/init", body, connections=CONNECTIONS, duration=duration, workdir=ctx.workdir)
            results[name].append(result)
            return result.requests_per_s

        interleaved([lambda: load("initserve", service.url), lambda: load("premade", premade.url)], ctx.repeats)
    # Drop the warm-up runs (the first of each list).
    ours, theirs = results["initserve"][1:], results["premade"][1:]
    tool = ours[0].tool
    failures = sum(r.failures for r in ours), sum(r.failures for r in theirs)
    notes = [
        f"load generator: {tool}, 1 thread, {CONNECTIONS} keep-alive connections, {duration:g} s per run; "
        f"failed responses: initserve {failures[0]}, pre-made {failures[1]}",
        "initserve runs with INITSERVE_MAX_CONCURRENT_GENERATIONS=64 (the default 4 would answer most of 32 "
        "concurrent requests with 503)",
    ]
    our_rps, their_rps = [r.requests_per_s for r in ours], [r.requests_per_s for r in theirs]
    our_p99, their_p99 = [r.p99_ms for r in ours], [r.p99_ms for r in theirs]
    title = (
        f"POST /v1/init 256×256 f32 ({CONNECTIONS} connections) vs a FastAPI endpoint returning the same "
        "bytes pre-made, same uvicorn options"
    )
    return [
        Row(
            key="B7 small req/s",
            title=title,
            initserve=Series(tuple(our_rps), "req/s"),
            anchor=Series(tuple(their_rps), "req/s"),
            ratios=ratios(our_rps, their_rps),
            ratio_meaning="initserve req/s ÷ pre-made req/s",
            target=Target(">=", 0.8),
            notes=notes,
        ),
        Row(
            key="B7 small p99",
            title=title,
            initserve=Series(tuple(our_p99), "ms"),
            anchor=Series(tuple(their_p99), "ms"),
            ratios=ratios(our_p99, their_p99),
            ratio_meaning="initserve p99 ÷ pre-made p99",
            target=Target("<=", 1.5),
        ),
    ]
