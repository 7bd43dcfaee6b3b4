"""Do structured / deterministic inits train better than random ones? A CPU experiment anyone can rerun.

    python -m benchmarks.structured                # 8 seeds, writes docs/structured.md + docs/structured.png
    python -m benchmarks.structured --seeds 2 --epochs 3 --out /tmp/s.md   # a quick smoke run
    python -m benchmarks.structured --frames       # only the coherence-by-shape section (about a minute)

Data: scikit-learn's bundled ``digits`` (1,797 8×8 images, 10 classes), one fixed split (1,297 train,
500 test), features standardised on the training set. Models: an MLP 64→256→256→10 and a small CNN
(conv 1→16, conv 16→32, 3×3, ReLU, 2×2 max-pool, linear 512→10), SGD with momentum 0.9, batch 64,
torch on CPU with one thread. Each scheme is applied through ``init_module`` with a ``LocalClient``
(the engine in-process, bit-identical to the server); biases start at 0. A run's seed sets both the
init seed and the data order, so deterministic schemes vary only through the data order.

Recorded per scheme and model: final test accuracy (mean ± sd over seeds, range), the mean training
loss per epoch (plotted), and the coherence of the first layer's 256 rows in ℝ^64 against the Welch
bound (and of the 256×256 hidden layer, whose bound is 0). The conclusion is computed from the
numbers: Welch's t-test of each scheme against kaiming_normal, and the ratio of the spreads.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from initserve.engine.frames import coherence, welch_bound
from initserve_client import LocalClient, PatternPolicy, SchemePolicy, TorchDefaultPolicy, init_module
from initserve_client._policies import Policy
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RELU_GAIN = math.sqrt(2.0)
HE = {"nonlinearity": "relu"}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512, 10),
    )


def _gain(scheme: str, **extra: Any) -> Policy:
    return SchemePolicy(scheme, {"gain": RELU_GAIN, **extra})


@dataclass(frozen=True)
class Scheme:
    name: str
    policy: Callable[[], Policy]
    deterministic: bool = False
    models: tuple[str, ...] = ("mlp", "cnn")
    note: str = ""


# The CNN's convs: delta_orthogonal/hadamard/zero place a matrix at the centre tap; dct, haar and
# near_etf flatten (out, in·k·k) like orthogonal.
SCHEMES: tuple[Scheme, ...] = (
    Scheme("torch_default", TorchDefaultPolicy, note="U(±1/√fan_in), torch's own biases"),
    Scheme("kaiming_normal", lambda: SchemePolicy("kaiming_normal", HE), note="N(0, 2/fan_in)"),
    Scheme("orthogonal", lambda: _gain("orthogonal"), note="gain √2"),
    Scheme("hadamard_orthogonal", lambda: _gain("hadamard_orthogonal"), note="gain √2"),
    Scheme(
        "delta_orthogonal",
        lambda: PatternPolicy(
            {"[13].weight": {"scheme": "delta_orthogonal", "params": {"gain": RELU_GAIN}}},
            fallback=_gain("orthogonal"),
        ),
        models=("cnn",),
        note="both convs delta-orthogonal (gain √2), the linear head orthogonal",
    ),
    Scheme("zero", lambda: SchemePolicy("zero"), deterministic=True, note="ZerO, paper constant"),
    Scheme("dct", lambda: _gain("dct"), deterministic=True, note="gain √2"),
    Scheme("haar_wavelet", lambda: _gain("haar_wavelet"), deterministic=True, note="gain √2"),
    Scheme("near_etf", lambda: _gain("near_etf"), note="unit rows × √2 (He row norm)"),
    Scheme(
        "frames",
        lambda: PatternPolicy(
            {
                "0.weight": {"scheme": "near_etf", "params": {"gain": RELU_GAIN}},
                "2.weight": {"scheme": "hadamard_orthogonal", "params": {"gain": RELU_GAIN}},
                "4.weight": {"scheme": "simplex_etf", "params": {"rotation": "none"}},
            },
            fallback=SchemePolicy("zeros"),
        ),
        models=("mlp",),
        note="near-ETF 256×64, Hadamard 256×256, fixed-form simplex-ETF head",
    ),
)


@dataclass
class Result:
    accuracy: list[float] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    coherence: list[tuple[float, float]] = field(default_factory=list)  # (layer 0 μ/Welch, layer 2 μ)
    seconds: float = 0.0


def load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    x, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1297], order[1297:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    x = (x - mean) / std
    as_float = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_float(x[train]), torch.tensor(y[train]), as_float(x[test]), torch.tensor(y[test])


def train_once(
    model_name: str, scheme: Scheme, seed: int, data: tuple[torch.Tensor, ...], epochs: int, client: LocalClient
) -> tuple[float, list[float], tuple[float, float]]:
    x_train, y_train, x_test, y_test = data
    model = mlp() if model_name == "mlp" else cnn()
    init_module(model, client=client, seed=seed, policy=scheme.policy())
    frame = (math.nan, math.nan)
    if model_name == "mlp":
        first = model[0].weight.detach().double().numpy()  # 256 rows in ℝ^64
        hidden = model[2].weight.detach().double().numpy()
        frame = (coherence(first)[0] / welch_bound(256, 64), coherence(hidden)[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        total, batches = 0.0, 0
        model.train()
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / batches)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return accuracy, losses, frame


def welch_t(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (scipy), NaN when both samples are constant."""
    import warnings

    from scipy import stats

    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly identical samples: the p-value says so
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def write_report(
    results: dict[tuple[str, str], Result], args: argparse.Namespace, elapsed: float, plot: Path | None
) -> str:
    seeds = args.seeds
    lines = [
        "# Structured and deterministic inits on a small task",
        "",
        "Do deterministic bases (DCT, Haar, Hadamard, ZerO) or maximally spread rows (near-ETF frames)",
        "train differently from random inits? Measured by `benchmarks/structured.py` (docstring: data,",
        "models, optimiser). Reproduce with:",
        "",
        "```sh",
        f"python -m benchmarks.structured --seeds {seeds} --epochs {args.epochs} --cnn-epochs {args.cnn_epochs}",
        "```",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, torch {torch.__version__} "
        f"(1 thread), {seeds} seeds per cell, {elapsed / 60:.1f} min in all. A seed sets the init and the data order.",
        "",
        "## Final test accuracy (%)",
        "",
        "| scheme | MLP mean ± sd | MLP range | CNN mean ± sd | CNN range | first layer μ/Welch "
        "| hidden μ (bound 0) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scheme in SCHEMES:
        cells = []
        for model in ("mlp", "cnn"):
            result = results.get((scheme.name, model))
            if result is None:
                cells += ["–", "–"]
                continue
            acc = result.accuracy
            cells += [_fmt(acc), f"{100 * min(acc):.2f}–{100 * max(acc):.2f}"]
        mlp_result = results.get((scheme.name, "mlp"))
        if mlp_result is not None:
            ratios = [c[0] for c in mlp_result.coherence]
            hidden = [c[1] for c in mlp_result.coherence]
            cells += [f"{statistics.mean(ratios):.2f}", f"{statistics.mean(hidden):.3f}"]
        else:
            cells += ["–", "–"]
        kind = "deterministic; " if scheme.deterministic else ""
        lines.append(f"| `{scheme.name}` | " + " | ".join(cells) + f" | {kind}{scheme.note} |")
    lines += [
        "",
        f"Welch bound for 256 unit vectors in ℝ^64: {welch_bound(256, 64):.4f}. The first-layer column is the",
        "coherence of the MLP's 256×64 weight rows over the Welch bound (mean over seeds); the hidden column is",
        "the 256×256 layer's coherence (orthonormal rows reach 0).",
        "",
    ]
    if plot is not None:
        lines += [f"![mean training loss per epoch]({plot.name})", ""]
    lines += ["## What the numbers say", ""]
    lines += conclusion(results)
    return "\n".join(lines) + "\n"


def conclusion(results: dict[tuple[str, str], Result]) -> list[str]:
    out = []
    for model in ("mlp", "cnn"):
        base = results[("kaiming_normal", model)].accuracy
        ranked = sorted(
            ((statistics.mean(r.accuracy), name) for (name, m), r in results.items() if m == model), reverse=True
        )
        best_mean, best = ranked[0]
        significant, worse = [], []
        for (name, m), r in results.items():
            if m != model or name == "kaiming_normal":
                continue
            p = welch_t(r.accuracy, base)
            delta = statistics.mean(r.accuracy) - statistics.mean(base)
            if not math.isnan(p) and p < 0.05:
                (significant if delta > 0 else worse).append(f"`{name}` ({100 * delta:+.2f} points, p = {p:.3f})")
        sd_base = statistics.stdev(base)
        steadier = [
            f"`{name}` (sd {100 * statistics.stdev(r.accuracy):.2f} vs {100 * sd_base:.2f})"
            for (name, m), r in results.items()
            if m == model and name != "kaiming_normal" and statistics.stdev(r.accuracy) < 0.5 * sd_base
        ]
        label = "MLP" if model == "mlp" else "CNN"
        out.append(
            f"- **{label}:** best mean `{best}` at {100 * best_mean:.2f} %; kaiming_normal {_fmt(base)} %. "
            + (
                "Better than kaiming_normal at p < 0.05 (Welch's t, uncorrected for the "
                f"{len(ranked) - 1} comparisons): {', '.join(significant)}. "
                if significant
                else "No scheme beats kaiming_normal at p < 0.05 (Welch's t). "
            )
            + (f"Worse at p < 0.05: {', '.join(worse)}. " if worse else "")
            + (f"Less than half its run-to-run sd: {', '.join(steadier)}." if steadier else "")
        )
    out += [
        "",
        "Deterministic schemes vary only through the data order here; random ones through both the init and",
        "the order. A spread that shrinks with a deterministic init is reproducibility, not accuracy.",
    ]
    return out


def plot_losses(results: dict[tuple[str, str], Result], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, model in zip(axes, ("mlp", "cnn"), strict=True):
        for (name, m), result in sorted(results.items()):
            if m != model:
                continue
            mean = np.mean(np.array(result.losses), axis=0)
            axis.plot(np.arange(1, len(mean) + 1), mean, label=name, linewidth=1.2)
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel("mean training loss")
        axis.set_title("MLP 64-256-256-10" if model == "mlp" else "CNN 16-32 conv + linear")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


FRAME_SHAPES = ((32, 16), (128, 64), (256, 64), (512, 128))  # (N vectors, m dimensions), as next-wave.md
FRAMES_START, FRAMES_END = "<!-- frames start -->", "<!-- frames end -->"


def frame_table(seed: int = 0) -> str:
    """Coherence / Welch of N×m weights (torch layout: N output units in ℝ^m) per scheme, one seed,
    and the CPU time near_etf took (default 500 steps; all of this process's threads)."""
    from initserve.engine import generate, parse_spec

    schemes = ("kaiming_normal", "orthogonal", "hadamard_orthogonal", "dct", "near_etf")
    lines = [
        FRAMES_START,
        "## Coherence against the Welch bound, by shape",
        "",
        "Rows of an N×m weight as N vectors in ℝ^m (coherence / Welch bound; seed 0). Reproduce with",
        "`python -m benchmarks.structured --frames` (rewrites this section only).",
        "",
        "| N × m | Welch | " + " | ".join(f"`{name}`" for name in schemes) + " | near_etf CPU s |",
        "|---|---|" + "---|" * len(schemes) + "---|",
    ]
    for n, m in FRAME_SHAPES:
        bound = welch_bound(n, m)
        cells, seconds = [], 0.0
        for name in schemes:
            started = time.process_time()
            w = np.asarray(generate(parse_spec({"shape": [n, m], "scheme": name, "seed": seed, "dtype": "float64"})))
            if name == "near_etf":
                seconds = time.process_time() - started
            cells.append(f"{coherence(w.reshape(n, m))[0] / bound:.2f}")
        lines.append(f"| {n} × {m} | {bound:.4f} | " + " | ".join(cells) + f" | {seconds:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", FRAMES_END]
    return "\n".join(lines) + "\n"


def write_frames(path: Path) -> None:
    """Insert or replace the frames section of ``path``."""
    text = path.read_text() if path.exists() else ""
    section = frame_table()
    if FRAMES_START in text and FRAMES_END in text:
        head, rest = text.split(FRAMES_START, 1)
        text = head + section + rest.split(FRAMES_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="MLP epochs")
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "structured.md")
    parser.add_argument("--only", nargs="*", default=None, help="scheme names to run (default: all)")
    parser.add_argument("--frames", action="store_true", help="only (re)compute the coherence-by-shape section")
    args = parser.parse_args(argv)
    if args.frames:
        write_frames(args.out)
        print(f"wrote the frames section of {args.out}")
        return 0
    torch.set_num_threads(1)
    data = load_digits()
    client = LocalClient(threads=1)
    results: dict[tuple[str, str], Result] = {}
    started = time.perf_counter()
    for scheme in SCHEMES:
        if args.only and scheme.name not in args.only:
            continue
        for model in scheme.models:
            result = Result()
            cell_start = time.perf_counter()
            for seed in range(args.seeds):
                epochs = args.epochs if model == "mlp" else args.cnn_epochs
                accuracy, losses, frame = train_once(model, scheme, seed, data, epochs, client)
                result.accuracy.append(accuracy)
                result.losses.append(losses)
                result.coherence.append(frame)
            result.seconds = time.perf_counter() - cell_start
            results[(scheme.name, model)] = result
            print(f"{scheme.name:20s} {model}: {_fmt(result.accuracy)} %  ({result.seconds:.1f} s)", flush=True)
    elapsed = time.perf_counter() - started
    plot = plot_losses(results, args.out.with_suffix(".png"))
    previous = args.out.read_text() if args.out.exists() else ""
    report = write_report(results, args, elapsed, plot)
    if FRAMES_START in previous and FRAMES_END in previous:  # keep the last --frames section
        report += "\n" + FRAMES_START + previous.split(FRAMES_START, 1)[1].split(FRAMES_END, 1)[0] + FRAMES_END + "\n"
    args.out.write_text(report)
    print(f"wrote {args.out}" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
