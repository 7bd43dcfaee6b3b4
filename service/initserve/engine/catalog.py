"""The scheme catalog: every scheme is one declarative entry.

Most entries are one line over one of two cores that mirror their frameworks' arithmetic:
``variance_scaling`` (keras/jax: var = scale/n; uniform limit √(3·var); truncated σ₀ = √var/0.8796…,
cut at ±2σ₀; normal σ = √var) and ``gain_scaled`` (torch: σ = gain/√fan or gain·√(2/(fi+fo));
uniform bound √3·σ; normal untruncated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import FieldError
from .fans import NONLINEARITIES, calculate_gain, compute_fans
from .params import FAN_OVERRIDES, Param, ParamValue
from .samplers import (
    TRUNCATED_STD_CORRECTION,
    Constant,
    Dirac,
    ElementwiseSampler,
    Eye,
    Orthogonal,
    Sparse,
    TruncatedNormal,
    Uniform,
    WholeSampler,
)

Sampler = ElementwiseSampler | WholeSampler
WHOLE_TENSOR_MAX_NUMEL = 1 << 25
BOTH_FANS = ("fan_in", "fan_out")  # orthogonal/sparse hold the whole float64 tensor (256 MiB) and its QR


@dataclass(frozen=True)
class Layer:
    """What a builder sees: the full shape, the layout, the validated params, and the fans."""

    shape: tuple[int, ...]
    layout: str
    params: Mapping[str, ParamValue]

    @property
    def fans(self) -> tuple[int, int]:
        fan_in, fan_out = compute_fans(self.shape, self.layout)
        return int(self.params.get("fan_in", fan_in)), int(self.params.get("fan_out", fan_out))

    def float(self, name: str) -> float:
        return float(self.params[name])

    def str(self, name: str) -> str:
        return str(self.params[name])


@dataclass(frozen=True)
class Built:
    sampler: Sampler
    gain: float | None = None


@dataclass(frozen=True)
class Rank:
    """Accepted tensor ranks; ``unless_fans``: lower ranks are fine when fan_in/fan_out are explicit."""

    minimum: int = 0
    maximum: int = 8
    unless_fans: tuple[str, ...] = ()

    def check(self, shape: tuple[int, ...], params: Mapping[str, object], scheme: str) -> FieldError | None:
        rank = len(shape)
        if self.minimum <= rank <= self.maximum:
            return None
        if self.unless_fans and rank < self.minimum and all(fan in params for fan in self.unless_fans):
            return None
        if self.minimum == self.maximum:
            wanted = f"exactly {self.minimum} dimensions"
        elif self.maximum == 8:
            wanted = f"at least {self.minimum} dimensions"
        else:
            wanted = f"{self.minimum} to {self.maximum} dimensions"
        hint = f" (or explicit {' and '.join('params.' + fan for fan in self.unless_fans)})" if self.unless_fans else ""
        return FieldError(("shape",), f"scheme {scheme!r} needs {wanted}{hint}, got {rank}")


@dataclass(frozen=True)
class Scheme:
    name: str
    formula: str
    build: Callable[[Layer], Built]
    params: tuple[Param, ...] = ()
    rank: Rank = field(default_factory=Rank)
    equivalents: Mapping[str, str | None] = field(default_factory=dict)
    reproducibility: str = "bitwise"
    uses_fans: bool = False
    check: Callable[[Layer], list[FieldError]] | None = None
    notes: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "formula": self.formula,
            "params": [param.describe() for param in self.params],
            "rank": {
                "min": self.rank.minimum,
                "max": self.rank.maximum,
                "lower_with_explicit": list(self.rank.unless_fans),
            },
            "equivalents": {fw: self.equivalents.get(fw) for fw in ("torch", "keras", "jax", "tf1")},
            "reproducibility": self.reproducibility,
            "random_access": self.reproducibility == "bitwise",
            "notes": self.notes,
        }


# --- parameter vocabulary --------------------------------------------------------------------------
def _float(
    name: str,
    default: float | None = None,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    rule: str | None = None,
    doc: str = "",
) -> Param:
    if positive:
        return Param(name, "float", default, rule, minimum=0.0, exclusive_minimum=True, doc=doc)
    return Param(name, "float", default, rule, minimum=minimum, maximum=maximum, doc=doc)


GAIN = _float("gain", 1.0, doc="multiplies the standard deviation / bound")
MODE_TORCH = Param(
    "mode",
    "choice",
    "fan_in",
    choices=("fan_in", "fan_out"),
    doc="fan_in preserves forward variance, fan_out backward",
)
MODE_KERAS = Param(
    "mode",
    "choice",
    "fan_in",
    choices=("fan_in", "fan_out", "fan_avg", "fan_geo_avg"),
    doc="n = fan_in, fan_out, (fan_in+fan_out)/2 or √(fan_in·fan_out)",
)
DISTRIBUTION = Param(
    "distribution",
    "choice",
    "truncated_normal",
    choices=("truncated_normal", "normal", "uniform"),
    aliases={"untruncated_normal": "normal"},
    doc="normal is untruncated (jax semantics; keras maps 'normal' to truncated)",
)
KAIMING = (
    _float("a", 0.0, doc="negative slope of leaky_relu (only used by leaky_relu)"),
    MODE_TORCH,
    Param("nonlinearity", "choice", "leaky_relu", choices=NONLINEARITIES, doc="selects the gain"),
)


# --- the two cores ---------------------------------------------------------------------------------
def _fan_for(mode: str, fan_in: int, fan_out: int) -> float:
    if mode == "fan_in":
        return float(fan_in)
    if mode == "fan_out":
        return float(fan_out)
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2.0
    return math.sqrt(float(fan_in) * float(fan_out))


def variance_scaling(scale: float, mode: str, distribution: str) -> Callable[[Layer], Built]:
    """keras/jax VarianceScaling: var = scale / max(1, n)."""

    def build(layer: Layer) -> Built:
        fan_in, fan_out = layer.fans
        variance = scale / max(1.0, _fan_for(mode, fan_in, fan_out))
        return Built(_scaled_sampler(variance, distribution))

    return build


def _variance_scaling_from_params(layer: Layer) -> Built:
    return variance_scaling(layer.float("scale"), layer.str("mode"), layer.str("distribution"))(layer)


def _scaled_sampler(variance: float, distribution: str) -> Sampler:
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return Uniform(-limit, limit)
    if distribution == "normal":
        return TruncatedNormal(0.0, math.sqrt(variance))
    stddev = math.sqrt(variance) / TRUNCATED_STD_CORRECTION
    return TruncatedNormal(0.0, stddev, -2.0 * stddev, 2.0 * stddev)


def gain_scaled(std_of: Callable[[Layer], tuple[float, float]], distribution: str) -> Callable[[Layer], Built]:
    """torch style: ``std_of`` gives (std, gain); uniform bound = √3·std, normal untruncated."""

    def build(layer: Layer) -> Built:
        std, gain = std_of(layer)
        if distribution == "uniform":
            bound = math.sqrt(3.0) * std
            return Built(Uniform(-bound, bound), gain)
        return Built(TruncatedNormal(0.0, std), gain)

    return build


def _xavier_std(layer: Layer) -> tuple[float, float]:
    fan_in, fan_out = layer.fans
    gain = layer.float("gain")
    return gain * math.sqrt(2.0 / float(fan_in + fan_out)), gain


def _kaiming_std(layer: Layer) -> tuple[float, float]:
    fan_in, fan_out = layer.fans
    fan = fan_in if layer.str("mode") == "fan_in" else fan_out
    gain = calculate_gain(layer.str("nonlinearity"), layer.float("a"))
    return gain / math.sqrt(fan), gain


# --- builders of the other schemes -----------------------------------------------------------------
def _constant(value: float) -> Callable[[Layer], Built]:
    return lambda layer: Built(Constant(value))


def _truncated_normal(layer: Layer) -> Built:
    mean, std = layer.float("mean"), layer.float("std")
    return Built(TruncatedNormal(mean, std, layer.float("low"), layer.float("high")))


def _truncated_defaults(params: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
    mean, std = float(params.get("mean", 0.0)), float(params.get("std", 1.0))
    return {"low": mean - 2.0 * std, "high": mean + 2.0 * std}


def _check_truncated(layer: Layer) -> list[FieldError]:
    low, high = layer.float("low"), layer.float("high")
    if not low < high:
        return [FieldError(("params", "high"), f"must be > params.low ({low!r}), got {high!r}")]
    sampler = TruncatedNormal(layer.float("mean"), layer.float("std"), low, high)
    if not sampler.width >= 1e-300:
        return [
            FieldError(
                ("params",),
                f"[low, high] = [{low!r}, {high!r}] has probability {sampler.width:.3g} "
                "under N(mean, std²); it must be at least 1e-300",
            )
        ]
    return []


def _torch_default(layer: Layer) -> Built:
    fan_in, _ = layer.fans
    bound = 1.0 / math.sqrt(fan_in)
    return Built(Uniform(-bound, bound), 1.0 / math.sqrt(3.0))


def _uniform_unit_scaling(layer: Layer) -> Built:
    if "fan_in" in layer.params:
        size = float(layer.params["fan_in"])
    elif len(layer.shape) < 2:
        size = 1.0
    else:
        size = max(1.0, float(compute_fans(layer.shape, layer.layout)[0]))
    max_val = math.sqrt(3 / size) * layer.float("factor")
    return Built(Uniform(-max_val, max_val))


def _matrix_dims(layer: Layer) -> tuple[int, int]:
    """torch flattens to (shape[0], ∏rest); keras/TF1 to (∏shape[:-1], shape[-1])."""
    if layer.layout == "torch":
        return layer.shape[0], math.prod(layer.shape[1:])
    return math.prod(layer.shape[:-1]), layer.shape[-1]


def _orthogonal(layer: Layer) -> Built:
    rows, cols = _matrix_dims(layer)
    return Built(Orthogonal(rows, cols, layer.float("gain")), layer.float("gain"))


def _check_whole(layer: Layer) -> list[FieldError]:
    numel = math.prod(layer.shape)
    if numel > WHOLE_TENSOR_MAX_NUMEL:
        return [
            FieldError(
                ("shape",),
                f"this scheme computes the whole tensor at once and supports at most "
                f"{WHOLE_TENSOR_MAX_NUMEL} elements, got {numel}",
            )
        ]
    return []


def _eye(layer: Layer) -> Built:
    return Built(Eye(layer.shape[0], layer.shape[1], layer.float("gain")))


def _channel_axes(layer: Layer) -> tuple[int, int]:
    rank = len(layer.shape)
    return (0, 1) if layer.layout == "torch" else (rank - 1, rank - 2)


def _dirac(layer: Layer) -> Built:
    out_axis, in_axis = _channel_axes(layer)
    return Built(Dirac(layer.shape, int(layer.params["groups"]), out_axis, in_axis))


def _check_dirac(layer: Layer) -> list[FieldError]:
    out_axis, _ = _channel_axes(layer)
    groups = int(layer.params["groups"])
    out_channels = layer.shape[out_axis] if layer.shape else 0
    if out_channels % groups:
        return [
            FieldError(
                ("params", "groups"),
                f"out channels (shape[{out_axis}] = {out_channels}) must be divisible by groups, got groups = {groups}",
            )
        ]
    return []


def _sparse(layer: Layer) -> Built:
    rows, cols = layer.shape[0], layer.shape[1]
    axis = 0 if layer.layout == "torch" else 1  # the out axis: each input unit keeps (1 - s) of its outputs
    line = (rows, cols)[axis]
    zeros = math.ceil(layer.float("sparsity") * line)
    std = layer.float("std")
    return Built(Sparse((rows, cols), std, zeros, axis, TruncatedNormal(0.0, std)))


def _params(*params: Param) -> tuple[Param, ...]:
    return params


def _keras_vs(
    name: str,
    scale: float,
    mode: str,
    distribution: str,
    keras: str,
    jax: str,
    tf1: str,
    torch: str | None,
    formula: str,
) -> Scheme:
    return Scheme(
        name,
        formula,
        variance_scaling(scale, mode, distribution),
        FAN_OVERRIDES,
        Rank(0, 8),
        {"torch": torch, "keras": keras, "jax": jax, "tf1": tf1},
        uses_fans=True,
    )


_TN = "σ₀ = σ/0.87962566103423978, N(0, σ₀²) truncated to [−2σ₀, 2σ₀]"

SCHEMES: tuple[Scheme, ...] = (
    Scheme(
        "zeros",
        "x = 0",
        _constant(0.0),
        equivalents={"torch": "zeros_", "keras": "Zeros", "jax": "zeros", "tf1": "zeros_initializer"},
    ),
    Scheme(
        "ones",
        "x = 1",
        _constant(1.0),
        equivalents={"torch": "ones_", "keras": "Ones", "jax": "ones", "tf1": "ones_initializer"},
    ),
    Scheme(
        "constant",
        "x = value",
        lambda layer: Built(Constant(layer.float("value"))),
        _params(_float("value", doc="the value of every element")),
        equivalents={
            "torch": "constant_",
            "keras": "Constant",
            "jax": "constant",
            "tf1": "constant_initializer",
        },
    ),
    Scheme(
        "uniform",
        "x ~ U[low, high)",
        lambda layer: Built(Uniform(layer.float("low"), layer.float("high"))),
        _params(_float("low", 0.0), _float("high", 1.0)),
        equivalents={
            "torch": "uniform_",
            "keras": "RandomUniform",
            "jax": "uniform",
            "tf1": "random_uniform_initializer",
        },
        check=lambda layer: (
            []
            if layer.float("low") <= layer.float("high")
            else [
                FieldError(
                    ("params", "high"),
                    f"must be ≥ params.low ({layer.float('low')!r}), got {layer.float('high')!r}",
                )
            ]
        ),
        notes="torch defaults (0, 1); keras uses ±0.05 and jax [0, scale): pass low/high explicitly",
    ),
    Scheme(
        "normal",
        "x ~ N(mean, std²)",
        lambda layer: Built(TruncatedNormal(layer.float("mean"), layer.float("std"))),
        _params(_float("mean", 0.0), _float("std", 1.0, positive=True)),
        equivalents={
            "torch": "normal_",
            "keras": "RandomNormal",
            "jax": "normal",
            "tf1": "random_normal_initializer",
        },
    ),
    Scheme(
        "truncated_normal",
        "x ~ N(mean, std²) conditioned on [low, high] (absolute bounds)",
        _truncated_normal,
        _params(
            _float("mean", 0.0),
            _float("std", 1.0, positive=True),
            _float("low", rule="mean - 2*std", doc="absolute lower bound"),
            _float("high", rule="mean + 2*std", doc="absolute upper bound"),
        ),
        equivalents={
            "torch": "trunc_normal_",
            "keras": "TruncatedNormal",
            "jax": "truncated_normal",
            "tf1": "truncated_normal_initializer",
        },
        check=_check_truncated,
        notes="bounds default to mean ± 2·std (keras/TF); torch's defaults are the absolute values ±2 "
        "whatever std is — pass low=-2, high=2 to get them",
    ),
    Scheme(
        "xavier_uniform",
        "x ~ U(±gain·√(6/(fan_in+fan_out)))",
        gain_scaled(_xavier_std, "uniform"),
        (GAIN, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "xavier_uniform_",
            "keras": "GlorotUniform (gain 1)",
            "jax": "glorot_uniform",
            "tf1": "glorot_uniform_initializer",
        },
        uses_fans=True,
    ),
    Scheme(
        "xavier_normal",
        "x ~ N(0, gain²·2/(fan_in+fan_out)), untruncated (torch)",
        gain_scaled(_xavier_std, "normal"),
        (GAIN, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {"torch": "xavier_normal_", "keras": None, "jax": None, "tf1": None},
        uses_fans=True,
        notes="keras/jax glorot_normal is truncated: use glorot_normal for that",
    ),
    Scheme(
        "kaiming_uniform",
        "x ~ U(±gain·√(3/fan)), gain = calculate_gain(nonlinearity, a)",
        gain_scaled(_kaiming_std, "uniform"),
        (*KAIMING, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "kaiming_uniform_",
            "keras": "HeUniform (relu, fan_in)",
            "jax": "he_uniform",
            "tf1": "he_uniform",
        },
        uses_fans=True,
    ),
    Scheme(
        "kaiming_normal",
        "x ~ N(0, gain²/fan), untruncated (torch)",
        gain_scaled(_kaiming_std, "normal"),
        (*KAIMING, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {"torch": "kaiming_normal_", "keras": None, "jax": None, "tf1": None},
        uses_fans=True,
        notes="keras/jax he_normal is truncated: use he_normal for that",
    ),
    _keras_vs(
        "lecun_uniform",
        1.0,
        "fan_in",
        "uniform",
        "LecunUniform",
        "lecun_uniform",
        "lecun_uniform",
        "kaiming_uniform_(nonlinearity='linear')",
        "x ~ U(±√(3/fan_in))",
    ),
    _keras_vs(
        "lecun_normal",
        1.0,
        "fan_in",
        "truncated_normal",
        "LecunNormal",
        "lecun_normal",
        "lecun_normal",
        None,
        f"σ = √(1/fan_in); {_TN}",
    ),
    _keras_vs(
        "he_uniform",
        2.0,
        "fan_in",
        "uniform",
        "HeUniform",
        "he_uniform",
        "he_uniform",
        "kaiming_uniform_(nonlinearity='relu')",
        "x ~ U(±√(6/fan_in))",
    ),
    _keras_vs(
        "he_normal",
        2.0,
        "fan_in",
        "truncated_normal",
        "HeNormal",
        "he_normal",
        "he_normal",
        None,
        f"σ = √(2/fan_in); {_TN}",
    ),
    _keras_vs(
        "glorot_uniform",
        1.0,
        "fan_avg",
        "uniform",
        "GlorotUniform",
        "glorot_uniform",
        "glorot_uniform_initializer",
        "xavier_uniform_",
        "x ~ U(±√(6/(fan_in+fan_out)))",
    ),
    _keras_vs(
        "glorot_normal",
        1.0,
        "fan_avg",
        "truncated_normal",
        "GlorotNormal",
        "glorot_normal",
        "glorot_normal_initializer",
        None,
        f"σ = √(2/(fan_in+fan_out)); {_TN}",
    ),
    Scheme(
        "variance_scaling",
        "var = scale/max(1, n); uniform U(±√(3·var)); normal N(0, var); truncated_normal σ₀ = √var/0.8796…, "
        "cut at ±2σ₀",
        _variance_scaling_from_params,
        (_float("scale", 1.0, positive=True), MODE_KERAS, DISTRIBUTION, *FAN_OVERRIDES),
        Rank(0, 8),
        {
            "torch": None,
            "keras": "VarianceScaling",
            "jax": "variance_scaling",
            "tf1": "variance_scaling_initializer",
        },
        uses_fans=True,
        notes="distribution 'normal' is untruncated (jax); keras and TF1 silently map 'normal' to truncated",
    ),
    Scheme(
        "orthogonal",
        "Haar semi-orthogonal matrix × gain (QR with sign(diag R) fix)",
        _orthogonal,
        _params(GAIN),
        Rank(2, 8),
        {"torch": "orthogonal_", "keras": "Orthogonal", "jax": "orthogonal", "tf1": "orthogonal_initializer"},
        reproducibility="numerical",
        check=_check_whole,
        notes="flattening follows the layout: torch (shape[0], ∏rest), keras (∏shape[:-1], shape[-1])",
    ),
    Scheme(
        "eye",
        "x[i, j] = gain·[i = j]",
        _eye,
        _params(GAIN),
        Rank(2, 2),
        {"torch": "eye_ (gain 1)", "keras": "Identity", "jax": None, "tf1": "identity_initializer"},
    ),
    Scheme(
        "dirac",
        "conv identity: x[g·(out/groups)+d, d, k//2, …] = 1",
        _dirac,
        _params(Param("groups", "int", 1, minimum=1)),
        Rank(3, 5),
        {"torch": "dirac_", "keras": None, "jax": None, "tf1": None},
        check=_check_dirac,
        notes="centre tap k//2 as torch (jax/TF1 delta-orthogonal use (k-1)//2)",
    ),
    Scheme(
        "sparse",
        "N(0, std²), then exactly ⌈sparsity·rows⌉ zeros in every column",
        _sparse,
        _params(
            Param("sparsity", "float", minimum=0.0, maximum=1.0, doc="fraction of zeros per column"),
            _float("std", 0.01, positive=True),
        ),
        Rank(2, 2),
        {"torch": "sparse_", "keras": None, "jax": None, "tf1": None},
        check=_check_whole,
        notes="zero positions come from the same keyed generator (torch's use the global RNG); keras layout "
        "counts zeros along the out axis (each row of (in, out))",
    ),
    Scheme(
        "torch_default",
        "x ~ U(±1/√fan_in) (nn.Linear / ConvNd weight and bias)",
        _torch_default,
        FAN_OVERRIDES,
        Rank(2, 8, unless_fans=("fan_in",)),
        {
            "torch": "Linear/ConvNd.reset_parameters (kaiming_uniform_(a=√5))",
            "keras": None,
            "jax": None,
            "tf1": None,
        },
        uses_fans=True,
        notes="for a bias pass params.fan_in (and fan_out) of its weight",
    ),
    Scheme(
        "uniform_unit_scaling",
        "x ~ U(±factor·√(3/d)), d = max(1, fan_in) (1 for rank < 2)",
        _uniform_unit_scaling,
        _params(_float("factor", 1.0), FAN_OVERRIDES[0]),
        Rank(0, 8),
        {"torch": None, "keras": None, "jax": None, "tf1": "uniform_unit_scaling_initializer"},
    ),
)

CATALOG: Mapping[str, Scheme] = {scheme.name: scheme for scheme in SCHEMES}
COMPUTED_DEFAULTS: Mapping[str, Callable[[Mapping[str, ParamValue]], dict[str, ParamValue]]] = {
    "truncated_normal": _truncated_defaults,
}


def catalog() -> list[dict[str, Any]]:
    """JSON-able description of every scheme, in catalog order."""
    return [scheme.describe() for scheme in SCHEMES]


def scheme_info(name: str) -> dict[str, Any]:
    """One scheme's description; KeyError for an unknown name."""
    return CATALOG[name].describe()
