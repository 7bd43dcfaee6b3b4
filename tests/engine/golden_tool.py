"""Golden vectors of algorithm 1: ``python -m tests.engine.golden_tool --check`` (or ``--write`` once).

Each vector is a spec, the sha256 of its tensor bytes and its first 8 stored values as hex bit
patterns. They were written once for algorithm 1 and must never change: a change of bytes needs a
new algorithm version (docs/determinism.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from initserve.engine import KERNEL_CHOICES, Kernel, generate, parse_spec, resolve_kernel

GOLDEN_FILE = Path(__file__).with_name("golden_v1.json")
HEAD = 8

SPECS: list[dict[str, Any]] = [
    {"shape": [4, 5], "scheme": "normal", "seed": 0},
    {"shape": [3, 7], "scheme": "uniform", "seed": 2**64 - 1, "dtype": "float64", "name": "layer.0.weight"},
    {"shape": [16, 8], "scheme": "kaiming_uniform", "seed": 42},
    {
        "shape": [8, 8, 3, 3],
        "scheme": "kaiming_normal",
        "seed": 7,
        "dtype": "float16",
        "params": {"mode": "fan_out", "nonlinearity": "relu"},
    },
    {"shape": [33], "scheme": "truncated_normal", "seed": 123, "dtype": "bfloat16", "params": {"std": 0.02}},
    {"shape": [3, 3, 4, 8], "scheme": "he_normal", "seed": 5, "layout": "keras"},
    {"shape": [64, 32], "scheme": "glorot_uniform", "seed": 9, "layout": "keras", "dtype": "float64"},
    {
        "shape": [6, 10],
        "scheme": "variance_scaling",
        "seed": 11,
        "dtype": "bfloat16",
        "params": {"scale": 2.0, "mode": "fan_geo_avg", "distribution": "normal"},
    },
    {"shape": [10, 20], "scheme": "torch_default", "seed": 1, "name": "fc.weight"},
    {"shape": [5, 6], "scheme": "uniform_unit_scaling", "seed": 3, "params": {"factor": 1.43}},
    {
        "shape": [3, 4],
        "scheme": "truncated_normal",
        "seed": 17,
        "dtype": "float64",
        "params": {"mean": 0.0, "std": 1.0, "low": 1.5, "high": 3.0},
    },
    {"shape": [256, 4], "scheme": "normal", "seed": 2024, "dtype": "float64", "params": {"mean": 1.0, "std": 3.0}},
    {"shape": [100, 50], "scheme": "normal", "seed": 8, "slice": [[10, 20], [5, 9]]},
    {"shape": [20, 10], "scheme": "sparse", "seed": 4, "params": {"sparsity": 0.3}},
    {"shape": [3, 5], "scheme": "eye", "dtype": "float16"},
    {"shape": [4, 2, 3], "scheme": "dirac", "params": {"groups": 2}, "dtype": "bfloat16"},
    # Structured schemes (issue 16), appended: the vectors above are unchanged.
    {"shape": [12, 20], "scheme": "hadamard_orthogonal", "seed": 5, "params": {"gain": 1.3}},
    {"shape": [3, 3, 4, 8], "scheme": "hadamard_orthogonal", "seed": 6, "layout": "keras", "dtype": "float16"},
    {"shape": [10, 6], "scheme": "zero", "dtype": "float64"},
    {"shape": [8, 3, 3, 3], "scheme": "zero", "params": {"constant": "official_code"}},
    {"shape": [8, 4, 3], "scheme": "delta_orthogonal", "seed": 12, "params": {"base": "hadamard", "gain": 2.0}},
    {"shape": [10, 16], "scheme": "simplex_etf", "seed": 13, "params": {"rotation": "hadamard"}, "dtype": "float64"},
    {"shape": [5, 7], "scheme": "simplex_etf", "params": {"rotation": "none"}},
    {"shape": [24, 8], "scheme": "near_etf", "seed": 3, "dtype": "float64"},
    {"shape": [6, 10], "scheme": "haar_wavelet"},
    {"shape": [5, 12], "scheme": "dct", "dtype": "float64"},
    {"shape": [16, 16], "scheme": "dct", "params": {"gain": 1.5}, "dtype": "bfloat16"},
]


def vector(body: dict[str, Any], kernel: Kernel | None = None) -> dict[str, Any]:
    spec = parse_spec(body)
    data = generate(spec, kernel=kernel).reshape(-1)
    head = [format(int(bits), f"0{2 * data.itemsize}x") for bits in data[:HEAD].view(f"<u{data.itemsize}")]
    return {"spec": body, "numel": spec.numel, "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "head": head}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="record the vectors (only for a new algorithm)")
    parser.add_argument("--kernel", choices=KERNEL_CHOICES, default="auto", help="which kernel generates them")
    args = parser.parse_args(argv)
    kernel = resolve_kernel(args.kernel)
    vectors = [vector(body, kernel) for body in SPECS]
    if args.write:
        GOLDEN_FILE.write_text(json.dumps(vectors, indent=1) + "\n")
        return 0
    json.dump(vectors, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
