"""Statistical laws of every random scheme, checked against the exact law computed here.

Each expected law is built in this file from the formulas of the frameworks (fans per layout,
torch's calculate_gain, keras/jax variance scaling with the 0.8796 truncation correction, torch's
absolute truncation bounds) — never from the engine's own ``expected`` (which is compared to it
separately). For every case, on ~10⁶ float64 samples with a fixed seed:

* a one-sample KS test accepts the law (p > 1e-3) and *rejects* the same law with its spread
  scaled by 1.02 (p < 1e-6), so a 2 % error in std (or a wrong fan, gain or truncation) fails;
* mean within 6 SE (σ/√N) and variance within 6 SE (σ²·√((κ−1)/N), κ the kurtosis);
* hard support bounds: every value within the bound rounded to the output dtype, and the extreme
  values close to the bound (a too-narrow support fails too).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from initserve.engine import compute_stats, generate, parse_spec
from initserve.engine.dtypes import bfloat16_bits_to_float64
from scipy import integrate, special, stats

# Every test here runs once per kernel (numpy, native): see conftest.py.
pytestmark = pytest.mark.usefixtures("each_kernel")

F64 = npt.NDArray[np.float64]

TN_CORRECTION = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (keras/jax/TF)
KURTOSIS_UNIFORM = 1.8
KURTOSIS_NORMAL = 3.0
KURTOSIS_TN2 = 2.3655367
KS_ACCEPT = 1e-3
KS_REJECT = 1e-6
SPREAD_ERROR = 1.02
SIGMAS = 6.0

# The same conceptual conv layer in both layouts: torch (out, in, kh, kw), keras (kh, kw, in, out).
# fan_in = 90·7·13 = 8190, fan_out = 120·7·13 = 10920 in both; numel 982 800.
CONV = {"torch": (120, 90, 7, 13), "keras": (7, 13, 90, 120)}
FLAT = (1000, 1000)


# --- the oracle: fans, gains and laws from the frameworks' formulas ----------------------------
def torch_fans(shape: Sequence[int]) -> tuple[int, int]:
    """torch ``_calculate_fan_in_and_fan_out``: (out, in, *k) → (in·∏k, out·∏k)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def keras_fans(shape: Sequence[int]) -> tuple[int, int]:
    """keras ``compute_fans``: (1, 1) for scalars, (n, n) for vectors, (*k, in, out) → (in·∏k, out·∏k)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def fans_of(shape: Sequence[int], layout: str, params: Mapping[str, Any]) -> tuple[int, int]:
    fan_in, fan_out = torch_fans(shape) if layout == "torch" and len(shape) >= 2 else keras_fans(shape)
    return int(params.get("fan_in", fan_in)), int(params.get("fan_out", fan_out))


def torch_gain(nonlinearity: str, slope: float) -> float:
    """torch.nn.init.calculate_gain (kaiming passes ``a`` as the param)."""
    if nonlinearity in ("linear", "sigmoid") or nonlinearity.startswith(("conv", "conv_transpose")):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise AssertionError(f"unknown nonlinearity {nonlinearity}")


@dataclass(frozen=True)
class Law:
    """uniform on [low, high); normal N(loc, scale²); or that normal conditioned on [low, high]."""

    kind: str
    loc: float
    scale: float
    low: float = -math.inf
    high: float = math.inf

    @staticmethod
    def uniform(low: float, high: float) -> Law:
        return Law("uniform", low, high - low, low, high)

    @staticmethod
    def normal(mean: float, std: float) -> Law:
        return Law("normal", mean, std)

    @staticmethod
    def truncnorm(mean: float, std: float, low: float, high: float) -> Law:
        return Law("truncnorm", mean, std, low, high)

    @property
    def a(self) -> float:
        return (self.low - self.loc) / self.scale

    @property
    def b(self) -> float:
        return (self.high - self.loc) / self.scale

    def frozen(self) -> Any:
        if self.kind == "uniform":
            return stats.uniform(loc=self.loc, scale=self.scale)
        if self.kind == "normal":
            return stats.norm(loc=self.loc, scale=self.scale)
        return stats.truncnorm(self.a, self.b, loc=self.loc, scale=self.scale)

    def cdf(self, x: F64) -> F64:
        """The CDF; for the truncated normal (Φ(z) − Φ(a)) / (Φ(b) − Φ(a)) by ndtr, which is the
        same function as scipy's truncnorm.cdf (checked in a test) and ten times faster."""
        if self.kind != "truncnorm":
            result: F64 = self.frozen().cdf(x)
            return result
        # Mirror intervals in the upper tail so that the differences of Φ keep their precision.
        sign = -1.0 if self.a > 0 else 1.0
        lo, hi = sorted((sign * self.a, sign * self.b))
        z = sign * (x - self.loc) / self.scale
        phi_lo, phi_hi = special.ndtr(lo), special.ndtr(hi)
        inner = (special.ndtr(np.clip(z, lo, hi)) - phi_lo) / (phi_hi - phi_lo)
        return np.clip(inner if sign > 0 else 1.0 - inner, 0.0, 1.0)

    def spread(self, factor: float) -> Law:
        """The law of c + factor·(X − c), c the centre: every spread (std, bounds) × factor."""
        if self.kind == "uniform":
            centre, half = (self.low + self.high) / 2, (self.high - self.low) / 2
            return Law.uniform(centre - factor * half, centre + factor * half)
        low, high = self.loc + factor * (self.low - self.loc), self.loc + factor * (self.high - self.loc)
        return Law(self.kind, self.loc, self.scale * factor, low, high)

    @property
    def mean(self) -> float:
        return self._truncated_moments()[0] if self.kind == "truncnorm" else float(self.frozen().mean())

    @property
    def std(self) -> float:
        return self._truncated_moments()[1] if self.kind == "truncnorm" else float(self.frozen().std())

    def _truncated_moments(self) -> tuple[float, float]:
        """Mean and std by quadrature of the density relative to its peak z*: free of the
        cancellation in 1 + (aφ(a) − bφ(b))/Z − shift² that costs closed forms ~8 digits in far tails.
        Beyond z* ± 40 the relative density is < e⁻⁸⁰⁰: the integrals stop there."""
        peak = min(max(0.0, self.a), self.b)
        lo, hi = max(self.a, peak - 40.0), min(self.b, peak + 40.0)

        def weight(z: float) -> float:
            return math.exp(-(z - peak) * (z + peak) / 2)

        def integral(f: Callable[[float], float], epsabs: float = 0.0) -> float:
            return float(integrate.quad(f, lo, hi, epsabs=epsabs, epsrel=1e-12, limit=200)[0])

        mass = integral(weight)
        # The first moment may be 0 (symmetric intervals): an absolute tolerance, scaled to the mass.
        shift = integral(lambda z: z * weight(z), 1e-13 * mass * (1 + abs(peak))) / mass
        variance = integral(lambda z: (z - shift) ** 2 * weight(z)) / mass
        return self.loc + self.scale * shift, self.scale * math.sqrt(variance)

    @property
    def kurtosis(self) -> float:
        if self.kind == "uniform":
            return KURTOSIS_UNIFORM
        if self.kind == "normal":
            return KURTOSIS_NORMAL
        return float(self.frozen().stats(moments="k")) + 3.0

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


VS_SPEC = {  # keras/jax named variance-scaling schemes: (scale, mode, distribution)
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
}


def variance_scaling_law(scale: float, mode: str, distribution: str, fan_in: int, fan_out: int) -> Law:
    """keras VarianceScaling / jax variance_scaling, in keras' order of operations."""
    n = {
        "fan_in": float(fan_in),
        "fan_out": float(fan_out),
        "fan_avg": (fan_in + fan_out) / 2.0,
        "fan_geo_avg": math.sqrt(float(fan_in) * float(fan_out)),
    }[mode]
    scale = scale / max(1.0, n)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * scale)
        return Law.uniform(-limit, limit)
    if distribution in ("normal", "untruncated_normal"):  # jax: untruncated
        return Law.normal(0.0, math.sqrt(scale))
    stddev = math.sqrt(scale) / TN_CORRECTION
    return Law.truncnorm(0.0, stddev, -2.0 * stddev, 2.0 * stddev)


def expected_law(scheme: str, params: Mapping[str, Any], shape: Sequence[int], layout: str) -> Law:
    """The exact law of one element, from the frameworks' formulas (init-schemes.md §1, §2, §3, §5)."""
    fan_in, fan_out = fans_of(shape, layout, params)
    if scheme == "uniform":
        return Law.uniform(params.get("low", 0.0), params.get("high", 1.0))
    if scheme == "normal":
        return Law.normal(params.get("mean", 0.0), params.get("std", 1.0))
    if scheme == "truncated_normal":
        mean, std = params.get("mean", 0.0), params.get("std", 1.0)
        return Law.truncnorm(mean, std, params.get("low", mean - 2 * std), params.get("high", mean + 2 * std))
    if scheme in ("xavier_uniform", "xavier_normal"):  # torch: std = gain·√(2/(fi+fo)), bound √3·std
        std = params.get("gain", 1.0) * math.sqrt(2.0 / float(fan_in + fan_out))
        if scheme == "xavier_normal":
            return Law.normal(0.0, std)
        bound = math.sqrt(3.0) * std
        return Law.uniform(-bound, bound)
    if scheme in ("kaiming_uniform", "kaiming_normal"):  # torch: std = gain/√fan, bound √3·std
        fan = fan_in if params.get("mode", "fan_in") == "fan_in" else fan_out
        std = torch_gain(params.get("nonlinearity", "leaky_relu"), params.get("a", 0.0)) / math.sqrt(fan)
        if scheme == "kaiming_normal":
            return Law.normal(0.0, std)
        bound = math.sqrt(3.0) * std
        return Law.uniform(-bound, bound)
    if scheme in VS_SPEC:
        return variance_scaling_law(*VS_SPEC[scheme], fan_in, fan_out)
    if scheme == "variance_scaling":
        return variance_scaling_law(
            params.get("scale", 1.0),
            params.get("mode", "fan_in"),
            params.get("distribution", "truncated_normal"),
            fan_in,
            fan_out,
        )
    if scheme == "torch_default":  # nn.Linear/ConvNd: U(±1/√fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        return Law.uniform(-bound, bound)
    if scheme == "uniform_unit_scaling":
        # TF1: d = max(1, ∏shape[:-1]) (1 below rank 2) = keras fan_in; torch layout: torch's fan_in.
        if "fan_in" in params:
            size = float(params["fan_in"])
        elif len(shape) < 2:
            size = 1.0
        elif layout == "keras":
            size = max(1.0, float(math.prod(shape[:-1])))
        else:
            size = max(1.0, float(fan_in))
        max_val = math.sqrt(3 / size) * params.get("factor", 1.0)
        return Law.uniform(-max_val, max_val)
    if scheme == "sparse":  # the nonzero values
        return Law.normal(0.0, params.get("std", 0.01))
    raise AssertionError(f"no oracle for {scheme}")


# --- rounding to the output dtype, independently of the engine -----------------------------------
PRECISION = {"float32": (24, -149), "float16": (11, -24), "bfloat16": (8, -133)}  # (bits, min quantum exp)


def round_to(values: F64, dtype: str) -> F64:
    """Round float64 to ``dtype`` to nearest, ties to even, in float64: scale each value by its
    quantum 2^(e−bits) (a power of two: exact), ``rint`` (IEEE half-even), scale back."""
    if dtype == "float64":
        return np.asarray(values, dtype=np.float64)
    bits, min_quantum = PRECISION[dtype]
    x = np.asarray(values, dtype=np.float64)
    _, exponent = np.frexp(x)
    quantum = np.maximum(exponent - bits, min_quantum)
    result: F64 = np.ldexp(np.rint(np.ldexp(x, -quantum)), quantum)
    return result


def widen(array: npt.NDArray[Any], dtype: str) -> F64:
    if dtype == "bfloat16":
        return bfloat16_bits_to_float64(array.view(np.uint16)).ravel()
    return np.asarray(array, dtype=np.float64).ravel()


# --- helpers ---------------------------------------------------------------------------------------
def case_seed(label: str) -> int:
    """A fixed seed per case, stable when cases are added or removed."""
    return zlib.crc32(label.encode()) * 7919 + 17


def body(scheme: str, shape: Sequence[int], params: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"shape": list(shape), "scheme": scheme, "params": dict(params or {})}
    spec.update(fields)
    return spec


def sample(spec: Mapping[str, Any]) -> F64:
    parsed = parse_spec(spec)
    return widen(generate(parsed), parsed.dtype)


def ks_pvalue(values: F64, cdf: Callable[[F64], F64]) -> float:
    """Two-sided one-sample KS; the asymptotic Kolmogorov p-value is exact enough at n ≈ 10⁶."""
    return float(stats.kstest(values, cdf, method="asymp").pvalue)


def assert_law(values: F64, law: Law, label: str, *, dtype: str = "float64") -> None:
    """KS accept / KS reject the 2 %-spread law / mean / variance / hard support."""
    n = values.size
    p = ks_pvalue(values, law.cdf)
    assert p > KS_ACCEPT, f"{label}: KS rejects the exact law {law} (p = {p:.3g})"
    p_wrong = ks_pvalue(values, law.spread(SPREAD_ERROR).cdf)
    assert p_wrong < KS_REJECT, f"{label}: KS cannot tell the law from its spread × {SPREAD_ERROR} (p = {p_wrong:.3g})"
    mean, std, kurtosis = law.mean, law.std, law.kurtosis
    assert abs(values.mean() - mean) <= SIGMAS * std / math.sqrt(n), f"{label}: mean {values.mean()} vs {mean}"
    variance = values.var()
    se_var = std**2 * math.sqrt((kurtosis - 1.0) / n)
    assert abs(variance - std**2) <= SIGMAS * se_var, f"{label}: variance {variance} vs {std**2} (SE {se_var:.3g})"
    if math.isfinite(law.low):
        low = float(round_to(np.array([law.low]), dtype)[0])
        assert values.min() >= low, f"{label}: min {values.min()!r} below the bound {low!r}"
    if math.isfinite(law.high):
        high = float(round_to(np.array([law.high]), dtype)[0])
        assert values.max() <= high, f"{label}: max {values.max()!r} above the bound {high!r}"
    if law.bounded:
        # The extremes reach the bounds where the law puts ≥ 20 expected values within 0.1 % of the
        # support from them (P(miss) < e⁻²⁰): a support narrower than the law's fails.
        reach = 1e-3 * (law.high - law.low)
        inner_low, inner_high = law.cdf(np.array([law.low + reach, law.high - reach]))
        if inner_low * n >= 20:
            assert values.min() < law.low + reach, f"{label}: min {values.min()!r} does not reach {law.low!r}"
        if (1.0 - inner_high) * n >= 20:
            assert values.max() > law.high - reach, f"{label}: max {values.max()!r} does not reach {law.high!r}"


# --- the cases -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    label: str
    scheme: str
    shape: tuple[int, ...]
    params: Mapping[str, Any]
    layout: str = "torch"

    def spec(self, dtype: str = "float64") -> dict[str, Any]:
        return body(self.scheme, self.shape, self.params, layout=self.layout, dtype=dtype, seed=case_seed(self.label))

    @property
    def law(self) -> Law:
        return expected_law(self.scheme, self.params, self.shape, self.layout)


def _flat_cases() -> list[Case]:
    return [
        Case("uniform-default", "uniform", FLAT, {}),
        Case("uniform-shifted", "uniform", FLAT, {"low": -3.0, "high": 5.0}),
        Case("uniform-keras-default", "uniform", FLAT, {"low": -0.05, "high": 0.05}),
        Case("normal-default", "normal", FLAT, {}),
        Case("normal-shifted", "normal", FLAT, {"mean": 2.0, "std": 0.5}),
        Case("truncated_normal-default", "truncated_normal", FLAT, {}),
        Case("truncated_normal-mean-std", "truncated_normal", FLAT, {"mean": 1.0, "std": 0.02}),
        Case("truncated_normal-narrow", "truncated_normal", FLAT, {"low": -0.5, "high": 0.5}),
        Case(
            "truncated_normal-asymmetric", "truncated_normal", FLAT, {"mean": 0.5, "std": 2.0, "low": -1.0, "high": 4}
        ),
        Case("truncated_normal-upper-tail", "truncated_normal", FLAT, {"low": 1.0, "high": 3.0}),
        Case(
            "truncated_normal-lower-tail",
            "truncated_normal",
            FLAT,
            {"mean": 0.1, "std": 0.3, "low": -1.0, "high": -0.2},
        ),
        # Far tails and a mean outside the interval: the mirrored inverse-CDF path.
        Case("truncated_normal-far-upper-tail", "truncated_normal", FLAT, {"low": 5.0, "high": 7.0}),
        Case("truncated_normal-far-lower-tail", "truncated_normal", FLAT, {"low": -30.0, "high": -29.0}),
        Case(
            "truncated_normal-mean-outside", "truncated_normal", FLAT, {"mean": 3.0, "std": 0.5, "low": -1.0, "high": 0}
        ),
        # torch trunc_normal_(std=0.02) keeps its absolute bounds ±2 = ±100σ: no effective truncation.
        Case("truncated_normal-torch-absolute", "truncated_normal", FLAT, {"std": 0.02, "low": -2.0, "high": 2.0}),
    ]


FAN_SCHEMES: list[tuple[str, dict[str, Any]]] = [
    ("xavier_uniform", {}),
    ("xavier_uniform", {"gain": 2.5}),
    ("xavier_normal", {}),
    ("xavier_normal", {"gain": 0.7}),
    ("kaiming_uniform", {}),
    ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_uniform", {"nonlinearity": "tanh"}),
    ("kaiming_uniform", {"a": 0.2}),
    ("kaiming_uniform", {"a": math.sqrt(5.0)}),
    ("kaiming_normal", {}),
    ("kaiming_normal", {"mode": "fan_out", "nonlinearity": "selu"}),
    ("kaiming_normal", {"nonlinearity": "sigmoid"}),
    ("lecun_uniform", {}),
    ("lecun_normal", {}),
    ("he_uniform", {}),
    ("he_normal", {}),
    ("glorot_uniform", {}),
    ("glorot_normal", {}),
    ("torch_default", {}),
    ("uniform_unit_scaling", {}),
    ("uniform_unit_scaling", {"factor": 1.43}),
    *[
        ("variance_scaling", {"scale": scale, "mode": mode, "distribution": distribution})
        for scale in (2.5,)
        for mode in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
        for distribution in ("truncated_normal", "normal", "uniform")
    ],
    ("variance_scaling", {}),
]


def _fan_cases() -> list[Case]:
    cases = []
    for scheme, params in FAN_SCHEMES:
        for layout in ("torch", "keras"):
            tag = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            cases.append(Case(f"{scheme}[{tag}]-{layout}", scheme, CONV[layout], params, layout))
    return cases


def _override_cases() -> list[Case]:
    """Explicit fans: a 1-D bias takes its weight's fans; on a matrix they replace the shape's."""
    return [
        Case("torch_default-bias", "torch_default", (300_000,), {"fan_in": 1024}),
        Case("kaiming_normal-bias", "kaiming_normal", (1_000_000,), {"fan_in": 400, "fan_out": 100, "mode": "fan_out"}),
        Case("xavier_uniform-bias", "xavier_uniform", (300_000,), {"fan_in": 30, "fan_out": 70}),
        Case("he_uniform-override", "he_uniform", FLAT, {"fan_in": 10}),
        Case("glorot_normal-override-keras", "glorot_normal", FLAT, {"fan_in": 3, "fan_out": 5}, "keras"),
        Case("variance_scaling-bias", "variance_scaling", (500_000,), {"fan_in": 64, "fan_out": 16, "mode": "fan_out"}),
        # Without explicit fans, keras rules for low ranks: a vector of n has fans (n, n); TF1's
        # uniform_unit_scaling uses d = 1 below rank 2.
        Case("variance_scaling-vector", "variance_scaling", (500_000,), {"distribution": "uniform"}),
        Case("lecun_normal-vector", "lecun_normal", (500_000,), {}),
        Case("uniform_unit_scaling-vector", "uniform_unit_scaling", (300_000,), {"factor": 0.5}),
    ]


LAW_CASES = _flat_cases() + _fan_cases() + _override_cases()


@pytest.mark.parametrize("case", LAW_CASES, ids=lambda case: case.label)
def test_scheme_follows_its_exact_law(case: Case) -> None:
    values = sample(case.spec())
    assert values.size == math.prod(case.shape)
    assert_law(values, case.law, case.label)


# The engine evaluates truncated-normal moments in 60-digit decimal; the oracle integrates numerically,
# good to ~1e-11 in far tails: truncated laws are held to 1e-10, every other law to 1e-12.
MOMENT_TOLERANCE = {"truncnorm": 1e-10, "uniform": 1e-12, "normal": 1e-12}
EXPECTED_CASES = [case for index, case in enumerate(LAW_CASES) if index % 3 == 0 or case.law.kind == "truncnorm"]


def assert_expected_moments(expected: Mapping[str, Any], law: Law) -> None:
    tolerance = MOMENT_TOLERANCE[law.kind]
    assert abs(expected["mean"] - law.mean) <= tolerance * law.std, (expected["mean"], law.mean)
    assert expected["std"] == pytest.approx(law.std, rel=tolerance)
    for key, bound in (("low", law.low), ("high", law.high)):
        if math.isfinite(bound):
            assert expected[key] == pytest.approx(bound, rel=1e-12)
        else:
            assert expected[key] is None


@pytest.mark.parametrize("case", EXPECTED_CASES, ids=lambda case: case.label)
def test_engine_expected_moments_match_the_formulas(case: Case) -> None:
    """compute_stats' ``expected`` equals the independent formula; its figures describe the sample."""
    spec = parse_spec(case.spec())
    report = compute_stats(spec)
    law = case.law
    assert_expected_moments(report["expected"], law)
    values = widen(generate(spec), spec.dtype)
    assert report["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
    assert report["std"] == pytest.approx(values.std(), rel=1e-9)
    assert (report["min"], report["max"]) == (values.min(), values.max())


def test_sparse_nonzero_values_are_normal() -> None:
    for layout in ("torch", "keras"):
        params = {"sparsity": 0.3, "std": 0.05}
        label = f"sparse-{layout}"
        values = sample(body("sparse", (1000, 1000), params, layout=layout, dtype="float64", seed=case_seed(label)))
        nonzero = values[values != 0.0]
        assert nonzero.size == 700_000
        assert_law(nonzero, expected_law("sparse", params, (1000, 1000), layout), label)


# --- the oracle itself ------------------------------------------------------------------------------
def test_oracle_constants_and_cdf_agree_with_scipy() -> None:
    """The kurtosis constants and the fast truncated CDF are what scipy says (guards the oracle)."""
    assert stats.truncnorm(-2, 2).std() == pytest.approx(TN_CORRECTION, rel=1e-14)
    assert float(stats.truncnorm(-2, 2).stats(moments="k")) + 3 == pytest.approx(KURTOSIS_TN2, abs=1e-7)
    assert float(stats.uniform.stats(moments="k")) + 3 == pytest.approx(KURTOSIS_UNIFORM)
    for law in (Law.truncnorm(0.5, 2.0, -1.0, 4.0), Law.truncnorm(0.0, 1.0, -2.0, 2.0), Law.truncnorm(0, 0.02, -2, 2)):
        assert law.mean == pytest.approx(float(law.frozen().mean()), rel=1e-12, abs=1e-15)
        assert law.std == pytest.approx(float(law.frozen().std()), rel=1e-12)
    for law in (
        Law.truncnorm(0.5, 2.0, -1.0, 4.0),
        Law.truncnorm(0.0, 1.0, 1.0, 3.0),
        Law.truncnorm(0.1, 0.3, -1, -0.2),
    ):
        grid = np.linspace(law.low - 0.1, law.high + 0.1, 2001)
        np.testing.assert_allclose(law.cdf(grid), law.frozen().cdf(grid), rtol=1e-12, atol=1e-15)


# Exact moments of N(0, 1) conditioned on [low, high], from mpmath at 50 digits (by hand, not the engine).
TAIL_MOMENTS = [
    pytest.param(
        8.0,
        1e6,
        8.1213681122361127,
        0.119686605112439,
        id="upper-8-inf",
    ),
    pytest.param(
        9.0,
        10.0,
        9.1084562880124085,
        0.10699909262062108,
        id="upper-9-10",
    ),
    pytest.param(-1e6, -8.0, -8.1213681122361127, 0.119686605112439, id="lower-inf-8"),
    pytest.param(5.0, 7.0, 5.1864952562762758, 0.18077473207564738, id="upper-5-7"),
]


@pytest.mark.parametrize(("low", "high", "mean", "std"), TAIL_MOMENTS)
def test_truncated_normal_expected_moments_in_the_tails(low: float, high: float, mean: float, std: float) -> None:
    law = Law.truncnorm(0.0, 1.0, low, high)
    assert law.mean == pytest.approx(mean, rel=1e-12) and law.std == pytest.approx(std, rel=1e-11)  # the oracle
    spec = parse_spec(body("truncated_normal", (1000,), {"low": low, "high": high}, dtype="float64", seed=1))
    values = widen(generate(spec), "float64")
    assert low <= values.min() and values.max() <= high
    assert abs(values.mean() - mean) < SIGMAS * std / math.sqrt(values.size)  # sampling is right either way
    assert_expected_moments(compute_stats(spec)["expected"], law)


def test_ks_oracle_rejects_a_one_percent_std_error_of_a_normal() -> None:
    """The sample size has the power the docstring promises: a 1 % std error is rejected too."""
    values = sample(body("kaiming_normal", CONV["torch"], dtype="float64", seed=3))
    law = expected_law("kaiming_normal", {}, CONV["torch"], "torch")
    assert ks_pvalue(values, law.cdf) > KS_ACCEPT
    assert ks_pvalue(values, law.spread(1.01).cdf) < KS_ACCEPT
    assert ks_pvalue(values, law.spread(0.99).cdf) < KS_ACCEPT


# --- fans and gains pinned against hand-computed values ---------------------------------------------
@pytest.mark.parametrize(
    ("shape", "layout", "fans"),
    [
        ((8, 3, 5, 7), "torch", (105, 280)),
        ((3, 3, 4, 8), "keras", (36, 72)),
        ((20, 50), "torch", (50, 20)),
        ((50, 20), "keras", (50, 20)),
        ((16, 4, 5), "torch", (20, 80)),
        ((5, 4, 16), "keras", (20, 80)),
        ((6, 5, 2, 3, 4), "torch", (120, 144)),
        ((2, 3, 4, 5, 6), "keras", (120, 144)),
        ((7, 1, 1, 1), "torch", (1, 7)),
    ],
)
def test_fans_per_layout(shape: tuple[int, ...], layout: str, fans: tuple[int, int]) -> None:
    assert fans_of(shape, layout, {}) == fans  # the oracle itself
    for scheme in ("xavier_uniform", "kaiming_normal", "glorot_normal", "variance_scaling", "torch_default"):
        report = compute_stats(parse_spec(body(scheme, shape, layout=layout)))
        assert (report["fan_in"], report["fan_out"]) == fans, scheme


def test_conv_bounds_pinned_by_hand() -> None:
    """torch (8,3,5,7): fans (105, 280); keras (3,3,4,8): fans (36, 72)."""
    torch_conv, keras_conv = (8, 3, 5, 7), (3, 3, 4, 8)
    pinned = [
        ("kaiming_uniform", torch_conv, "torch", math.sqrt(2) * math.sqrt(3 / 105)),
        ("kaiming_uniform", keras_conv, "keras", math.sqrt(2) * math.sqrt(3 / 36)),
        ("xavier_uniform", torch_conv, "torch", math.sqrt(6 / (105 + 280))),
        ("glorot_uniform", keras_conv, "keras", math.sqrt(6 / (36 + 72))),
        ("he_normal", keras_conv, "keras", 2 * math.sqrt(2 / 36) / TN_CORRECTION),
        ("he_normal", torch_conv, "torch", 2 * math.sqrt(2 / 105) / TN_CORRECTION),
        ("lecun_uniform", torch_conv, "torch", math.sqrt(3 / 105)),
        ("torch_default", torch_conv, "torch", 1 / math.sqrt(105)),
        ("uniform_unit_scaling", keras_conv, "keras", math.sqrt(3 / 36)),
    ]
    for scheme, shape, layout, bound in pinned:
        spec = parse_spec(body(scheme, shape, layout=layout, dtype="float64"))
        report = compute_stats(spec)
        assert report["expected"]["high"] == pytest.approx(bound, rel=1e-14), (scheme, layout)
        assert report["expected"]["low"] == pytest.approx(-bound, rel=1e-14), (scheme, layout)
        assert report["max"] <= bound * (1 + 1e-15) and report["min"] >= -bound * (1 + 1e-15)


GAINS = {  # torch.nn.init.calculate_gain, exact floats from init-schemes.md §3
    ("linear", 0.0): 1.0,
    ("conv1d", 0.0): 1.0,
    ("conv2d", 0.0): 1.0,
    ("conv3d", 0.0): 1.0,
    ("conv_transpose1d", 0.0): 1.0,
    ("conv_transpose2d", 0.0): 1.0,
    ("conv_transpose3d", 0.0): 1.0,
    ("sigmoid", 0.0): 1.0,
    ("tanh", 0.0): 1.6666666666666667,
    ("relu", 0.0): 1.4142135623730951,
    ("relu", 0.3): 1.4142135623730951,  # the slope is ignored except for leaky_relu
    ("leaky_relu", 0.0): 1.4142135623730951,
    ("leaky_relu", 0.01): 1.4141428569978354,
    ("leaky_relu", 0.2): 1.3867504905630728,
    ("leaky_relu", math.sqrt(5.0)): 0.5773502691896257,
    ("selu", 0.0): 0.75,
    ("selu", 0.5): 0.75,
}


@pytest.mark.parametrize(("nonlinearity", "slope"), list(GAINS), ids=[f"{n}-{a:.3g}" for n, a in GAINS])
def test_calculate_gain(nonlinearity: str, slope: float) -> None:
    gain = GAINS[(nonlinearity, slope)]
    assert torch_gain(nonlinearity, slope) == pytest.approx(gain, rel=1e-15)  # the oracle
    for scheme in ("kaiming_uniform", "kaiming_normal"):
        params = {"nonlinearity": nonlinearity, "a": slope}
        report = compute_stats(parse_spec(body(scheme, (16, 40), params, dtype="float64")))
        assert report["gain"] == pytest.approx(gain, rel=1e-15)
        std = gain / math.sqrt(40)
        assert report["expected"]["std"] == pytest.approx(std, rel=1e-14)


def test_kaiming_leaky_relu_slope_is_distinguishable() -> None:
    """Same seed, a = 0 vs a = 0.01: every value scales by gain(0)/gain(0.01) = √1.0001 exactly."""
    ratio = math.sqrt(2.0) / math.sqrt(2.0 / (1 + 0.01**2))
    for scheme in ("kaiming_uniform", "kaiming_normal"):
        specs = [body(scheme, (300, 200), {"a": a}, dtype="float64", seed=11) for a in (0.0, 0.01)]
        steep, shallow = sample(specs[0]), sample(specs[1])
        scale = np.abs(steep).max()
        np.testing.assert_allclose(steep, ratio * shallow, rtol=0, atol=1e-12 * scale)
        assert np.abs(steep - shallow).max() > 1e-6 * scale  # the difference is real, not rounding


def test_keras_fan_rules_below_rank_two() -> None:
    """keras: a scalar has fans (1, 1), a vector of n has (n, n); TF1 uniform_unit_scaling uses d = 1."""
    scalar = compute_stats(parse_spec(body("lecun_uniform", (), dtype="float64")))
    assert (scalar["fan_in"], scalar["fan_out"]) == (1, 1)
    assert scalar["expected"]["high"] == pytest.approx(math.sqrt(3.0), rel=1e-15)
    vector = compute_stats(parse_spec(body("he_uniform", (24,), dtype="float64")))
    assert (vector["fan_in"], vector["fan_out"]) == (24, 24)
    assert vector["expected"]["high"] == pytest.approx(math.sqrt(6 / 24), rel=1e-15)
    unit = compute_stats(parse_spec(body("uniform_unit_scaling", (24,), {"factor": 2.0}, dtype="float64")))
    assert unit["expected"]["high"] == pytest.approx(2 * math.sqrt(3.0), rel=1e-15)


def test_nonlinearity_without_slope_ignores_a() -> None:
    base = sample(body("kaiming_uniform", (64, 64), {"nonlinearity": "relu"}, seed=5))
    with_a = sample(body("kaiming_uniform", (64, 64), {"nonlinearity": "relu", "a": 0.4}, seed=5))
    assert np.array_equal(base, with_a)


def test_explicit_fans_on_a_bias_are_reported_and_used() -> None:
    spec = parse_spec(body("torch_default", (64,), {"fan_in": 400}, dtype="float64"))
    report = compute_stats(spec)
    assert report["fan_in"] == 400
    assert report["expected"]["high"] == pytest.approx(1 / 20, rel=1e-15)
    assert np.abs(widen(generate(spec), "float64")).max() <= 1 / 20
    # The same weight matrix with and without its fans spelled out: same bytes.
    implicit = body("kaiming_normal", (30, 70), seed=9)
    explicit = body("kaiming_normal", (30, 70), {"fan_in": 70, "fan_out": 30}, seed=9)
    assert np.array_equal(sample(implicit), sample(explicit))


# --- truncation conventions -------------------------------------------------------------------------
def test_truncated_normal_bounds_are_absolute_and_default_to_mean_plus_minus_two_std() -> None:
    spec = parse_spec(body("truncated_normal", FLAT, {"mean": 0.5, "std": 0.1}, dtype="float64", seed=2))
    params = dict(spec.params)
    assert params["low"] == pytest.approx(0.3, rel=1e-15)
    assert params["high"] == pytest.approx(0.7, rel=1e-15)
    values = widen(generate(spec), "float64")
    assert values.min() >= params["low"] and values.max() <= params["high"]
    assert_law(values, Law.truncnorm(0.5, 0.1, 0.3, 0.7), "truncated_normal mean=0.5 std=0.1")
    # Absolute bounds do not move with std: std=0.02 with bounds ±2 reaches far beyond ±2σ.
    wide = sample(body("truncated_normal", FLAT, {"std": 0.02, "low": -2.0, "high": 2.0}, dtype="float64", seed=2))
    assert np.abs(wide).max() > 4 * 0.02 and np.abs(wide).max() < 2.0


@pytest.mark.parametrize(
    ("scheme", "scale", "mode"),
    [("he_normal", 2.0, "fan_in"), ("lecun_normal", 1.0, "fan_in"), ("glorot_normal", 1.0, "fan_avg")],
)
def test_keras_normals_are_cut_at_two_sigma0_and_keep_std_sigma(scheme: str, scale: float, mode: str) -> None:
    shape = (1000, 1000)  # keras (in, out): fans (1000, 1000)
    values = sample(body(scheme, shape, layout="keras", dtype="float64", seed=21))
    sigma = math.sqrt(scale / 1000.0)
    sigma0 = sigma / TN_CORRECTION
    assert np.abs(values).max() <= 2 * sigma0
    assert np.abs(values).max() > 1.999 * sigma0  # cut at 2σ₀, not earlier
    se = sigma**2 * math.sqrt((KURTOSIS_TN2 - 1) / values.size)
    assert abs(values.var() - sigma**2) <= SIGMAS * se  # post-truncation std is σ (the 0.8796 correction)


def test_variance_scaling_normal_is_untruncated() -> None:
    values = sample(body("variance_scaling", FLAT, {"distribution": "normal"}, dtype="float64", seed=8))
    sigma = math.sqrt(1 / 1000)
    assert np.abs(values).max() / sigma > 4.0


def test_untruncated_normal_is_an_alias_of_normal() -> None:
    for layout in ("torch", "keras"):
        alias = parse_spec(body("variance_scaling", (64, 32), {"distribution": "untruncated_normal"}, layout=layout))
        plain = parse_spec(body("variance_scaling", (64, 32), {"distribution": "normal"}, layout=layout))
        assert alias.canonical() == plain.canonical()
        assert generate(alias).tobytes() == generate(plain).tobytes()


# --- every dtype: one rounding of the float64 law ---------------------------------------------------
DTYPE_CASES = [
    case
    for case in LAW_CASES
    if case.label.split("[")[0].split("-")[0]
    in {
        "uniform",
        "truncated_normal",
        "kaiming_uniform",
        "he_normal",
        "xavier_normal",
        "torch_default",
        "glorot_uniform",
    }
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", DTYPE_CASES[::2], ids=lambda case: case.label)
def test_lower_precision_is_the_float64_law_rounded_once(case: Case, dtype: str) -> None:
    """Values are the float64 values rounded to nearest-even, so they stay within the rounded bounds."""
    exact = sample(case.spec("float64"))
    values = sample(case.spec(dtype))
    assert np.array_equal(values, round_to(exact, dtype))
    law = case.law
    if math.isfinite(law.high):
        assert values.max() <= round_to(np.array([law.high]), dtype)[0]
        assert values.min() >= round_to(np.array([law.low]), dtype)[0]
    if dtype == "float32":  # fine enough for the full KS treatment
        assert_law(values, law, f"{case.label} float32", dtype=dtype)


def test_rounding_oracle_is_nearest_even() -> None:
    """round_to agrees with numpy's float64 → float32/float16 casts (and halfway cases go to even)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000) * 10.0 ** rng.integers(-6, 4, 100_000)
    np.testing.assert_array_equal(round_to(x, "float32"), x.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(round_to(x, "float16"), x.astype(np.float16).astype(np.float64))
    assert round_to(np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8]), "bfloat16").tolist() == [1.0, 1 + 2 * 2.0**-7]
