"""The input–output Jacobian J = ∂x_L/∂x_0 at one input, and its singular values.

J = Π_l (D_l W_l), D_l = diag φ′(h_l) (residual layers: I + α D_l W_l), built layer by layer as a dense
n_L × n_0 matrix (widths ≤ 1024) and decomposed by LAPACK's SVD. Mean-field (Pennington, Schoenholz,
Ganguli 2017): the mean of s² over the spectrum is Π_l χ_l, which is χ₁^L on the fixed point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .request import LayerArch

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JacobianSpectrum:
    singular_values: list[float]  # descending
    mean_s2: float
    condition: float  # s_max / s_min; inf when J is singular to working precision
    numerical_rank: int  # singular values above s_max · max(n_L, n_0) · ε


def jacobian_spectrum(
    x0: F64,
    layers: Sequence[LayerArch],
    weight: Callable[[int], F64],
    check: Callable[[], None],
) -> JacobianSpectrum:
    """Spectrum of J at the input row ``x0`` (units,); ``weight(l)`` gives W_l (float64); ``check()``
    runs between layers (it raises to cancel)."""
    x = x0.astype(np.float64)
    jac = np.eye(x.shape[0])
    for index, layer in enumerate(layers):
        check()
        w = weight(index)
        h = w @ x
        slope = layer.activation.derivative(h)
        step = slope[:, None] * (w @ jac)
        if layer.residual is None:
            jac = step
            x = layer.activation.forward(h)
        else:
            jac = jac + layer.residual * step
            x = x + layer.residual * layer.activation.forward(h)
    if not np.isfinite(jac).all():
        # The product overflowed float64 (an exploding network): LAPACK cannot decompose inf/NaN, and
        # no singular value is known; the mean s² is then infinite.
        return JacobianSpectrum([math.nan] * min(jac.shape), math.inf, math.nan, 0)
    s = np.linalg.svd(jac, compute_uv=False)
    s_max, s_min = float(s[0]), float(s[-1])
    # Below s_max·n·ε a singular value is rounding noise (ReLU's zeros in D make J exactly singular):
    # report an infinite condition rather than the noise's ratio.
    tolerance = s_max * max(jac.shape) * float(np.finfo(np.float64).eps)
    rank = int(np.count_nonzero(s > tolerance))
    condition = s_max / s_min if s_min > tolerance else math.inf
    mean_s2 = float(np.sum(jac * jac)) / jac.shape[1]  # mean over the n_0 input directions
    return JacobianSpectrum([float(v) for v in s], mean_s2, condition, rank)
