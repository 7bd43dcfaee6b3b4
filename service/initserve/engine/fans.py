"""Fans per layout, and torch's ``calculate_gain``.

torch layout: 2-D ``(out, in)``, N-D ``(out, in, *k)``: fan_in = in·∏k, fan_out = out·∏k.
keras layout (jax uses the same): 2-D ``(in, out)``, N-D ``(*k, in, out)``: fan_in = in·∏k, fan_out = out·∏k.
For rank < 2 keras uses (1, 1) for scalars and (n, n) for vectors; torch refuses them — which rule
applies is the scheme's choice (see catalog.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LAYOUTS = ("torch", "keras")

NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)


def compute_fans(shape: Sequence[int], layout: str) -> tuple[int, int]:
    """(fan_in, fan_out) of a tensor of rank ≥ 1 in the given layout (keras rule for rank 0/1)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if layout == "torch":
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def calculate_gain(nonlinearity: str, negative_slope: float) -> float:
    """torch.nn.init.calculate_gain: 1 (linear, conv*, sigmoid), 5/3 (tanh), √2 (relu),
    √(2/(1+a²)) (leaky_relu, a = negative_slope), 3/4 (selu)."""
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    return 1.0
