"""The layer spec: validation that names the field and the rule, and the canonical form.

The canonical form (all defaults filled in, computed ones too; keys sorted; numbers as the shortest
round-trip repr; a slice that covers everything dropped) is what the digest, the ETag and the
safetensors metadata are made from, so spelling out a default never changes a byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .algorithms import ALGORITHM_VERSION as ALGORITHM_VERSION  # re-exported: older imports name spec
from .algorithms import IMPLICIT_ALGORITHM
from .algorithms import SUPPORTED_ALGORITHMS as SUPPORTED_ALGORITHMS
from .catalog import CATALOG, COMPUTED_DEFAULTS, Built, Layer, Scheme, resolve_scheme, unknown_scheme_message
from .derived import check_derived, culprit
from .dtypes import DTYPES, DType
from .errors import FieldError, Loc, SpecError, SpecTooLarge
from .fans import LAYOUTS
from .layout import RunLayout
from .params import ParamValue, validate_params
from .rng import derive_key
from .samplers import Orthogonal
from .stft import STFTKernel

MAX_RANK = 8
MAX_DIM = (1 << 63) - 1
SEED_LIMIT = 1 << 64
MAX_ELEMENTS = 1 << 62  # element i uses counter word c0 = i div 4, which must fit in 64 bits
MAX_NAME_CHARS = 256  # code points, so at most 1024 bytes of UTF-8
# Control characters (Cc), line/paragraph separators (Zl, Zp) and lone surrogates (Cs, which have no
# UTF-8 encoding) are refused; every other Unicode character torch or keras accept in a name is fine.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
SPEC_KEYS = ("shape", "scheme", "params", "seed", "dtype", "layout", "name", "slice", "algorithm")
DEFAULT_DTYPE, DEFAULT_LAYOUT, DEFAULT_NAME = "float32", "torch", "weight"


@dataclass(frozen=True)
class Spec:
    """A validated init spec in canonical form. Build it with :func:`parse_spec`."""

    shape: tuple[int, ...]
    scheme: str
    params: tuple[tuple[str, ParamValue], ...]
    seed: int
    dtype: str
    layout: str
    name: str
    slice: tuple[tuple[int, int], ...] | None
    algorithm: int = ALGORITHM_VERSION

    # --- identity -----------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "dtype": self.dtype,
            "layout": self.layout,
            "name": self.name,
            "params": dict(self.params),
            "scheme": self.scheme,
            "seed": self.seed,
            "shape": list(self.shape),
        }
        if self.slice is not None:
            body["slice"] = [list(pair) for pair in self.slice]
        if self.algorithm != IMPLICIT_ALGORITHM:
            body["algorithm"] = self.algorithm
        return body

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    def digest(self) -> str:
        return digest(self.canonical_json(), self.algorithm)

    # --- sizes ------------------------------------------------------------------------------------
    @property
    def result_shape(self) -> tuple[int, ...]:
        if self.slice is None:
            return self.shape
        sliced = tuple(stop - start for start, stop in self.slice)
        return sliced + self.shape[len(sliced) :]

    @property
    def full_numel(self) -> int:
        return math.prod(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.result_shape)

    @property
    def dtype_info(self) -> DType:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype_info.itemsize

    # --- generation inputs ---------------------------------------------------------------------
    @property
    def key(self) -> int:
        return derive_key(self.seed, self.name)

    @property
    def scheme_entry(self) -> Scheme:
        return CATALOG[self.scheme]

    @cached_property
    def layer(self) -> Layer:
        return Layer(self.shape, self.layout, dict(self.params), self.key, self.algorithm)

    @cached_property
    def built(self) -> Built:
        return self.scheme_entry.build(self.layer)

    @cached_property
    def run_layout(self) -> RunLayout:
        """Where the result's elements lie in the full tensor, as arithmetic (nothing enumerated)."""
        if self.slice is None:
            return RunLayout(0, self.full_numel, (), ())
        sliced = len(self.slice)
        strides = tuple(math.prod(self.shape[axis + 1 :]) for axis in range(sliced))
        last_start, last_stop = self.slice[-1]
        run_length = (last_stop - last_start) * math.prod(self.shape[sliced:])
        base = sum(start * stride for (start, _), stride in zip(self.slice, strides, strict=True))
        extents = tuple(stop - start for start, stop in self.slice[:-1])
        return RunLayout(base, run_length, extents, strides[:-1])

    def runs(self) -> Iterator[tuple[int, int]]:
        """(start, count) runs of flat full-tensor indices that make up the result, in C order (lazily)."""
        return self.run_layout.runs_from(0, self.numel)


@dataclass(frozen=True)
class BundleSpec:
    """Many named tensors sharing a seed; tensor ``name`` equals the init spec with that seed and name."""

    seed: int
    tensors: tuple[Spec, ...]
    algorithm: int = ALGORITHM_VERSION

    def canonical(self) -> dict[str, Any]:
        tensors = {}
        for spec in self.tensors:
            body = spec.canonical()
            del body["seed"], body["name"]
            body.pop("algorithm", None)  # the bundle's, written once below
            tensors[spec.name] = body
        bundle: dict[str, Any] = {"seed": self.seed, "tensors": tensors}
        if self.algorithm != IMPLICIT_ALGORITHM:
            bundle["algorithm"] = self.algorithm
        return bundle

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    def digest(self) -> str:
        return digest(self.canonical_json(), self.algorithm)

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.tensors)


def canonical_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(canonical: str, algorithm: int) -> str:
    """sha256 hex of ``"initserve-algorithm-<v>\\n" + canonical JSON``: the strong ETag of a spec.

    The canonical JSON of an algorithm-2 (or later) spec holds ``"algorithm"`` as well; that of an
    algorithm-1 spec does not, so algorithm-1 digests are the ones made before versions existed."""
    return hashlib.sha256(f"initserve-algorithm-{algorithm}\n{canonical}".encode()).hexdigest()


# The largest result (tensor or bundle) produced by default: the service's INITSERVE_MAX_BYTES and
# LocalClient's max_bytes, one number so a spec the server refuses is refused locally too.
DEFAULT_MAX_BYTES = 8 << 30


def check_size(spec: Spec | BundleSpec, max_bytes: int) -> None:
    """Raise SpecTooLarge if the result exceeds ``max_bytes``: integer arithmetic, nothing allocated."""
    if spec.nbytes > max_bytes:
        raise SpecTooLarge(("shape",) if isinstance(spec, Spec) else ("tensors",), spec.nbytes, max_bytes)


def parse_within(
    body: object, max_bytes: int | None, *, bundle: bool, default_algorithm: int = ALGORITHM_VERSION
) -> Spec | BundleSpec:
    """:func:`parse_bundle` (``bundle``) or :func:`parse_spec`, then :func:`check_size` against
    ``max_bytes`` (None: the engine's own bound only). Raises SpecError, or SpecTooLarge naming the limit
    that holds: a tensor past the engine's bound (2^62 elements, 16 EiB and more) is refused while
    parsing, and its error names ``max_bytes`` when that is lower — the caller's configured limit."""
    try:
        parsed: Spec | BundleSpec = (
            parse_bundle(body, default_algorithm=default_algorithm)
            if bundle
            else parse_spec(body, default_algorithm=default_algorithm)
        )
    except SpecTooLarge as exc:
        if max_bytes is None or exc.limit <= max_bytes:
            raise
        raise SpecTooLarge(exc.errors[0].loc, exc.nbytes, max_bytes) from None
    if max_bytes is not None:
        check_size(parsed, max_bytes)
    return parsed


# --- parsing ---------------------------------------------------------------------------------------
def parse_spec(
    body: object,
    *,
    defaults: Mapping[str, Any] | None = None,
    loc: Loc = (),
    allowed_keys: tuple[str, ...] = SPEC_KEYS,
    default_algorithm: int = ALGORITHM_VERSION,
) -> Spec:
    """Validate a JSON-like mapping and return the canonical Spec, or raise SpecError naming every
    broken rule. ``defaults`` supplies seed/dtype/layout/name/algorithm (used by bundles).

    ``default_algorithm`` is the version of a spec that names none: the newest for a request, but
    :data:`IMPLICIT_ALGORITHM` (1) for a canonical form read back (a token, safetensors metadata),
    because canonical forms omit ``algorithm`` exactly when it is 1."""
    errors: list[FieldError] = []
    if not isinstance(body, Mapping):
        raise SpecError([FieldError(loc, f"a spec must be a JSON object, got {_kind(body)}")])
    for key in body:
        if key not in allowed_keys:
            errors.append(FieldError((*loc, str(key)), f"unknown field {key!r} (accepted: {', '.join(allowed_keys)})"))
    merged = {**(defaults or {}), **body}
    shape = _parse_shape(merged.get("shape"), loc, errors)
    seed = _parse_seed(merged.get("seed", 0), loc, errors)
    dtype = _parse_choice(merged.get("dtype", DEFAULT_DTYPE), "dtype", tuple(DTYPES), loc, errors)
    layout = _parse_choice(merged.get("layout", DEFAULT_LAYOUT), "layout", LAYOUTS, loc, errors)
    layout_given = "layout" in merged
    name = _parse_name(merged.get("name", DEFAULT_NAME), (*loc, "name"), errors)
    algorithm = _parse_algorithm(merged.get("algorithm", default_algorithm), loc, errors)
    scheme_name = merged.get("scheme")
    scheme = None
    canonical_scheme = resolve_scheme(scheme_name) if isinstance(scheme_name, str) else None
    if "scheme" not in merged:
        errors.append(FieldError((*loc, "scheme"), "scheme is required"))
    elif canonical_scheme is None:
        errors.append(FieldError((*loc, "scheme"), unknown_scheme_message(scheme_name)))
    else:
        scheme = CATALOG[canonical_scheme]
    raw_params = merged.get("params", {})
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, Mapping):
        errors.append(FieldError((*loc, "params"), f"params must be a JSON object, got {_kind(raw_params)}"))
        raw_params = {}
    params: dict[str, ParamValue] = {}
    if scheme is not None:
        params, param_errors = validate_params(scheme.name, scheme.params, raw_params)
        errors += [FieldError((*loc, *error.loc), error.msg) for error in param_errors]
        if not param_errors and scheme.name in COMPUTED_DEFAULTS:
            computed = COMPUTED_DEFAULTS[scheme.name](params)
            for key, value in computed.items():  # e.g. mean + 2·std can overflow to ±inf
                if key not in params and not math.isfinite(float(value)):
                    errors.append(
                        FieldError(
                            (*loc, *culprit(raw_params, params)),
                            f"the computed default params.{key} is {value!r}; it must be finite "
                            f"(give params.{key} explicitly or use smaller params)",
                        )
                    )
            params = {**computed, **params}
    slice_ = _parse_slice(merged.get("slice"), shape, loc, errors) if shape is not None else None
    if errors:
        raise SpecError(errors)
    assert shape is not None and scheme is not None and seed is not None
    if math.prod(shape) > MAX_ELEMENTS:
        raise SpecTooLarge(
            (*loc, "shape"),
            math.prod(shape) * DTYPES[dtype or DEFAULT_DTYPE].itemsize,
            MAX_ELEMENTS * DTYPES[dtype or DEFAULT_DTYPE].itemsize,
        )
    assert dtype is not None and layout is not None and name is not None and algorithm is not None
    layer = Layer(shape, layout, params, algorithm=algorithm)
    rank_error = scheme.rank.check(shape, params, scheme.name)
    if rank_error is not None:
        raise SpecError([FieldError((*loc, *rank_error.loc), rank_error.msg)])
    keras_spelled = scheme.family == "keras" or scheme_name in scheme.keras_spellings
    if keras_spelled and not layout_given and math.prod(shape) > 0:
        ambiguity = _layout_ambiguity(scheme, shape, params, str(scheme_name))
        if ambiguity is not None:
            raise SpecError([FieldError((*loc, "layout"), ambiguity)])
    if scheme.uses_fans and math.prod(shape) > 0:
        params = _fill_fans(scheme, layer, params)
        layer = Layer(shape, layout, params, algorithm=algorithm)
    spec = Spec(shape, scheme.name, tuple(sorted(params.items())), seed, dtype, layout, name, slice_, algorithm)
    if math.prod(shape) > 0:
        try:
            checks = scheme.check(layer) if scheme.check else []
            if checks:
                raise SpecError([FieldError((*loc, *error.loc), error.msg) for error in checks])
            built = spec.built  # builds once; the cached build is the one generation uses
            # The derived checks compute moments and bounds (gain², products of fans) in the same
            # Python float arithmetic, so they are guarded too (delta_orthogonal's gain² raised here).
            derived = check_derived(built.sampler, built.gain, raw_params, params, loc, dtype)
            if derived:
                raise SpecError(derived)
        except (ArithmeticError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            # Python's float arithmetic raises instead of overflowing quietly in a few places (x**2, int→float).
            where = (*loc, *culprit(raw_params, params))
            if isinstance(exc, ZeroDivisionError):
                rule = "a derived std, bound or fan is 0 (a division by zero); it must be > 0"
            elif isinstance(exc, OverflowError):
                rule = "a derived scalar (gain, std or bound) overflows float64; use a smaller magnitude"
            else:
                rule = f"the scheme's arithmetic fails on these params: {exc}"
            raise SpecError([FieldError(where, rule)]) from exc
    return spec


def _layout_ambiguity(
    scheme: Scheme, shape: tuple[int, ...], params: dict[str, ParamValue], spelling: str
) -> str | None:
    """Why a keras-family request (or a keras spelling, ``Orthogonal``) without a layout is refused:
    its result differs between reading the shape as torch's (out, in, *k) and as keras' (*k, in, out);
    None when both give the same law."""
    torch_layer, keras_layer = Layer(shape, "torch", params), Layer(shape, "keras", params)
    (t_in, t_out), (k_in, k_out) = torch_layer.fans, keras_layer.fans
    try:
        torch_built, keras_built = scheme.build(torch_layer), scheme.build(keras_layer)
    except (ArithmeticError, ValueError):
        return None  # params that cannot build a sampler at all: the derived-scalar checks name them
    if _law(torch_built) == _law(keras_built):
        return None
    keras_matrix, torch_matrix = keras_built.sampler, torch_built.sampler
    if isinstance(keras_matrix, STFTKernel):  # no fans: the frame and frequency axes swap
        return (
            f"stft is keras' STFT kernel and shape {list(shape)} reads differently in the two layouts: layout "
            f"'keras' (keras' (frame_length, 1, n_freq)) gives frame_length {keras_matrix.frame_length}, n_freq "
            f"{keras_matrix.n_freq}; layout 'torch' (a Conv1d weight (n_freq, 1, frame_length)) gives frame_length "
            f'{keras_matrix.n_freq}, n_freq {keras_matrix.frame_length}. Say which: add "layout": "keras" or '
            '"layout": "torch"'
        )
    if isinstance(keras_matrix, Orthogonal) and isinstance(torch_matrix, Orthogonal):  # the flattening differs
        k_rows, k_cols = keras_matrix.rows, keras_matrix.cols
        t_rows, t_cols = torch_matrix.rows, torch_matrix.cols
        return (
            f"{spelling!r} spells keras' function, and shape {list(shape)} flattens differently in the two "
            f"layouts: layout 'keras' (as keras, jax and TF1: (∏shape[:-1], shape[-1])) makes the ({k_rows}, "
            f"{k_cols}) matrix orthogonal; layout 'torch' (as torch: (shape[0], ∏shape[1:])) the ({t_rows}, "
            f'{t_cols}) one. Say which: add "layout": "keras" or "layout": "torch"'
        )
    who = (
        f"{scheme.name} is a keras/jax-family scheme"
        if scheme.family == "keras"
        else f"{spelling!r} spells the keras/TF1 function ({scheme.name})"
    )
    return (
        f"{who} and shape {list(shape)} reads differently in the two "
        f"layouts: layout 'keras' ((in, out) / (*k, in, out), as keras, jax and TF1 store kernels) gives "
        f"fan_in {k_in}, fan_out {k_out}; layout 'torch' ((out, in, *k)) gives fan_in {t_in}, fan_out {t_out}. "
        f'Say which: add "layout": "keras" or "layout": "torch"'
    )


def _law(built: Built) -> tuple[object, ...]:
    """What determines the values: the sampler's type and its parameters."""
    sampler = built.sampler
    keys = ("mean", "std", "low", "high", "rows", "cols")  # rows, cols: how a matrix scheme flattens
    return (type(sampler).__name__, *(getattr(sampler, key, None) for key in keys))


def _fill_fans(scheme: Scheme, layer: Layer, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
    """Write the fans used into the canonical params, so spelling them out changes nothing."""
    if scheme.derived is not None:
        return {**params, **scheme.derived(layer)}
    names = {param.name for param in scheme.params}
    fan_in, fan_out = layer.fans
    filled = dict(params)
    if "fan_in" in names and fan_in >= 1:
        filled.setdefault("fan_in", fan_in)
    if "fan_out" in names and fan_out >= 1:
        filled.setdefault("fan_out", fan_out)
    return filled


def parse_bundle(
    body: object, *, max_tensors: int | None = None, default_algorithm: int = ALGORITHM_VERSION
) -> BundleSpec:
    """Validate ``{"seed", "dtype", "layout", "algorithm", "tensors": {name: spec-without-seed}}``;
    ``default_algorithm`` as for :func:`parse_spec`."""
    if not isinstance(body, Mapping):
        raise SpecError([FieldError((), f"a bundle must be a JSON object, got {_kind(body)}")])
    errors: list[FieldError] = []
    for key in body:
        if key not in ("seed", "dtype", "layout", "algorithm", "tensors"):
            errors.append(
                FieldError((str(key),), f"unknown field {key!r} (accepted: seed, dtype, layout, algorithm, tensors)")
            )
    seed = _parse_seed(body.get("seed", 0), (), errors)
    dtype = _parse_choice(body.get("dtype", DEFAULT_DTYPE), "dtype", tuple(DTYPES), (), errors)
    layout = _parse_choice(body.get("layout", DEFAULT_LAYOUT), "layout", LAYOUTS, (), errors)
    algorithm = _parse_algorithm(body.get("algorithm", default_algorithm), (), errors)
    tensors = body.get("tensors")
    if not isinstance(tensors, Mapping) or not tensors:
        errors.append(
            FieldError(("tensors",), f"tensors must be a non-empty JSON object of name → spec, got {_kind(tensors)}")
        )
        raise SpecError(errors)
    if max_tensors is not None and len(tensors) > max_tensors:
        errors.append(FieldError(("tensors",), f"at most {max_tensors} tensors per bundle, got {len(tensors)}"))
        raise SpecError(errors)
    specs: list[Spec] = []
    too_large: SpecTooLarge | None = None  # a tensor past the engine's bound: a size problem (413), not a bad spec
    for tensor_name, tensor_body in tensors.items():
        name = _parse_name(tensor_name, ("tensors", str(tensor_name)), errors)
        if name is None or seed is None or dtype is None or layout is None or algorithm is None:
            continue
        defaults: dict[str, Any] = {"seed": seed, "dtype": dtype, "name": name, "algorithm": algorithm}
        if "layout" in body:  # a bundle-level layout counts as given for every tensor
            defaults["layout"] = layout
        try:
            specs.append(
                parse_spec(
                    tensor_body,
                    defaults=defaults,
                    loc=("tensors", name),
                    allowed_keys=("shape", "scheme", "params", "dtype", "layout", "slice"),
                )
            )
        except SpecTooLarge as error:
            too_large = too_large or error
        except SpecError as error:
            errors += error.errors
    if errors:
        raise SpecError(errors)
    if too_large is not None:
        raise too_large
    assert seed is not None and algorithm is not None
    return BundleSpec(seed, tuple(sorted(specs, key=lambda spec: spec.name)), algorithm)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_shape(value: object, loc: Loc, errors: list[FieldError]) -> tuple[int, ...] | None:
    if value is None:
        errors.append(FieldError((*loc, "shape"), "shape is required"))
        return None
    if not isinstance(value, list | tuple):
        errors.append(FieldError((*loc, "shape"), f"shape must be an array of integers, got {_kind(value)}"))
        return None
    if len(value) > MAX_RANK:
        errors.append(FieldError((*loc, "shape"), f"shape may have at most {MAX_RANK} dimensions, got {len(value)}"))
        return None
    ok = True
    for axis, dim in enumerate(value):
        if not _is_int(dim):
            errors.append(FieldError((*loc, "shape", axis), f"shape[{axis}] must be an integer, got {_kind(dim)}"))
            ok = False
        elif dim < 0:
            errors.append(FieldError((*loc, "shape", axis), f"shape[{axis}] must be ≥ 0, got {dim}"))
            ok = False
        elif dim > MAX_DIM:
            errors.append(FieldError((*loc, "shape", axis), f"shape[{axis}] must be ≤ 2^63-1, got {dim}"))
            ok = False
    return tuple(value) if ok else None


def _parse_seed(value: object, loc: Loc, errors: list[FieldError]) -> int | None:
    if not _is_int(value):
        errors.append(FieldError((*loc, "seed"), f"seed must be an integer, got {_kind(value)}"))
        return None
    assert isinstance(value, int)
    if not 0 <= value < SEED_LIMIT:
        errors.append(FieldError((*loc, "seed"), f"seed must be in 0..2^64-1, got {value}"))
        return None
    return value


def _parse_algorithm(value: object, loc: Loc, errors: list[FieldError]) -> int | None:
    if not _is_int(value) or value not in SUPPORTED_ALGORITHMS:
        shown = repr(value) if _is_int(value) else _kind(value)
        supported = ", ".join(map(str, SUPPORTED_ALGORITHMS))
        errors.append(FieldError((*loc, "algorithm"), f"algorithm must be one of {supported}; got {shown}"))
        return None
    assert isinstance(value, int)
    return value


def _parse_choice(
    value: object, field: str, choices: tuple[str, ...], loc: Loc, errors: list[FieldError]
) -> str | None:
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) else _kind(value)
        errors.append(FieldError((*loc, field), f"{field} must be one of {', '.join(choices)}; got {shown}"))
        return None
    return value


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a valid tensor name, or None. Any Unicode text torch or keras can produce:
    1–256 characters (code points), no control characters (Cc), line or paragraph
    separators (Zl, Zp) or lone surrogates (Cs), and not ``__metadata__`` (safetensors' own key)."""
    if not isinstance(value, str):
        return f"name must be a string, got {_kind(value)}"
    if not value:
        return "name must not be empty"
    if len(value) > MAX_NAME_CHARS:
        return f"name must be at most {MAX_NAME_CHARS} characters, got {len(value)}"
    for position, char in enumerate(value):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return (
                f"name must not contain control characters, line separators or lone surrogates; "
                f"got U+{ord(char):04X} at position {position}"
            )
    if value == "__metadata__":
        return "name must not be '__metadata__' (the safetensors header's own key)"
    return None


def _parse_name(value: object, loc: Loc, errors: list[FieldError]) -> str | None:
    problem = name_problem(value)
    if problem is not None:
        errors.append(FieldError(loc, problem))
        return None
    assert isinstance(value, str)
    return value


def _parse_slice(
    value: object, shape: tuple[int, ...], loc: Loc, errors: list[FieldError]
) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        errors.append(FieldError((*loc, "slice"), f"slice must be an array of [start, stop] pairs, got {_kind(value)}"))
        return None
    if len(value) > len(shape):
        errors.append(
            FieldError((*loc, "slice"), f"slice has {len(value)} pairs but shape has {len(shape)} dimensions")
        )
        return None
    pairs: list[tuple[int, int]] = []
    for axis, pair in enumerate(value):
        where = (*loc, "slice", axis)
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(_is_int(v) for v in pair):
            errors.append(FieldError(where, f"slice[{axis}] must be a pair of integers [start, stop]"))
            return None
        start, stop = pair
        if not 0 <= start <= stop <= shape[axis]:
            errors.append(
                FieldError(
                    where,
                    f"slice[{axis}] must satisfy 0 ≤ start ≤ stop ≤ shape[{axis}] "
                    f"= {shape[axis]}, got [{start}, {stop}]",
                )
            )
            return None
        pairs.append((start, stop))
    # Trailing pairs that cover their whole dimension change nothing: drop them.
    while pairs and pairs[-1] == (0, shape[len(pairs) - 1]):
        pairs.pop()
    return tuple(pairs) or None
