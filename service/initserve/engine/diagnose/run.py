"""Run a diagnosis: for each scheme, generate the weights, propagate the probe forward, a random
projection's gradient backward, measure every layer, predict it (mean field), judge it.

Cost per scheme ≈ 3 × Σ batch·width_l·width_(l−1) multiply-adds, one eigenvalue problem of
min(batch, width)² per layer, and (widths ≤ 1024) the Jacobian chain Σ width³ plus one SVD.
``check()`` runs between layers, so a caller can cancel (it raises).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..dtypes import to_float64
from ..generate import generate
from ..kernels import Kernel
from ..spec import ALGORITHM_VERSION, parse_spec
from . import meanfield
from .jacobian import jacobian_spectrum
from .request import DiagnoseRequest, SchemeChoice
from .statistics import HISTOGRAM_BINS, histogram_edges, measure_layer
from .verdict import judge, power

F64 = npt.NDArray[np.float64]
PROBE_NAME = "diagnose.probe"
PROJECTION_NAME = "diagnose.projection"


class Cancelled(Exception):
    """Raised by a ``check`` callback to stop a diagnosis between layers."""


def _never() -> None:
    return None


def standard_normal(shape: tuple[int, int], seed: int, name: str, kernel: Kernel | None, threads: int | None) -> F64:
    """The service's own N(0, 1) float64 tensor for (seed, name): ``/v1/init`` of that spec, bit for bit."""
    spec = parse_spec({"shape": list(shape), "scheme": "normal", "seed": seed, "dtype": "float64", "name": name})
    result: F64 = generate(spec, kernel=kernel, threads=threads).astype(np.float64, copy=False)
    return result


def diagnose(
    request: DiagnoseRequest,
    *,
    check: Callable[[], None] = _never,
    kernel: Kernel | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The diagnosis of every scheme in ``request`` (JSON-able; non-finite floats as Python floats).

    ``kernel``/``threads`` are handed to the engine's ``generate`` (the bytes do not depend on them)."""
    probe = standard_normal((request.batch, request.input_width), request.seed, PROBE_NAME, kernel, threads)
    projection = standard_normal((request.batch, request.widths[-1]), request.seed, PROJECTION_NAME, kernel, threads)
    results = [_scheme(request, choice, probe, projection, check, kernel, threads) for choice in request.schemes]
    return {
        "architecture": {
            "input_width": request.input_width,
            "depth": request.depth,
            "layers": [
                {"width": layer.width, "activation": layer.activation.label(), "residual": layer.residual}
                for layer in request.layers
            ],
        },
        "seed": request.seed,
        "batch": request.batch,
        "dtype": request.dtype,
        "algorithm": ALGORITHM_VERSION,
        "probe": {"name": PROBE_NAME, "shape": [request.batch, request.input_width], "scheme": "normal"},
        "projection": {"name": PROJECTION_NAME, "shape": [request.batch, request.widths[-1]], "scheme": "normal"},
        "histogram_edges": histogram_edges(),
        "schemes": results,
    }


def _scheme(
    request: DiagnoseRequest,
    choice: SchemeChoice,
    probe: F64,
    projection: F64,
    check: Callable[[], None],
    kernel: Kernel | None,
    threads: int | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    layers = request.layers
    stored: list[npt.NDArray[np.generic]] = []

    def weight(index: int) -> F64:
        spec = choice.specs[index]
        return to_float64(stored[index], spec.dtype_info).reshape(spec.shape)

    # Mean-field inputs: per-layer σ_w² = fan_in·Var(W) (forward) and fan_out·Var(W) (backward). The
    # theory needs zero-mean weights; a scheme whose weights have a mean (constant, eye, uniform[0,1))
    # gets no prediction.
    weight_moments = [spec.built.sampler.moments() for spec in choice.specs]
    predictable = all(m.mean == 0.0 for m in weight_moments)
    forward_s2 = [spec.shape[1] * (m.std * m.std) for spec, m in zip(choice.specs, weight_moments, strict=True)]
    backward_s2 = [spec.shape[0] * (m.std * m.std) for spec, m in zip(choice.specs, weight_moments, strict=True)]

    x = probe
    p_prev, m_prev = float(np.mean(x * x)), float(np.mean(x))
    slopes: list[npt.NDArray[np.float32]] = []
    records: list[dict[str, Any]] = []
    predicted_q: list[float | None] = []
    slope2: list[float | None] = []
    for index, layer in enumerate(layers):
        check()
        spec = choice.specs[index]
        stored.append(generate(spec, kernel=kernel, threads=threads).reshape(-1))
        w = weight(index)
        h = x @ w.T
        phi = layer.activation
        slope = phi.derivative(h)
        branch = phi.forward(h)
        x = branch if layer.residual is None else x + layer.residual * branch
        slopes.append(slope.astype(np.float32))
        measured = measure_layer(h, x, slope, phi.slope_max)
        q: float | None = None
        if predictable:
            q = forward_s2[index] * p_prev
            expect = meanfield.moments(phi, q)
            if layer.residual is None:
                p_prev, m_prev = expect.second, expect.mean
            else:
                alpha = layer.residual
                p_prev = p_prev + 2 * alpha * m_prev * expect.mean + alpha * alpha * expect.second
                m_prev = m_prev + alpha * expect.mean
            slope2.append(expect.slope2)
        predicted_q.append(q)
        records.append(
            {
                "layer": index + 1,
                "name": spec.name,
                "width": layer.width,
                "sigma_w2": forward_s2[index],
                "predicted_std": None if q is None else math.sqrt(q),
                "measured_std": measured.std,
                "measured_mean": measured.mean,
                "second_moment": measured.second_moment,
                "dead_fraction": measured.dead_fraction,
                "saturated_fraction": measured.saturated_fraction,
                "effective_rank": measured.effective_rank,
                "histogram": measured.histogram,
            }
        )

    # Backward: loss ℓ = Σ_b ⟨r_b, x_L,b⟩ with the fixed projection r, so ∂ℓ/∂x_L = r.
    g = projection
    grad_var = float(np.mean(g * g))
    for index in range(len(layers) - 1, -1, -1):
        check()
        layer = layers[index]
        alpha = 1.0 if layer.residual is None else layer.residual
        delta = (alpha * g) * slopes[index]
        records[index]["gradient_std"] = float(delta.std())
        g_in = delta @ weight(index)
        g = g_in if layer.residual is None else g + g_in
        if predictable:
            delta_var = alpha * alpha * grad_var * (slope2[index] or 0.0)
            records[index]["predicted_gradient_std"] = math.sqrt(delta_var)
            grad_var = (grad_var if layer.residual is not None else 0.0) + backward_s2[index] * delta_var
        else:
            records[index]["predicted_gradient_std"] = None
    del slopes

    summary = _summary(request, choice, records, predictable, forward_s2, probe, weight, check)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _gradient_rate(records: list[dict[str, Any]]) -> float | None:
    """Measured per-layer growth of the gradient from layer L back to layer 1: (g₁/g_L)^(1/(L−1))."""
    if len(records) < 2:
        return None
    first, last = records[0]["gradient_std"], records[-1]["gradient_std"]
    if not (first > 0.0 and last > 0.0 and math.isfinite(first) and math.isfinite(last)):
        return None
    return power(first / last, 1.0 / (len(records) - 1))


def _homogeneous(request: DiagnoseRequest, forward_s2: list[float]) -> bool:
    """One q-map for every layer: the same activation, σ_w² and no residual."""
    first = request.layers[0]
    return all(
        layer.residual is None
        and layer.activation.label() == first.activation.label()
        and math.isclose(s2, forward_s2[0], rel_tol=1e-9)
        for layer, s2 in zip(request.layers, forward_s2, strict=True)
    )


def _summary(
    request: DiagnoseRequest,
    choice: SchemeChoice,
    records: list[dict[str, Any]],
    predictable: bool,
    forward_s2: list[float],
    probe: F64,
    weight: Callable[[int], F64],
    check: Callable[[], None],
) -> dict[str, Any]:
    layers = request.layers
    depth = len(layers)
    fixed = None
    if predictable and _homogeneous(request, forward_s2):
        q1 = (records[0]["predicted_std"] or 0.0) ** 2
        fixed = meanfield.fixed_point(layers[0].activation, forward_s2[0], q1)
    chi1 = fixed.chi1 if fixed is not None else None
    rate = _gradient_rate(records)
    jacobian: dict[str, Any] | None = None
    condition: float | None = None
    if request.jacobian and request.jacobian_possible:
        x0 = probe[0]
        input_q = float(np.mean(x0 * x0))
        if request.jacobian_q is not None:
            x0 = x0 * math.sqrt(request.jacobian_q / input_q)
            input_q = request.jacobian_q
        spectrum = jacobian_spectrum(x0, layers, weight, check)
        condition = spectrum.condition
        jacobian = {
            "input_q": input_q,
            "singular_values": spectrum.singular_values,
            "condition": spectrum.condition,
            "numerical_rank": spectrum.numerical_rank,
            "mean_s2": spectrum.mean_s2,
            "predicted_mean_s2": _predicted_mean_s2(request, forward_s2, x0) if predictable else None,
            "chi1_pow_L": None if chi1 is None else power(chi1, depth),
        }
    stds = [r["measured_std"] for r in records]
    ranks = [r["effective_rank"] for r in records]
    verdict = judge(stds, ranks, rate, chi1, condition)
    band = None
    # Hanin & Rolnick's band is for ReLU at He's critical init (χ₁ = 1).
    relu_like = all(layer.activation.name == "relu" and layer.residual is None for layer in layers)
    critical = chi1 is not None and abs(chi1 - 1.0) <= 1e-6
    if (
        relu_like
        and critical
        and depth > 1
        and records[0]["second_moment"] > 0.0
        and records[-1]["second_moment"] > 0.0
    ):
        mean, sd = meanfield.hanin_band(request.widths)
        log_ratio = math.log(records[-1]["second_moment"] / records[0]["second_moment"])
        band = {"quantity": "log(q_L/q_1)", "measured": log_ratio, "mean": mean, "sd": sd, "z": (log_ratio - mean) / sd}
    ratios = [
        r["measured_std"] / r["predicted_std"] - 1.0
        for r in records
        if r["predicted_std"] and r["predicted_std"] > 0.0 and math.isfinite(r["measured_std"])
    ]
    return {
        "label": choice.label,
        "scheme": choice.scheme,
        "params": {k: v for k, v in choice.params.items() if k not in ("fan_in", "fan_out")},
        "reproducibility": choice.specs[0].scheme_entry.reproducibility,
        "predicted": predictable,
        "chi1": chi1,
        "q_star": None if fixed is None else fixed.q_star,
        "c_star": None if fixed is None else fixed.c_star,
        "chi_c": None if fixed is None else fixed.chi_c,
        "depth_scale": None if fixed is None else fixed.depth_scale,
        "gradient_rate": {
            "measured": rate,
            "predicted": None if chi1 is None else math.sqrt(chi1),
        },
        "max_abs_std_error": max((abs(v) for v in ratios), default=None),
        "hanin_band": band,
        "jacobian": jacobian,
        "verdict": {"kind": verdict.kind, "text": verdict.text, "phase": verdict.phase},
        "layers": records,
        "histogram_bins": HISTOGRAM_BINS,
    }


def _predicted_mean_s2(request: DiagnoseRequest, forward_s2: list[float], x0: F64) -> float:
    """Π_l χ_l along the q-trajectory of the Jacobian's input: the mean-field mean of s² (mean over inputs).

    χ_l = fan_out·Var(W_l)·E φ′(h_l)² (residual layers: 1 + α²·that)."""
    p = float(np.mean(x0 * x0))
    m = float(np.mean(x0))
    product = 1.0
    for layer, s2_in, width, fan_in in zip(
        request.layers, forward_s2, request.widths, [request.input_width, *request.widths[:-1]], strict=True
    ):
        q = s2_in * p
        expect = meanfield.moments(layer.activation, q)
        chi = (s2_in * width / fan_in) * expect.slope2
        if layer.residual is None:
            product *= chi
            p, m = expect.second, expect.mean
        else:
            alpha = layer.residual
            product *= 1.0 + alpha * alpha * chi
            p = p + 2 * alpha * m * expect.mean + alpha * alpha * expect.second
            m = m + alpha * expect.mean
    return product
