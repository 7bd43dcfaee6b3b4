"""The scheme catalog: every scheme is one declarative entry.

Most entries are one line over one of two cores that mirror their frameworks' arithmetic:
``variance_scaling`` (keras/jax: var = scale/n; uniform limit √(3·var); truncated σ₀ = √var/0.8796…,
cut at ±2σ₀; normal σ = √var) and ``gain_scaled`` (torch: σ = gain/√fan or gain·√(2/(fi+fo));
uniform bound √3·σ; normal untruncated).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .algorithms import ALGORITHM_VERSION, SUPPORTED_ALGORITHMS
from .errors import FieldError
from .fans import NONLINEARITIES, calculate_gain, compute_fans
from .frames import NEAR_ETF_MAX_VECTORS, NEAR_ETF_MAX_WORK, NearETF, SimplexETF
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
from .stft import SCALINGS, STFT_MAX_FRAME, STFT_MAX_FREQ, WINDOWS, STFTKernel
from .structured import (
    CentreTap,
    CentreTapOrthogonal,
    DCTMatrix,
    HaarWavelet,
    MatrixSampler,
    SignedHadamard,
    ZerOMatrix,
    centre_taps,
    zero_constant,
)

Sampler = ElementwiseSampler | WholeSampler
WHOLE_TENSOR_MAX_NUMEL = 1 << 25
BOTH_FANS = ("fan_in", "fan_out")  # orthogonal/sparse hold the whole float64 tensor (256 MiB) and its QR


@dataclass(frozen=True)
class Layer:
    """What a builder sees: the full shape, the layout, the validated params, the algorithm version,
    and the fans."""

    shape: tuple[int, ...]
    layout: str
    params: Mapping[str, ParamValue]
    key: int = 0  # the tensor's Philox key (schemes that draw extra streams, e.g. hadamard_orthogonal)
    algorithm: int = ALGORITHM_VERSION

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
    reproducibility: str | None = None  # overrides the scheme's class when params select another algorithm


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
    reproducibility: str = "bitwise"  # under the newest algorithm; older ones may differ (below)
    uses_fans: bool = False
    check: Callable[[Layer], list[FieldError]] | None = None
    notes: str = ""
    # Framework spellings of this very function *with the same defaults*; a request may use them
    # and the canonical spec holds ``name``, so bytes and ETag are those of the catalog name.
    aliases: tuple[str, ...] = ()
    # "keras": a keras/jax-family scheme whose shapes are (in, out) / (*k, in, out) in those
    # frameworks. Without an explicit layout, a request whose result depends on it is refused.
    family: str = "torch"
    # Aliases that spell a keras/TF1 function (``Orthogonal``): those frameworks read shapes as
    # (*k, in, out), so such a request without a layout gets the keras-family rule (refused when
    # the two readings give different results) although the catalog name keeps torch's default.
    keras_spellings: tuple[str, ...] = ()
    # The gain from the params alone (known even for a zero-size tensor); None: no gain.
    gain_of: Callable[[Mapping[str, ParamValue]], float] | None = None
    # The params the scheme derives from the shape (fans), written into the canonical spec.
    derived: Callable[[Layer], dict[str, ParamValue]] | None = None
    # algorithm → reproducibility class, for the older algorithms where it is not the newest's
    earlier_reproducibility: Mapping[int, str] = field(default_factory=dict)
    whole_tensor: bool = False  # computed all at once (no random access to an element)
    reports_fans: bool = False  # stats show the layer's fans although the values do not use them

    def reproducibility_for(self, algorithm: int) -> str:
        """The reproducibility class of this scheme under ``algorithm``."""
        return self.earlier_reproducibility.get(algorithm, self.reproducibility)

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
            "reproducibility_by_algorithm": {
                str(version): self.reproducibility_for(version) for version in SUPPORTED_ALGORITHMS
            },
            "algorithm": ALGORITHM_VERSION,
            "random_access": not self.whole_tensor,
            "notes": self.notes,
            "aliases": list(self.aliases),
            "family": self.family,
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
    return Built(Orthogonal(rows, cols, layer.float("gain"), layer.algorithm), layer.float("gain"))


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


# --- structured and deterministic schemes (docs/schemes.md "Structured") ----------------------------
DCT_MAX_SIDE = 1 << 30  # (2j + 1)·k stays below 2^63 and 2n below 2^40 (trig.cos_pi_ratio)


def _matrix_axes(layer: Layer) -> tuple[int, int]:
    """Tensor axes of the (rows, cols) matrix of a conv kernel: torch (out, in) = (0, 1); keras (in, out)."""
    out_axis, in_axis = _channel_axes(layer)
    return min(out_axis, in_axis), max(out_axis, in_axis)


def _hadamard_orthogonal(layer: Layer) -> Built:
    rows, cols = _matrix_dims(layer)
    gain = layer.float("gain")
    return Built(MatrixSampler(SignedHadamard(rows, cols, gain, layer.key)), gain)


def _zero(layer: Layer) -> Built:
    out_axis, in_axis = _channel_axes(layer)
    out, inp = layer.shape[out_axis], layer.shape[in_axis]
    constant = zero_constant(out, layer.str("constant"))
    matrix = ZerOMatrix(out, inp, constant, transposed=layer.layout != "torch")
    row_axis, col_axis = _matrix_axes(layer)
    centre = centre_taps(layer.shape, row_axis, col_axis, "torch")
    return Built(CentreTap(layer.shape, row_axis, col_axis, centre, matrix))


def _delta_orthogonal(layer: Layer) -> Built:
    row_axis, col_axis = _matrix_axes(layer)
    rows, cols = layer.shape[row_axis], layer.shape[col_axis]
    centre = centre_taps(layer.shape, row_axis, col_axis, layer.str("centre"))
    gain = layer.float("gain")
    if layer.str("base") == "hadamard":
        tap = CentreTap(layer.shape, row_axis, col_axis, centre, SignedHadamard(rows, cols, gain, layer.key))
        return Built(tap, gain, reproducibility="bitwise")
    return Built(CentreTapOrthogonal(layer.shape, row_axis, col_axis, centre, gain, layer.algorithm), gain)


def _check_delta_orthogonal(layer: Layer) -> list[FieldError]:
    out_axis, in_axis = _channel_axes(layer)
    out, inp = layer.shape[out_axis], layer.shape[in_axis]
    if inp > out:
        return [
            FieldError(
                ("shape",),
                f"delta_orthogonal needs in channels ≤ out channels (an isometry); got in = shape[{in_axis}] = "
                f"{inp} > out = shape[{out_axis}] = {out}",
            )
        ]
    return _check_whole(layer) if layer.str("base") == "orthogonal" else []


def _units(layer: Layer) -> tuple[int, int, bool]:
    """(vectors N, dimension m, transposed): the output units of the flattened matrix are the vectors —
    torch (out, in·k) rows; keras (in·k, out) columns."""
    rows, cols = _matrix_dims(layer)
    return (rows, cols, False) if layer.layout == "torch" else (cols, rows, True)


def _simplex_etf(layer: Layer) -> Built:
    vectors, dim, transposed = _units(layer)
    rotation = layer.str("rotation")
    sampler = SimplexETF(vectors, dim, layer.float("gain"), rotation, transposed, layer.algorithm)
    return Built(sampler, layer.float("gain"), reproducibility="bitwise" if rotation != "orthogonal" else None)


def _check_simplex_etf(layer: Layer) -> list[FieldError]:
    vectors, dim, _ = _units(layer)
    v_axis, d_axis = (0, 1) if layer.layout == "torch" else (1, 0)
    if vectors < 2:
        return [FieldError(("shape",), f"simplex_etf needs at least 2 vectors (shape[{v_axis}]), got {vectors}")]
    if dim < vectors - 1:
        return [
            FieldError(
                ("shape",),
                f"simplex_etf needs dimension shape[{d_axis}] ≥ vectors − 1 = {vectors - 1} "
                f"(K vectors span K − 1 dimensions), got {dim}",
            )
        ]
    if layer.str("rotation") == "hadamard" and dim & (dim - 1):
        return [
            FieldError(
                ("params", "rotation"),
                f"'hadamard' needs the dimension shape[{d_axis}] to be a power of two (exactly orthonormal "
                f"rows), got {dim}; use 'orthogonal' or 'none'",
            )
        ]
    return _check_whole(layer)


def _near_etf(layer: Layer) -> Built:
    vectors, dim, transposed = _units(layer)
    steps = int(layer.params["steps"])
    return Built(NearETF(vectors, dim, layer.float("gain"), steps, transposed), layer.float("gain"))


def _check_near_etf(layer: Layer) -> list[FieldError]:
    vectors, dim, _ = _units(layer)
    if vectors > NEAR_ETF_MAX_VECTORS:
        return [FieldError(("shape",), f"near_etf supports at most {NEAR_ETF_MAX_VECTORS} vectors, got {vectors}")]
    work = int(layer.params["steps"]) * vectors * vectors * dim
    if work > NEAR_ETF_MAX_WORK:
        return [
            FieldError(
                ("params", "steps"),
                f"steps · vectors² · dimension must be ≤ 2^35 (about a minute of work), got {work}; "
                "use fewer steps or a smaller tensor",
            )
        ]
    return []


def _haar_wavelet(layer: Layer) -> Built:
    rows, cols = _matrix_dims(layer)
    return Built(HaarWavelet(rows, cols, layer.float("gain")), layer.float("gain"))


def _dct(layer: Layer) -> Built:
    rows, cols = _matrix_dims(layer)
    return Built(MatrixSampler(DCTMatrix(rows, cols, layer.float("gain"))), layer.float("gain"))


def _check_dct(layer: Layer) -> list[FieldError]:
    rows, cols = _matrix_dims(layer)
    if max(rows, cols) > DCT_MAX_SIDE:
        return [FieldError(("shape",), f"dct supports matrices whose longer side is ≤ 2^30, got {max(rows, cols)}")]
    return []


def _stft_axes(layout: str) -> tuple[int, int]:
    """(frame axis, frequency axis): keras (frame_length, 1, n_freq), torch (n_freq, 1, frame_length)."""
    return (0, 2) if layout == "keras" else (2, 0)


def _stft(layer: Layer) -> Built:
    frame_axis, freq_axis = _stft_axes(layer.layout)
    kernel = STFTKernel(
        layer.shape[frame_axis],
        layer.shape[freq_axis],
        layer.str("side"),
        layer.str("window"),
        layer.str("scaling"),
        bool(layer.params["periodic"]),
        layer.layout,
    )
    return Built(kernel)


def _check_stft(layer: Layer) -> list[FieldError]:
    frame_axis, freq_axis = _stft_axes(layer.layout)
    frames, bins = layer.shape[frame_axis], layer.shape[freq_axis]
    errors: list[FieldError] = []
    if layer.shape[1] != 1:
        errors.append(
            FieldError(
                ("shape", 1),
                f"shape[1] (in_channels) must be 1 for stft, got {layer.shape[1]}: keras' STFT kernel is "
                "(frame_length, 1, n_freq) whatever the channels (its STFTSpectrogram folds channels into the "
                "batch) and returns that shape even when asked for more",
            )
        )
    if bins < 2:
        errors.append(
            FieldError(
                ("shape", freq_axis),
                f"shape[{freq_axis}] (n_freq = fft_length // 2 + 1) must be ≥ 2, got {bins}: the DFT length is "
                "2·(n_freq − 1)",
            )
        )
    elif bins > STFT_MAX_FREQ:
        errors.append(FieldError(("shape", freq_axis), f"shape[{freq_axis}] (n_freq) must be ≤ 2^30 + 1, got {bins}"))
    if frames > STFT_MAX_FRAME:
        errors.append(
            FieldError(("shape", frame_axis), f"shape[{frame_axis}] (frame_length) must be ≤ 2^22, got {frames}")
        )
    if not errors and layer.str("scaling") != "none" and layer.str("window") != "none":
        built = _stft(layer).sampler
        assert isinstance(built, STFTKernel)
        if built.scale == 0.0:
            form = "periodic" if layer.params["periodic"] else "symmetric"
            errors.append(
                FieldError(
                    ("params", "scaling"),
                    f"the {form} {layer.str('window')} window of frame_length {frames} is all zeros, so "
                    f"{layer.str('scaling')} scaling would divide by 0; use scaling 'none', periodic true or a "
                    "longer frame",
                )
            )
    return errors


_NO_EQUIVALENT: Mapping[str, str | None] = {"torch": None, "keras": None, "jax": None, "tf1": None}


def _params(*params: Param) -> tuple[Param, ...]:
    return params


_KERAS = " + layout keras"
_KERAS_NOTE = (
    "keras/jax-family scheme: in keras, jax and TF1 a dense kernel is (in, out) and a conv kernel "
    "(*k, in, out) — send layout 'keras' for those shapes, 'torch' for (out, in, *k). Without a layout, "
    "a request whose fans differ between the two readings is refused (422); when they agree, the result "
    "is the same either way and the canonical spec says torch. Every response shows the fans used "
    "(X-Initserve-Fans header, stats fan_in/fan_out/layout)."
)


def _keras_vs(
    name: str,
    scale: float,
    mode: str,
    distribution: str,
    equivalents: Mapping[str, str | None],
    formula: str,
    aliases: tuple[str, ...],
) -> Scheme:
    return Scheme(
        name,
        formula,
        variance_scaling(scale, mode, distribution),
        FAN_OVERRIDES,
        Rank(0, 8),
        equivalents,
        uses_fans=True,
        notes=_KERAS_NOTE,
        aliases=aliases,
        family="keras",
    )


def _param_gain(params: Mapping[str, ParamValue]) -> float:
    return float(params["gain"])


def _kaiming_gain(params: Mapping[str, ParamValue]) -> float:
    return calculate_gain(str(params["nonlinearity"]), float(params["a"]))


def _uniform_unit_scaling_fans(layer: Layer) -> dict[str, ParamValue]:
    """The d the scheme divides by, as ``fan_in``: writing it out gives the same bytes."""
    if "fan_in" in layer.params:
        return {}
    if len(layer.shape) < 2:
        return {"fan_in": 1}
    return {"fan_in": max(1, compute_fans(layer.shape, layer.layout)[0])}


_TN = "σ₀ = σ/0.87962566103423978, N(0, σ₀²) truncated to [−2σ₀, 2σ₀]"
_RANK1 = " Rank < 2 (a bias): pass both params.fan_in and params.fan_out (torch refuses rank < 2)."

SCHEMES: tuple[Scheme, ...] = (
    Scheme(
        "zeros",
        "x = 0",
        _constant(0.0),
        equivalents={"torch": "zeros_(w)", "keras": "Zeros()", "jax": "zeros", "tf1": "zeros_initializer()"},
        aliases=("zeros_", "Zeros", "zeros_initializer"),
    ),
    Scheme(
        "ones",
        "x = 1",
        _constant(1.0),
        equivalents={"torch": "ones_(w)", "keras": "Ones()", "jax": "ones", "tf1": "ones_initializer()"},
        aliases=("ones_", "Ones", "ones_initializer"),
    ),
    Scheme(
        "constant",
        "x = value",
        lambda layer: Built(Constant(layer.float("value"))),
        _params(_float("value", doc="the value of every element")),
        equivalents={
            "torch": "constant_(w, val=v) ≡ {value: v}",
            "keras": "Constant(value=v) ≡ {value: v}",
            "jax": "constant(v) ≡ {value: v} (scalar v)",
            "tf1": "constant_initializer(value=v) ≡ {value: v} (scalar v)",
        },
        aliases=("constant_", "Constant", "constant_initializer"),
    ),
    Scheme(
        "uniform",
        "x ~ U[low, high)",
        lambda layer: Built(Uniform(layer.float("low"), layer.float("high"))),
        _params(_float("low", 0.0), _float("high", 1.0)),
        equivalents={
            "torch": "uniform_(w, a, b) ≡ {low: a, high: b} (same defaults 0, 1)",
            "keras": "RandomUniform(minval=a, maxval=b) ≡ {low: a, high: b} (keras defaults ±0.05: write them)",
            "jax": "uniform(scale=s) ≡ {low: 0, high: s} (jax default s = 0.01)",
            "tf1": "random_uniform_initializer(minval=a, maxval=b) ≡ {low: a, high: b} (same defaults 0, 1)",
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
        aliases=("uniform_", "random_uniform_initializer"),
    ),
    Scheme(
        "normal",
        "x ~ N(mean, std²)",
        lambda layer: Built(TruncatedNormal(layer.float("mean"), layer.float("std"))),
        _params(_float("mean", 0.0), _float("std", 1.0, positive=True)),
        equivalents={
            "torch": "normal_(w, mean=m, std=s) ≡ {mean: m, std: s} (same defaults 0, 1)",
            "keras": "RandomNormal(mean=m, stddev=s) ≡ {mean: m, std: s} (keras default stddev 0.05: write it)",
            "jax": "normal(stddev=s) ≡ {std: s} (jax default s = 0.01)",
            "tf1": "random_normal_initializer(mean=m, stddev=s) ≡ {mean: m, std: s} (same defaults 0, 1)",
        },
        aliases=("normal_", "random_normal_initializer"),
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
            "torch": "trunc_normal_(w, mean=m, std=s, a=lo, b=hi) ≡ {mean: m, std: s, low: lo, high: hi}; torch's "
            "defaults a=−2, b=2 are absolute whatever std is: write low: -2, high: 2 for them",
            "keras": "TruncatedNormal(mean=m, stddev=s) ≡ {mean: m, std: s} (cut at m ± 2s; keras default "
            "stddev 0.05: write it)",
            "jax": "truncated_normal(stddev=s, lower=l, upper=u) ≡ {std: s, low: l·s, high: u·s} (jax bounds are "
            "in units of stddev, mean 0; defaults s = 0.01, l = −2, u = 2)",
            "tf1": "truncated_normal_initializer(mean=m, stddev=s) ≡ {mean: m, std: s} (cut at m ± 2s)",
        },
        check=_check_truncated,
        notes="bounds default to mean ± 2·std (keras/TF); torch's defaults are the absolute values ±2 "
        "whatever std is — pass low=-2, high=2 to get them. One-sided truncation: put the other bound far "
        "out, ≥ 40·std from the mean (e.g. low=0, high=mean+40·std for a half-normal): the normal's mass "
        "beyond it is below 10⁻³⁰⁰, so the law is the one-sided one to double precision.",
        aliases=("truncated_normal_initializer",),
    ),
    Scheme(
        "xavier_uniform",
        "x ~ U(±gain·√(6/(fan_in+fan_out)))",
        gain_scaled(_xavier_std, "uniform"),
        (GAIN, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "xavier_uniform_(w, gain=g) ≡ {gain: g}",
            "keras": "GlorotUniform() ≡ {}" + _KERAS,
            "jax": "glorot_uniform() ≡ {}" + _KERAS,
            "tf1": "glorot_uniform_initializer() ≡ {}" + _KERAS,
        },
        uses_fans=True,
        notes="torch semantics (fans from the layout, default torch)." + _RANK1,
        aliases=("xavier_uniform_",),
        gain_of=_param_gain,
    ),
    Scheme(
        "xavier_normal",
        "x ~ N(0, gain²·2/(fan_in+fan_out)), untruncated (torch)",
        gain_scaled(_xavier_std, "normal"),
        (GAIN, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "xavier_normal_(w, gain=g) ≡ {gain: g}",
            "keras": "VarianceScaling(1.0, 'fan_avg', 'untruncated_normal') ≡ {}" + _KERAS,
            "jax": "variance_scaling(1.0, 'fan_avg', 'normal') ≡ {}" + _KERAS,
            "tf1": None,
        },
        uses_fans=True,
        notes="keras/jax glorot_normal — and jax's xavier_normal, the same function — is truncated: use glorot_normal "
        "(layout keras) for that." + _RANK1,
        aliases=("xavier_normal_",),
        gain_of=_param_gain,
    ),
    Scheme(
        "kaiming_uniform",
        "x ~ U(±gain·√(3/fan)), gain = calculate_gain(nonlinearity, a)",
        gain_scaled(_kaiming_std, "uniform"),
        (*KAIMING, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "kaiming_uniform_(w, a, mode, nonlinearity) ≡ {a, mode, nonlinearity} (same defaults)",
            "keras": "HeUniform() ≡ {nonlinearity: relu}" + _KERAS,
            "jax": "he_uniform() ≡ {nonlinearity: relu}" + _KERAS,
            "tf1": "he_uniform() ≡ {nonlinearity: relu}" + _KERAS,
        },
        uses_fans=True,
        notes="torch semantics (fans from the layout, default torch)." + _RANK1,
        aliases=("kaiming_uniform_",),
        gain_of=_kaiming_gain,
    ),
    Scheme(
        "kaiming_normal",
        "x ~ N(0, gain²/fan), untruncated (torch)",
        gain_scaled(_kaiming_std, "normal"),
        (*KAIMING, *FAN_OVERRIDES),
        Rank(2, 8, unless_fans=BOTH_FANS),
        {
            "torch": "kaiming_normal_(w, a, mode, nonlinearity) ≡ {a, mode, nonlinearity} (same defaults)",
            "keras": "VarianceScaling(2.0, 'fan_in', 'untruncated_normal') ≡ {nonlinearity: relu}" + _KERAS,
            "jax": "variance_scaling(2.0, 'fan_in', 'normal') ≡ {nonlinearity: relu}" + _KERAS,
            "tf1": None,
        },
        uses_fans=True,
        notes="keras/jax he_normal — and jax's kaiming_normal, the same function — is truncated: use he_normal "
        "(layout keras) for that." + _RANK1,
        aliases=("kaiming_normal_",),
        gain_of=_kaiming_gain,
    ),
    _keras_vs(
        "lecun_uniform",
        1.0,
        "fan_in",
        "uniform",
        {
            "torch": "kaiming_uniform_(w, nonlinearity='linear') ≡ {} + layout torch",
            "keras": "LecunUniform() ≡ {}" + _KERAS,
            "jax": "lecun_uniform() ≡ {}" + _KERAS,
            "tf1": "lecun_uniform() ≡ {}" + _KERAS,
        },
        "x ~ U(±√(3/fan_in))",
        ("LecunUniform",),
    ),
    _keras_vs(
        "lecun_normal",
        1.0,
        "fan_in",
        "truncated_normal",
        {
            "torch": None,
            "keras": "LecunNormal() ≡ {}" + _KERAS,
            "jax": "lecun_normal() ≡ {}" + _KERAS,
            "tf1": "lecun_normal() ≡ {}" + _KERAS,
        },
        f"σ = √(1/fan_in); {_TN}",
        ("LecunNormal",),
    ),
    _keras_vs(
        "he_uniform",
        2.0,
        "fan_in",
        "uniform",
        {
            "torch": "kaiming_uniform_(w, nonlinearity='relu') ≡ {} + layout torch",
            "keras": "HeUniform() ≡ {}" + _KERAS,
            "jax": "he_uniform() = kaiming_uniform() ≡ {}" + _KERAS,
            "tf1": "he_uniform() ≡ {}" + _KERAS,
        },
        "x ~ U(±√(6/fan_in))",
        ("HeUniform",),
    ),
    _keras_vs(
        "he_normal",
        2.0,
        "fan_in",
        "truncated_normal",
        {
            "torch": None,
            "keras": "HeNormal() ≡ {}" + _KERAS,
            "jax": "he_normal() = kaiming_normal() ≡ {}" + _KERAS,
            "tf1": "he_normal() ≡ {}" + _KERAS,
        },
        f"σ = √(2/fan_in); {_TN}",
        ("HeNormal",),
    ),
    _keras_vs(
        "glorot_uniform",
        1.0,
        "fan_avg",
        "uniform",
        {
            "torch": "xavier_uniform_(w) ≡ {} + layout torch",
            "keras": "GlorotUniform() ≡ {}" + _KERAS,
            "jax": "glorot_uniform() = xavier_uniform() ≡ {}" + _KERAS,
            "tf1": "glorot_uniform_initializer() ≡ {}" + _KERAS,
        },
        "x ~ U(±√(6/(fan_in+fan_out)))",
        ("GlorotUniform", "glorot_uniform_initializer"),
    ),
    _keras_vs(
        "glorot_normal",
        1.0,
        "fan_avg",
        "truncated_normal",
        {
            "torch": None,
            "keras": "GlorotNormal() ≡ {}" + _KERAS,
            "jax": "glorot_normal() = xavier_normal() ≡ {}" + _KERAS,
            "tf1": "glorot_normal_initializer() ≡ {}" + _KERAS,
        },
        f"σ = √(2/(fan_in+fan_out)); {_TN}",
        ("GlorotNormal", "glorot_normal_initializer"),
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
            "keras": "VarianceScaling(scale, mode, distribution) ≡ {scale, mode, distribution}"
            + _KERAS
            + "; keras 'normal' is our 'truncated_normal', keras 'untruncated_normal' our 'normal'",
            "jax": "variance_scaling(scale, mode, distribution) ≡ {scale, mode, distribution}"
            + _KERAS
            + " (jax 'normal' is untruncated, as ours)",
            "tf1": "variance_scaling_initializer(scale, mode, distribution) ≡ {scale, mode, distribution}"
            + _KERAS
            + "; TF1 'normal' is our 'truncated_normal'",
        },
        uses_fans=True,
        notes="distribution 'normal' is untruncated (jax); keras and TF1 silently map 'normal' to truncated. "
        + _KERAS_NOTE,
        family="keras",
    ),
    Scheme(
        "orthogonal",
        "Haar semi-orthogonal matrix × gain (QR with sign(diag R) fix)",
        _orthogonal,
        _params(GAIN),
        Rank(2, 8),
        {
            "torch": "orthogonal_(w, gain=g) ≡ {gain: g}",
            "keras": "Orthogonal(gain=g) ≡ {gain: g}" + _KERAS,
            "jax": "orthogonal(scale=s) ≡ {gain: s}" + _KERAS + " (column_axis=0: + layout torch)",
            "tf1": "orthogonal_initializer(gain=g) ≡ {gain: g}" + _KERAS,
        },
        check=_check_whole,
        notes="flattening follows the layout: torch (shape[0], ∏rest), keras (∏shape[:-1], shape[-1]); "
        "algorithm 2: fixed-order blocked Householder QR, the same bytes on every machine; algorithm 1: the "
        "platform's LAPACK (last bits may vary with the BLAS build, CPU and threads)",
        earlier_reproducibility={1: "numerical"},
        whole_tensor=True,
        reports_fans=True,
        aliases=("orthogonal_", "Orthogonal", "orthogonal_initializer"),
        keras_spellings=("Orthogonal", "orthogonal_initializer"),
        gain_of=_param_gain,
    ),
    Scheme(
        "eye",
        "x[i, j] = gain·[i = j]",
        _eye,
        _params(GAIN),
        Rank(2, 2),
        {
            "torch": "eye_(w) ≡ {}",
            "keras": "Identity(gain=g) ≡ {gain: g}",
            "jax": None,
            "tf1": "identity_initializer(gain=g) ≡ {gain: g}",
        },
        aliases=("eye_", "Identity", "identity_initializer"),
        keras_spellings=("Identity", "identity_initializer"),
    ),
    Scheme(
        "dirac",
        "conv identity: x[g·(out/groups)+d, d, k//2, …] = 1",
        _dirac,
        _params(Param("groups", "int", 1, minimum=1)),
        Rank(3, 5),
        {"torch": "dirac_(w, groups=g) ≡ {groups: g}", "keras": None, "jax": None, "tf1": None},
        check=_check_dirac,
        notes="centre tap k//2 as torch (jax/TF1 delta-orthogonal use (k-1)//2)",
        aliases=("dirac_",),
    ),
    Scheme(
        "sparse",
        "N(0, std²), then exactly ⌈sparsity·n_out⌉ zeros among the n_out outputs of every input unit: "
        "torch (out, in) ⌈sparsity·shape[0]⌉ per column, keras (in, out) ⌈sparsity·shape[1]⌉ per row",
        _sparse,
        _params(
            Param("sparsity", "float", minimum=0.0, maximum=1.0, doc="fraction of zeros per input unit"),
            _float("std", 0.01, positive=True),
        ),
        Rank(2, 2),
        {
            "torch": "sparse_(w, sparsity=s, std=σ) ≡ {sparsity: s, std: σ} (same default std)",
            "keras": None,
            "jax": None,
            "tf1": None,
        },
        check=_check_whole,
        whole_tensor=True,
        notes="zero positions come from the same keyed generator (torch's use the global RNG); keras layout "
        "counts zeros along the out axis (each row of (in, out))",
        aliases=("sparse_",),
    ),
    Scheme(
        "torch_default",
        "x ~ U(±1/√fan_in) (nn.Linear / ConvNd weight and bias)",
        _torch_default,
        FAN_OVERRIDES,
        Rank(2, 8, unless_fans=("fan_in",)),
        {
            "torch": "Linear/ConvNd.reset_parameters (kaiming_uniform_(w, a=√5)) ≡ {}",
            "keras": None,
            "jax": None,
            "tf1": None,
        },
        uses_fans=True,
        notes="for a bias pass params.fan_in (and fan_out) of its weight",
        gain_of=lambda params: 1.0 / math.sqrt(3.0),
    ),
    Scheme(
        "uniform_unit_scaling",
        "x ~ U(±factor·√(3/d)), d = params.fan_in if given, else max(1, fan_in) (1 for rank < 2)",
        _uniform_unit_scaling,
        _params(_float("factor", 1.0), FAN_OVERRIDES[0]),
        Rank(0, 8),
        {
            "torch": None,
            "keras": None,
            "jax": None,
            "tf1": "uniform_unit_scaling_initializer(factor=f) ≡ {factor: f}" + _KERAS,
        },
        uses_fans=True,
        notes="TF1 shapes are (in, out): send layout keras for them (the default stays torch, as in algorithm "
        "1's golden vectors). The d used is written into the canonical spec as params.fan_in.",
        aliases=("uniform_unit_scaling_initializer",),
        keras_spellings=("uniform_unit_scaling_initializer",),
        derived=_uniform_unit_scaling_fans,
    ),
    Scheme(
        "hadamard_orthogonal",
        "W = gain·D₁·H·D₂/√max(rows, cols); H[r, c] = (−1)^popcount(r & c) (Sylvester), D₁, D₂ keyed ±1 "
        "diagonals; exactly orthogonal rows (rows ≤ cols) or columns when the longer side is a power of two",
        _hadamard_orthogonal,
        _params(GAIN),
        Rank(2, 8),
        _NO_EQUIVALENT,
        notes="D₁[r]: top bit of word r of stream 2, D₂[c]: of word c of stream 3 (values would use stream 0). "
        "Rectangular: the leading (rows, cols) block of the next power of two, scaled so every row (rows ≤ "
        "cols) or column has norm gain; orthogonality is exact only when the longer side is a power of two. "
        "Flattening as orthogonal. O(1) per element, sliceable",
    ),
    Scheme(
        "zero",
        "ZerO (Zhao et al. 2022): out ≤ in → partial identity I*; out > in → c·I*·H_p·I* = c·H_p[:out, :in], "
        "p = 2^m, m = ⌈log₂ out⌉; conv: that matrix at the centre tap ⌊k/2⌋, zero elsewhere",
        _zero,
        _params(
            Param(
                "constant",
                "choice",
                "paper",
                choices=("paper", "official_code"),
                doc="c = 2^−(m−1)/2 (the paper, Alg. 1) or 2^−m/2 = 1/√p (the official MNIST code); a factor √2 apart",
            )
        ),
        Rank(2, 5),
        _NO_EQUIVALENT,
        notes="deterministic: seed and name change nothing. Linear = Algorithm 1, conv = Algorithm 2 (c_out = c_in: I, "
        "c_out < c_in: I*, c_out > c_in: c·I*·H·I*); the official code implements only the linear case",
    ),
    Scheme(
        "delta_orthogonal",
        "zero kernel except the centre tap = orthogonal (out, in) matrix × gain (Xiao et al. 2018); the conv "
        "operator is an isometry × gain",
        _delta_orthogonal,
        _params(
            GAIN,
            Param(
                "base",
                "choice",
                "orthogonal",
                choices=("orthogonal", "hadamard"),
                doc="centre matrix: the orthogonal scheme's (QR) or hadamard_orthogonal's (bitwise, elementwise)",
            ),
            Param(
                "centre",
                "choice",
                "jax",
                choices=("jax", "torch"),
                doc="tap index (k−1)//2 (jax/TF1 delta_orthogonal) or k//2 (torch dirac_); equal for odd k",
            ),
        ),
        Rank(3, 5),
        {
            "torch": None,
            "keras": None,
            "jax": "delta_orthogonal(scale=s) ≡ {gain: s}" + _KERAS,
            "tf1": "convolutional_delta_orthogonal(gain=g) ≡ {gain: g}" + _KERAS,
        },
        reproducibility="numerical",  # on the orthogonal base; bitwise bases say so per spec
        whole_tensor=True,
        check=_check_delta_orthogonal,
        notes="requires in ≤ out channels (as jax). The centre matrix equals the 2-D orthogonal / hadamard_orthogonal "
        "spec of shape (out, in) (torch) or (in, out) (keras) with the same seed and name. base=hadamard is "
        "class bitwise",
    ),
    Scheme(
        "simplex_etf",
        "K unit vectors × gain in ℝ^d (d ≥ K−1), pairwise cosine −1/(K−1): gain·√(K/(K−1))·B·R, B the Helmert "
        "basis of 1^⊥, R keyed orthonormal rows",
        _simplex_etf,
        _params(
            GAIN,
            Param(
                "rotation",
                "choice",
                "orthogonal",
                choices=("orthogonal", "hadamard", "none"),
                doc="R: orthogonal's (K−1, d) matrix, hadamard_orthogonal's (d a power of two; bitwise), or [I | 0] "
                "(deterministic; bitwise)",
            ),
        ),
        Rank(2, 2),
        _NO_EQUIVALENT,
        reproducibility="numerical",  # on the orthogonal base; bitwise bases say so per spec
        whole_tensor=True,
        check=_check_simplex_etf,
        notes="vectors are the output units: rows (torch (K, d)) or columns (keras (d, K)); coherence 1/(K−1) "
        "equals the Welch bound for K vectors in K−1 dimensions. rotation hadamard/none are class bitwise",
    ),
    Scheme(
        "near_etf",
        "N unit vectors × gain in ℝ^m with coherence near the Welch bound: a fixed smooth-max descent on "
        "the Gram matrix in exact (grid) arithmetic from the keyed Gaussian",
        _near_etf,
        _params(
            GAIN,
            Param("steps", "int", 500, minimum=1, maximum=10000, doc="descent iterations (fixed; part of the spec)"),
        ),
        Rank(2, 8),
        _NO_EQUIVALENT,
        whole_tensor=True,
        check=_check_near_etf,
        notes="also called a Welch frame. Measured coherence/Welch 1.1–1.22 for m < N ≤ 4m up to 512×128 "
        "(docs/structured.md); for N ≤ m (bound 0) it reaches ~1e-3–1e-2, where orthogonal gives 0 exactly. "
        "Vectors ≤ 4096 and steps·N²·m ≤ 2^35. Not elementwise: the whole frame is computed",
    ),
    Scheme(
        "haar_wavelet",
        "orthonormal Haar wavelet basis × gain (coarse to fine): rows (rows ≤ cols) or columns are the first "
        "basis vectors of length max(rows, cols); unbalanced halves ⌈L/2⌉, ⌊L/2⌋ when not a power of two",
        _haar_wavelet,
        _params(GAIN),
        Rank(2, 8),
        _NO_EQUIVALENT,
        whole_tensor=True,
        check=_check_whole,
        notes="deterministic: seed and name change nothing; exactly orthonormal for every length (the unbalanced "
        "Haar basis), the standard Haar matrix for powers of two. Flattening as orthogonal",
    ),
    Scheme(
        "dct",
        "orthonormal DCT-II basis × gain: b_k[j] = α_k·cos(π(2j+1)k/(2n)), α₀ = √(1/n), α_k = √(2/n), n = "
        "max(rows, cols); rows (rows ≤ cols) or columns are b_0, b_1, …",
        _dct,
        _params(GAIN),
        Rank(2, 8),
        {"torch": None, "keras": None, "jax": None, "tf1": None},
        check=_check_dct,
        notes="scipy.fft.dct(np.eye(n), norm='ortho', axis=0) rows; cosine from exact range reduction and a "
        "fixed polynomial (docs/determinism.md), so class bitwise; deterministic, O(1) per element",
    ),
    Scheme(
        "stft",
        "STFT conv kernel: x[t, 0, f] = w[t]·cos(2πtf/N)/s (real) or w[t]·(−sin(2πtf/N))/s (imag), N = "
        "2(n_freq − 1), w the scipy window, s = √Σw² (density), Σ|w| (spectrum) or 1",
        _stft,
        _params(
            Param("side", "choice", "real", choices=("real", "imag"), doc="real or imaginary part of e^{−2πitf/N}"),
            Param(
                "window",
                "choice",
                "hann",
                choices=WINDOWS,
                null="none",
                doc="scipy.signal.get_window name; 'none' (or null) is keras' window=None (no window, no scaling)",
            ),
            Param(
                "scaling",
                "choice",
                "density",
                choices=SCALINGS,
                null="none",
                doc="divide by the window's L2 norm (density), L1 norm (spectrum), or not ('none' or null: keras None)",
            ),
            Param("periodic", "bool", False, doc="periodic (DFT-even, fftbins=True) or symmetric window"),
        ),
        Rank(3, 3),
        {
            "torch": None,
            "keras": "STFT(side, window, scaling, periodic) ≡ {side, window, scaling, periodic} (None: null or "
            "'none')" + _KERAS,
            "jax": None,
            "tf1": None,
        },
        check=_check_stft,
        family="keras",
        notes="layout 'keras' is keras' (frame_length, 1, n_freq) (its STFTSpectrogram's kernel); layout 'torch' "
        "(n_freq, 1, frame_length) is a Conv1d weight of the same filter bank; without a layout, refused unless "
        "frame_length = n_freq. Windows hann, hamming, blackman, boxcar (scipy, "
        "periodic or symmetric) or none; cosines and windows from exact range reduction and a fixed polynomial "
        "(docs/determinism.md), so class bitwise; deterministic (seed and name change nothing), O(1) per element",
        aliases=("STFT",),
    ),
)

# Framework spellings that name a *different* function or different defaults: refused, with the
# arguments that reproduce them (an alias would silently change the result).
NEAR_MISSES: Mapping[str, str] = {
    "RandomUniform": "keras RandomUniform is U[−0.05, 0.05) by default: scheme 'uniform' with params "
    "{low: -0.05, high: 0.05}",
    "RandomNormal": "keras RandomNormal has stddev 0.05 by default: scheme 'normal' with params {std: 0.05}",
    "TruncatedNormal": "keras TruncatedNormal has stddev 0.05 by default: scheme 'truncated_normal' with params "
    "{std: 0.05}",
    "trunc_normal_": "torch trunc_normal_ cuts at the absolute values a=−2, b=2: scheme 'truncated_normal' with "
    "params {std: s, low: -2, high: 2}",
    "VarianceScaling": "scheme 'variance_scaling' with layout keras; keras' distribution 'normal' is our "
    "'truncated_normal' (its 'untruncated_normal' is our 'normal')",
    "variance_scaling_initializer": "scheme 'variance_scaling' with layout keras; TF1's distribution 'normal' is "
    "our 'truncated_normal'",
}


def scheme_names() -> list[str]:
    """Catalog names and accepted aliases (what a request may say)."""
    return [*CATALOG, *ALIASES]


def resolve_scheme(name: str) -> str | None:
    """The catalog name for ``name`` (itself or an accepted alias), or None."""
    if name in CATALOG:
        return name
    return ALIASES.get(name)


def unknown_scheme_message(name: object) -> str:
    """Why ``name`` is refused and what to send instead: the near-miss hint, else the closest names."""
    if not isinstance(name, str):
        kinds = {bool: "a boolean", type(None): "null", int: "a number", float: "a number", list: "an array"}
        kind = kinds.get(type(name), "an object" if isinstance(name, dict) else type(name).__name__)
        return f"scheme must be a string naming a catalog scheme, got {kind}"
    if name in NEAR_MISSES:
        return f"unknown scheme {name!r}: {NEAR_MISSES[name]}"
    lowered = {candidate.lower(): candidate for candidate in scheme_names()}
    close = [lowered[name.lower()]] if name.lower() in lowered else []
    close += difflib.get_close_matches(name, scheme_names(), n=3, cutoff=0.6)
    close += [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
    suggestions = [resolve_scheme(c) or c for c in dict.fromkeys(close)]
    suggestions = list(dict.fromkeys(suggestions))[:3]
    if suggestions:
        choices = " or ".join(repr(c) for c in suggestions)
        return f"unknown scheme {name!r}; did you mean {choices}? (GET /v1/schemes lists all)"
    return f"unknown scheme {name!r} (known: {', '.join(CATALOG)})"


CATALOG: Mapping[str, Scheme] = {scheme.name: scheme for scheme in SCHEMES}
ALIASES: Mapping[str, str] = {alias: scheme.name for scheme in SCHEMES for alias in scheme.aliases}
COMPUTED_DEFAULTS: Mapping[str, Callable[[Mapping[str, ParamValue]], dict[str, ParamValue]]] = {
    "truncated_normal": _truncated_defaults,
}


def catalog() -> list[dict[str, Any]]:
    """JSON-able description of every scheme, in catalog order."""
    return [scheme.describe() for scheme in SCHEMES]


def scheme_info(name: str) -> dict[str, Any]:
    """One scheme's description (an alias gives its scheme's); KeyError for an unknown name."""
    return CATALOG[resolve_scheme(name) or name].describe()
