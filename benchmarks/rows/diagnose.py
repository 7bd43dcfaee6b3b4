"""B14: ``POST /v1/diagnose`` of a 100-layer, 512-wide tanh MLP with a batch of 256, seconds per scheme.

Issue 15's goal is absolute: ≤ 5 s per scheme on 2 cores. Each round asks the running service for one
scheme at a time (the server reports its own per-scheme time in ``seconds``; the row uses the wall time
of the request) and, interleaved, the anchor: the same probe done by hand in torch (init 100 layers
with the matching ``torch.nn.init`` function, forward with per-layer std, backward of a random
projection), which measures but predicts nothing and has no Jacobian.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import httpx

from benchmarks.context import Context
from benchmarks.measure import Series, interleaved, seconds
from benchmarks.model import Row, Target

SCHEMES = (
    ("xavier_normal", {}),
    ("kaiming_normal", {"nonlinearity": "tanh"}),
    ("orthogonal", {"gain": 1.0}),
    ("normal", {"std": 0.01}),
)


def _torch_probe(depth: int, width: int, batch: int, scheme: str) -> Callable[[], None]:
    import torch

    init: dict[str, Callable[[torch.Tensor], object]] = {
        "xavier_normal": torch.nn.init.xavier_normal_,
        "kaiming_normal": lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="tanh"),
        "orthogonal": torch.nn.init.orthogonal_,
        "normal": lambda w: torch.nn.init.normal_(w, std=0.01),
    }

    def run() -> None:
        torch.manual_seed(0)
        weights = [init[scheme](torch.empty(width, width, dtype=torch.float64)) for _ in range(depth)]
        x = torch.randn(batch, width, dtype=torch.float64, requires_grad=True)
        hidden, stds = x, []
        for w in weights:
            h = hidden @ w.T
            h.retain_grad()
            stds.append(h.std())
            hidden = torch.tanh(h)
        (hidden * torch.randn_like(hidden)).sum().backward()

    return run


def diagnose_row(ctx: Context) -> Row:
    depth, width, batch = (20, 256, 64) if ctx.quick else (100, 512, 256)
    server = ctx.service()
    per_scheme: dict[str, list[float]] = {name: [] for name, _ in SCHEMES}
    anchors: dict[str, list[float]] = {name: [] for name, _ in SCHEMES}
    with httpx.Client(base_url=server.url, timeout=600) as client:

        def request(name: str, params: dict[str, float | str]) -> float:
            body = {
                "depth": depth,
                "width": width,
                "activation": "tanh",
                "batch": batch,
                "schemes": [{"scheme": name, "params": params}],
            }

            def call() -> None:
                response = client.post("/v1/diagnose", json=body)
                response.raise_for_status()

            return seconds(call)

        actions: list[Callable[[], float]] = []
        for name, params in SCHEMES:
            actions.append(lambda name=name, params=params: request(name, params))
            actions.append(lambda name=name: seconds(_torch_probe(depth, width, batch, name)))
        results = interleaved(actions, ctx.repeats, warmup=False)
    for index, (name, _) in enumerate(SCHEMES):
        per_scheme[name] = results[2 * index]
        anchors[name] = results[2 * index + 1]
    worst = tuple(max(per_scheme[name][r] for name, _ in SCHEMES) for r in range(ctx.repeats))
    ctx.log(f"B14: worst scheme per round {', '.join(f'{v:.2f}' for v in worst)} s")
    notes = [
        "per scheme (median s, diagnose / torch by hand): "
        + ", ".join(
            f"{name} {statistics.median(per_scheme[name]):.2f} / {statistics.median(anchors[name]):.2f}"
            for name, _ in SCHEMES
        ),
        "the diagnosis also predicts every layer, histograms it, takes its effective rank, and builds and "
        f"decomposes the {width} × {width} input-output Jacobian; the torch anchor does none of that",
    ]
    return Row(
        key="B14 diagnose per scheme",
        title=f"POST /v1/diagnose, tanh MLP {depth} layers × {width}, batch {batch}, one scheme per request: "
        "the slowest scheme's seconds per round",
        initserve=Series(worst, "s"),
        anchor=None,  # the goal is absolute; the torch figures are in the notes
        ratios=worst,
        ratio_meaning="absolute: seconds per scheme (slowest of the four)",
        target=Target("<=", 5.0, " s"),
        notes=notes,
    )
