"""Golden vectors: ``python -m tests.engine.golden_tool`` prints them (``--write N`` records version N once).

Each vector is a spec, the sha256 of its tensor bytes and its first 8 stored values as hex bit
patterns. ``golden_v1.json`` was written once for algorithm 1 (its specs name no algorithm: they are
canonical-form era specs and are evaluated as algorithm 1); ``golden_v2.json`` holds what algorithm 2
changed — orthogonal — with ``"algorithm": 2`` spelled out. They must never change: a change of bytes
needs a new algorithm version (docs/determinism.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from initserve.engine import IMPLICIT_ALGORITHM, KERNEL_CHOICES, Kernel, generate, parse_spec, resolve_kernel

GOLDEN_FILE = Path(__file__).with_name("golden_v1.json")
GOLDEN_FILES = {1: GOLDEN_FILE, 2: Path(__file__).with_name("golden_v2.json")}
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
    # keras' STFT initializer, appended: the vectors above are unchanged.
    {"shape": [16, 1, 9], "scheme": "stft", "layout": "keras", "dtype": "float64"},
    {
        "shape": [9, 1, 16],
        "scheme": "stft",
        "layout": "torch",
        "params": {"side": "imag", "window": "hamming", "scaling": "spectrum", "periodic": True},
    },
    {
        "shape": [31, 1, 17],
        "scheme": "stft",
        "layout": "keras",
        "params": {"window": "blackman", "scaling": "none"},
        "dtype": "float16",
    },
    {"shape": [12, 1, 7], "scheme": "stft", "layout": "keras", "params": {"window": "boxcar", "periodic": True}},
    {
        "shape": [8, 1, 5],
        "scheme": "stft",
        "layout": "keras",
        "params": {"side": "imag", "window": "none"},
        "dtype": "float64",
    },
    {"shape": [64, 1, 33], "scheme": "stft", "layout": "keras", "params": {"side": "imag"}, "slice": [[10, 30]]},
]


# Algorithm 2 changed orthogonal only: square (the last reflector is the identity), tall, wide, several
# panels and a narrow last panel, conv flattening in both layouts, every dtype, gain, a slice.
SPECS_V2: list[dict[str, Any]] = [
    {"shape": [4, 4], "scheme": "orthogonal", "seed": 0, "dtype": "float64", "algorithm": 2},
    {"shape": [3, 7], "scheme": "orthogonal", "seed": 1, "dtype": "float64", "algorithm": 2},
    {"shape": [70, 33], "scheme": "orthogonal", "seed": 2, "dtype": "float64", "params": {"gain": 1.5}, "algorithm": 2},
    {"shape": [40, 96], "scheme": "orthogonal", "seed": 3, "name": "rnn.weight_hh", "algorithm": 2},
    {"shape": [16, 4, 3, 3], "scheme": "orthogonal", "seed": 4, "dtype": "bfloat16", "algorithm": 2},
    {"shape": [3, 3, 16, 8], "scheme": "orthogonal", "seed": 5, "dtype": "float16", "layout": "keras", "algorithm": 2},
    {"shape": [96, 80], "scheme": "orthogonal", "seed": 6, "dtype": "float64", "algorithm": 2},
    {"shape": [33, 1], "scheme": "orthogonal", "seed": 7, "dtype": "float64", "algorithm": 2},
    {"shape": [1, 5], "scheme": "orthogonal", "seed": 2**64 - 1, "algorithm": 2},
    {"shape": [50, 40], "scheme": "orthogonal", "seed": 9, "slice": [[10, 20]], "algorithm": 2},
]
SPECS_BY_VERSION = {1: SPECS, 2: SPECS_V2}


def vector(body: dict[str, Any], kernel: Kernel | None = None) -> dict[str, Any]:
    spec = parse_spec(body, default_algorithm=IMPLICIT_ALGORITHM)
    data = generate(spec, kernel=kernel).reshape(-1)
    head = [format(int(bits), f"0{2 * data.itemsize}x") for bits in data[:HEAD].view(f"<u{data.itemsize}")]
    return {"spec": body, "numel": spec.numel, "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "head": head}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=int, choices=sorted(GOLDEN_FILES), help="record version N (once, when new)")
    parser.add_argument("--kernel", choices=KERNEL_CHOICES, default="auto", help="which kernel generates them")
    args = parser.parse_args(argv)
    kernel = resolve_kernel(args.kernel)
    if args.write:
        vectors = [vector(body, kernel) for body in SPECS_BY_VERSION[args.write]]
        GOLDEN_FILES[args.write].write_text(json.dumps(vectors, indent=1) + "\n")
        return 0
    json.dump({str(v): [vector(body, kernel) for body in specs] for v, specs in SPECS_BY_VERSION.items()}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
