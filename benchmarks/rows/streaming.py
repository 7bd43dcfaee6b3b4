"""B6, B8, B9: streamed tensor URLs with curl — vs nginx, ranged vs full, and the server's memory."""

from __future__ import annotations

from functools import partial
from itertools import count
from typing import Any

import numpy as np

from benchmarks.context import Context
from benchmarks.http import curl, resolve
from benchmarks.measure import Series, interleaved
from benchmarks.model import Row, Target, ratios
from benchmarks.procfs import peak_rss_mib, rss_mib
from benchmarks.servers import start_nginx, start_service

GIB_SHAPE = [16384, 16384]  # 1 GiB of float32
QUICK_SHAPE = [4096, 4096]  # 64 MiB
B9_SHAPE = [32768, 32768]  # 4 GiB
B9_QUICK_SHAPE = [16384, 16384]


def _spec(shape: list[int], seed: int) -> dict[str, Any]:
    return {"shape": shape, "scheme": "kaiming_normal", "dtype": "float32", "seed": seed}


def nginx_row(ctx: Context) -> Row:
    """B6: GET of a never-requested tensor URL vs nginx sending a pre-made file of the same length."""
    shape = QUICK_SHAPE if ctx.quick else GIB_SHAPE
    base_url = ctx.service().url
    seeds = count(6000)
    length = int(resolve(base_url, _spec(shape, 0))["content_length"])
    root = ctx.workdir / "static"
    root.mkdir(exist_ok=True)
    for readable in (ctx.workdir, root):  # nginx workers run as an unprivileged user when started as root
        readable.chmod(0o755)
    # Content is irrelevant to nginx; the file is freshly written, so it sits in the page cache.
    np.ones(length, dtype=np.uint8).tofile(root / "tensor.bin")
    with start_nginx(ctx.workdir / "nginx", root) as nginx:
        ctx.log(f"B6: nginx pid {nginx.pid} on {nginx.url}; {length / 2**30:.2f} GiB, {ctx.repeats} rounds")

        def initserve_round() -> float:
            url = base_url + resolve(base_url, _spec(shape, next(seeds)))["url"]
            return curl(url).gbytes_per_s

        def nginx_round() -> float:
            return curl(nginx.url + "/tensor.bin").gbytes_per_s

        served, static = interleaved([initserve_round, nginx_round], ctx.repeats)
    (root / "tensor.bin").unlink()
    return Row(
        key="B6 stream vs nginx",
        title=f"curl GET of a fresh (never requested) {length / 2**30:.2f} GiB tensor URL vs curl of nginx "
        "(sendfile, 1 worker) serving a pre-made file of the same length",
        initserve=Series(tuple(served), "GB/s"),
        anchor=Series(tuple(static), "GB/s"),
        ratios=ratios(served, static),
        ratio_meaning="initserve GB/s ÷ nginx GB/s",
        target=Target(">=", 0.5),
    )


def range_row(ctx: Context) -> Row:
    """B8: a Range request for 1/16 of a tensor file vs the whole file (each round a new tensor)."""
    shape = QUICK_SHAPE if ctx.quick else GIB_SHAPE
    base_url = ctx.service().url
    seeds = count(8000)

    def one_round(round_: int) -> tuple[float, float]:
        resolved = resolve(base_url, _spec(shape, next(seeds)))
        url, length = base_url + resolved["url"], int(resolved["content_length"])
        span = length // 16
        first = (length - span) // 2  # the middle sixteenth
        ranged = partial(curl, url, headers={"Range": f"bytes={first}-{first + span - 1}"}, expect_status=206)
        if round_ % 2:  # alternate the order: neither side always runs first
            part = ranged()
            whole = curl(url)
        else:
            whole = curl(url)
            part = ranged()
        if part.size != span or whole.size != length:
            raise RuntimeError(f"B8: got {part.size} and {whole.size} bytes, expected {span} and {length}")
        return part.seconds, whole.seconds

    ctx.log(f"B8: 1/16 range vs full GET of {shape[0]}×{shape[1]} f32, {ctx.repeats} rounds")
    one_round(1)  # warm-up
    ranged_s, full_s = (list(side) for side in zip(*(one_round(i) for i in range(ctx.repeats)), strict=True))
    return Row(
        key="B8 range 1/16",
        title=f"curl GET with Range of the middle 1/16 of a fresh {shape[0]}×{shape[1]} f32 tensor URL "
        "vs the full GET of the same URL",
        initserve=Series(tuple(ranged_s), "s"),
        anchor=Series(tuple(full_s), "s"),
        ratios=ratios(ranged_s, full_s),
        ratio_meaning="range s ÷ full s",
        target=Target("<=", 0.1),
    )


def rss_row(ctx: Context) -> Row:
    """B9: VmHWM of a fresh server process that streams one 4 GiB tensor (one server per round)."""
    shape = B9_QUICK_SHAPE if ctx.quick else B9_SHAPE
    rounds = min(ctx.repeats, 3)
    peaks: list[float] = []
    baselines: list[float] = []
    rates: list[float] = []
    for round_ in range(rounds):
        with start_service(ctx.workdir) as server:
            resolved = resolve(server.url, _spec(shape, 9000 + round_))
            baselines.append(rss_mib(server.pid))
            transfer = curl(server.url + resolved["url"])
            peaks.append(peak_rss_mib(server.pid))
            rates.append(transfer.gbytes_per_s)
            ctx.log(f"B9 round {round_ + 1}: peak {peaks[-1]:.0f} MiB, start {baselines[-1]:.0f} MiB")
    length_gib = int(resolved["content_length"]) / 2**30
    return Row(
        key="B9 server peak RSS",
        title=f"peak resident memory (VmHWM) of a fresh server process streaming a {length_gib:.1f} GiB tensor "
        f"to curl; {rounds} rounds, a new server each",
        initserve=Series(tuple(peaks), "MiB"),
        anchor=None,
        ratios=tuple(peaks),
        ratio_meaning="absolute: MiB",
        target=Target("<=", 200, " MiB"),
        notes=[
            f"RSS after start-up and one /v1/resolve: {min(baselines):.0f}–{max(baselines):.0f} MiB; "
            f"stream rate {min(rates):.2f}–{max(rates):.2f} GB/s"
        ],
    )
