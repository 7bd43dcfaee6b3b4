"""Activations φ and their derivatives φ′, vectorised in numpy, as the diagnosis applies them.

Float64 throughout. GELU is the exact (erf) form ``x·Φ(x)``; numpy has no ``erf`` ufunc, so Φ comes
from the rational Chebyshev fit of ``erfc`` (Numerical Recipes ``erfcc``: relative error < 1.2e-7
everywhere) — far below the sampling noise of any diagnosis, and the prediction (quadrature) uses the
same function as the measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
DEFAULT_NEGATIVE_SLOPE = 0.01
_ERFC = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def erfc(x: F64) -> F64:
    """Complementary error function, relative error < 1.2e-7 (Numerical Recipes, 2nd ed., §6.2)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(z, _ERFC[-1])
    for coefficient in reversed(_ERFC[:-1]):
        poly = poly * t + coefficient
    ans: F64 = t * np.exp(-z * z + poly)
    return np.where(x >= 0.0, ans, 2.0 - ans)


def normal_cdf(x: F64) -> F64:
    """Φ(x) = erfc(−x/√2)/2."""
    result: F64 = 0.5 * erfc(-x * (1.0 / math.sqrt(2.0)))
    return result


def _sigmoid(x: F64) -> F64:
    # exp of −|x| only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    result: F64 = np.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity: ``forward(x)``, ``derivative(x)`` and the largest |φ′| (``slope_max``).

    ``odd``: φ(−x) = −φ(x) (zero-mean outputs for symmetric inputs); ``homogeneous``: φ(c·x) = c·φ(x)
    for c > 0 (the q-map is linear and every q is a fixed point of a critical net).
    """

    name: str
    forward: Callable[[F64], F64]
    derivative: Callable[[F64], F64]
    slope_max: float
    odd: bool = False
    homogeneous: bool = False
    negative_slope: float | None = None

    def label(self) -> str:
        if self.negative_slope is not None:
            return f"{self.name}({self.negative_slope:g})"
        return self.name


def _linear() -> Activation:
    return Activation("linear", lambda x: x.copy(), np.ones_like, 1.0, odd=True, homogeneous=True)


def _tanh() -> Activation:
    def derivative(x: F64) -> F64:
        t = np.tanh(x)
        result: F64 = 1.0 - t * t
        return result

    return Activation("tanh", np.tanh, derivative, 1.0, odd=True)


def _relu() -> Activation:
    return Activation(
        "relu",
        lambda x: np.maximum(x, 0.0),
        lambda x: (x > 0.0).astype(np.float64),
        1.0,
        homogeneous=True,
    )


def _leaky_relu(slope: float) -> Activation:
    return Activation(
        "leaky_relu",
        lambda x: np.where(x > 0.0, x, slope * x),
        lambda x: np.where(x > 0.0, 1.0, slope),
        max(1.0, abs(slope)),
        homogeneous=True,
        negative_slope=slope,
    )


def _selu() -> Activation:
    def forward(x: F64) -> F64:
        result: F64 = SELU_SCALE * np.where(x > 0.0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
        return result

    def derivative(x: F64) -> F64:
        result: F64 = SELU_SCALE * np.where(x > 0.0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))
        return result

    return Activation("selu", forward, derivative, SELU_SCALE * SELU_ALPHA)


def _sigmoid_activation() -> Activation:
    def derivative(x: F64) -> F64:
        s = _sigmoid(x)
        result: F64 = s * (1.0 - s)
        return result

    return Activation("sigmoid", _sigmoid, derivative, 0.25)


def _gelu() -> Activation:
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def forward(x: F64) -> F64:
        result: F64 = x * normal_cdf(x)
        return result

    def derivative(x: F64) -> F64:
        result: F64 = normal_cdf(x) + x * inv_sqrt_2pi * np.exp(-0.5 * x * x)
        return result

    # max φ′ = 1.1289 at x = √2
    return Activation("gelu", forward, derivative, 1.1289514133, homogeneous=False)


ACTIVATIONS = ("linear", "tanh", "relu", "leaky_relu", "selu", "sigmoid", "gelu")


def activation(name: str, negative_slope: float | None = None) -> Activation:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`); KeyError for another name.

    ``negative_slope`` is used by leaky_relu only (default 0.01, torch's).
    """
    if name == "leaky_relu":
        return _leaky_relu(DEFAULT_NEGATIVE_SLOPE if negative_slope is None else negative_slope)
    makers: dict[str, Callable[[], Activation]] = {
        "linear": _linear,
        "tanh": _tanh,
        "relu": _relu,
        "selu": _selu,
        "sigmoid": _sigmoid_activation,
        "gelu": _gelu,
    }
    return makers[name]()
