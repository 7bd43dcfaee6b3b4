"""The diagnosis request: architecture, schemes, probe; validated field by field, bounded before any work.

Body (JSON)::

    {"input_width": 512, "depth": 100, "width": 512, "activation": "tanh",
     "schemes": [{"scheme": "xavier_normal"}, {"scheme": "orthogonal", "params": {"gain": 1.0}}],
     "seed": 0, "batch": 256}

or, instead of depth/width/activation, ``"layers": [{"width": 512, "activation": "relu",
"residual": 0.5}, …]``. Layer l (1-based) computes h_l = W_l x_{l−1}, then x_l = φ(h_l), or with a
residual α: x_l = x_{l−1} + α·φ(h_l) (needs width_l = width_{l−1}). No biases. W_l is the service's own
tensor for the spec {shape: [width_l, width_{l−1}], scheme, params, seed, dtype, name: "layers.{l−1}.weight"}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..dtypes import DTYPES
from ..errors import FieldError, Loc, SpecError
from ..spec import Spec, parse_spec
from .activations import ACTIVATIONS, Activation, activation

REQUEST_KEYS = (
    "input_width",
    "depth",
    "width",
    "activation",
    "negative_slope",
    "residual",
    "layers",
    "schemes",
    "seed",
    "batch",
    "dtype",
    "jacobian",
    "jacobian_q",
)
LAYER_KEYS = ("width", "activation", "negative_slope", "residual")
SCHEME_KEYS = ("scheme", "params", "label")
DEFAULT_BATCH = 256
JACOBIAN_MAX_WIDTH = 1024


class LimitExceeded(SpecError):
    """A diagnosis would be bigger than a configured limit (decided by integer arithmetic, before any work)."""


@dataclass(frozen=True)
class Limits:
    """Bounds of one diagnosis. ``max_cells`` bounds Σ_l width_l × batch (activations held for the
    backward pass); ``max_weights`` bounds Σ_l width_l × width_{l−1} (weights held per scheme)."""

    max_depth: int = 500
    max_width: int = 4096
    max_batch: int = 4096
    max_schemes: int = 8
    max_cells: int = 1 << 25
    max_weights: int = 1 << 25


@dataclass(frozen=True)
class LayerArch:
    width: int
    activation: Activation
    residual: float | None  # α of x_l = x_{l−1} + α·φ(h_l); None: x_l = φ(h_l)


@dataclass(frozen=True)
class SchemeChoice:
    """One scheme under test with the specs of its weights, layer by layer."""

    label: str
    scheme: str
    params: Mapping[str, Any]
    specs: tuple[Spec, ...]


@dataclass(frozen=True)
class DiagnoseRequest:
    input_width: int
    layers: tuple[LayerArch, ...]
    schemes: tuple[SchemeChoice, ...]
    seed: int
    batch: int
    dtype: str
    jacobian: bool
    jacobian_q: float | None

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def widths(self) -> list[int]:
        return [layer.width for layer in self.layers]

    @property
    def jacobian_possible(self) -> bool:
        return max([self.input_width, *self.widths]) <= JACOBIAN_MAX_WIDTH


def layer_name(index: int) -> str:
    """Tensor name of layer ``index`` (0-based) — part of the random key with the seed."""
    return f"layers.{index}.weight"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(float(value))


def _int_field(
    body: Mapping[str, Any], key: str, loc: Loc, errors: list[FieldError], *, minimum: int = 1
) -> int | None:
    value = body.get(key)
    if not _is_int(value):
        errors.append(FieldError((*loc, key), f"{key} must be an integer ≥ {minimum}, got {value!r}"))
        return None
    assert isinstance(value, int)
    if value < minimum:
        errors.append(FieldError((*loc, key), f"{key} must be ≥ {minimum}, got {value}"))
        return None
    return value


def _activation(body: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> Activation | None:
    name = body.get("activation", "linear")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        errors.append(
            FieldError((*loc, "activation"), f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
        )
        return None
    slope = body.get("negative_slope")
    if slope is not None:
        if not _is_number(slope):
            errors.append(
                FieldError((*loc, "negative_slope"), f"negative_slope must be a finite number, got {slope!r}")
            )
            return None
        if name != "leaky_relu":
            errors.append(FieldError((*loc, "negative_slope"), "negative_slope applies to activation leaky_relu only"))
            return None
    return activation(name, None if slope is None else float(slope))


def _residual(body: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> float | None:
    value = body.get("residual")
    if value is None:
        return None
    if not _is_number(value):
        errors.append(FieldError((*loc, "residual"), f"residual must be a finite number α, got {value!r}"))
        return None
    return float(value)


def _layers(body: Mapping[str, Any], errors: list[FieldError]) -> list[LayerArch]:
    if "layers" in body:
        for key in ("depth", "width", "activation", "negative_slope", "residual"):
            if key in body:
                errors.append(FieldError((key,), f"{key} cannot be combined with layers (give it per layer)"))
        raw = body["layers"]
        if not isinstance(raw, list) or not raw:
            errors.append(FieldError(("layers",), f"layers must be a non-empty array, got {raw!r}"[:120]))
            return []
        layers = []
        for index, item in enumerate(raw):
            loc: Loc = ("layers", index)
            if not isinstance(item, Mapping):
                errors.append(FieldError(loc, f"layers[{index}] must be an object"))
                continue
            for key in item:
                if key not in LAYER_KEYS:
                    errors.append(
                        FieldError((*loc, str(key)), f"unknown field {key!r} (accepted: {', '.join(LAYER_KEYS)})")
                    )
            width = _int_field(item, "width", loc, errors)
            phi = _activation(item, loc, errors)
            alpha = _residual(item, loc, errors)
            if width is not None and phi is not None:
                layers.append(LayerArch(width, phi, alpha))
        return layers
    depth = _int_field(body, "depth", (), errors)
    width = _int_field(body, "width", (), errors)
    phi = _activation(body, (), errors)
    alpha = _residual(body, (), errors)
    if depth is None or width is None or phi is None:
        return []
    return [LayerArch(width, phi, alpha) for _ in range(depth)]


def _check_limits(request_shape: tuple[int, list[int], int, int], limits: Limits) -> None:
    input_width, widths, batch, schemes = request_shape
    rules: list[tuple[Loc, int, int, str]] = [
        (("layers",), len(widths), limits.max_depth, "depth (number of layers)"),
        (("width",), max([input_width, *widths]), limits.max_width, "the widest layer"),
        (("batch",), batch, limits.max_batch, "batch"),
        (("schemes",), schemes, limits.max_schemes, "the number of schemes"),
        (("layers",), sum(widths) * batch, limits.max_cells, "Σ width × batch (activations)"),
        (
            ("layers",),
            sum(a * b for a, b in zip([input_width, *widths[:-1]], widths, strict=True)),
            limits.max_weights,
            "Σ width_l × width_(l−1) (weights)",
        ),
    ]
    for loc, value, limit, what in rules:
        if value > limit:
            raise LimitExceeded([FieldError(loc, f"{what} is {value}, above the limit of {limit}")])


def parse_diagnose(body: object, limits: Limits | None = None) -> DiagnoseRequest:
    """Validate a diagnosis body; raise :class:`SpecError` (every broken rule, with its field) or
    :class:`LimitExceeded` (the first limit crossed, before any spec is built)."""
    limits = limits or Limits()
    if not isinstance(body, Mapping):
        raise SpecError([FieldError((), "a diagnosis request must be a JSON object")])
    errors: list[FieldError] = []
    for key in body:
        if key not in REQUEST_KEYS:
            errors.append(FieldError((str(key),), f"unknown field {key!r} (accepted: {', '.join(REQUEST_KEYS)})"))
    layers = _layers(body, errors)
    input_width = _int_field(body, "input_width", (), errors) if "input_width" in body else None
    if input_width is None and "input_width" not in body and layers:
        input_width = layers[0].width
    batch = _int_field(body, "batch", (), errors, minimum=2) if "batch" in body else DEFAULT_BATCH
    seed = body.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < 1 << 64:
        errors.append(FieldError(("seed",), f"seed must be an integer in 0..2^64-1, got {seed!r}"))
    dtype = body.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        errors.append(FieldError(("dtype",), f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}"))
    jacobian = body.get("jacobian", True)
    if not isinstance(jacobian, bool):
        errors.append(FieldError(("jacobian",), f"jacobian must be true or false, got {jacobian!r}"))
    jacobian_q = body.get("jacobian_q")
    if jacobian_q is not None and not (_is_number(jacobian_q) and float(jacobian_q) > 0.0):
        errors.append(FieldError(("jacobian_q",), f"jacobian_q must be a finite number > 0, got {jacobian_q!r}"))
    raw_schemes = body.get("schemes")
    if not isinstance(raw_schemes, list) or not raw_schemes:
        errors.append(FieldError(("schemes",), "schemes must be a non-empty array of {scheme, params}"))
        raw_schemes = []
    for index, item in enumerate(raw_schemes):
        if not isinstance(item, Mapping):
            errors.append(FieldError(("schemes", index), f"schemes[{index}] must be an object {{scheme, params}}"))
            continue
        for key in item:
            if key not in SCHEME_KEYS:
                errors.append(
                    FieldError(
                        ("schemes", index, str(key)), f"unknown field {key!r} (accepted: {', '.join(SCHEME_KEYS)})"
                    )
                )
        label = item.get("label")
        if label is not None and not (isinstance(label, str) and 1 <= len(label) <= 64):
            errors.append(FieldError(("schemes", index, "label"), "label must be a string of 1-64 characters"))
    for index, layer in enumerate(layers):
        if layer.residual is not None:
            previous = input_width if index == 0 else layers[index - 1].width
            if previous is not None and previous != layer.width:
                errors.append(
                    FieldError(
                        ("layers", index, "residual") if "layers" in body else ("residual",),
                        f"a residual layer needs width = the previous width ({previous}), got {layer.width}",
                    )
                )
    if errors:
        raise SpecError(errors)
    assert input_width is not None and isinstance(batch, int) and isinstance(seed, int) and isinstance(jacobian, bool)
    widths = [layer.width for layer in layers]
    _check_limits((input_width, widths, batch, len(raw_schemes)), limits)
    schemes = tuple(
        _scheme_choice(index, item, input_width, widths, seed, dtype) for index, item in enumerate(raw_schemes)
    )
    return DiagnoseRequest(
        input_width,
        tuple(layers),
        schemes,
        seed,
        batch,
        str(dtype),
        jacobian,
        None if jacobian_q is None else float(jacobian_q),
    )


def _scheme_choice(
    index: int, item: Mapping[str, Any], input_width: int, widths: list[int], seed: int, dtype: object
) -> SchemeChoice:
    """Build every layer's spec through the engine's own parser (same validation, same bytes as /v1/init)."""
    specs: list[Spec] = []
    fan_ins = [input_width, *widths[:-1]]
    cache: dict[tuple[int, int], Spec] = {}
    for layer_index, (fan_in, width) in enumerate(zip(fan_ins, widths, strict=True)):
        # (out, in) weights: the layout is said, so keras-family schemes read the fans as torch does.
        body = {"shape": [width, fan_in], "scheme": item.get("scheme"), "seed": seed, "dtype": dtype, "layout": "torch"}
        if "params" in item:
            body["params"] = item["params"]
        if (width, fan_in) not in cache:  # validate each distinct shape once
            try:
                cache[(width, fan_in)] = parse_spec({**body, "name": layer_name(layer_index)})
            except SpecError as error:
                raise SpecError([_in_request(e, index, layer_index, (width, fan_in)) for e in error.errors]) from error
        template = cache[(width, fan_in)]
        specs.append(
            Spec(
                template.shape,
                template.scheme,
                template.params,
                seed,
                template.dtype,
                template.layout,
                layer_name(layer_index),
                None,
            )
        )
    first = specs[0]
    params = dict(first.params)
    label = item.get("label") or _label(first.scheme, item.get("params") or {})
    return SchemeChoice(str(label), first.scheme, params, tuple(specs))


def _in_request(error: FieldError, index: int, layer_index: int, shape: tuple[int, int]) -> FieldError:
    """A layer spec's error at the field of the diagnosis body that caused it. The layer's shape, seed
    and dtype are not fields of ``schemes[index]``: a shape the scheme cannot fill is the scheme's
    fault (named with the shape), the seed and dtype are the body's own."""
    field = error.loc[0] if error.loc else None
    if field == "shape":
        shown = f"[{shape[0]}, {shape[1]}]"
        return FieldError(
            ("schemes", index, "scheme"),
            f"{error.msg} (a diagnosis gives layer {layer_index} a 2-D weight of shape {shown})",
        )
    if field in ("seed", "dtype"):
        return error
    return FieldError(("schemes", index, *error.loc), error.msg)


def _label(scheme: str, params: Mapping[str, Any]) -> str:
    if not params:
        return scheme
    shown = ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()
    )
    return f"{scheme}({shown})"
