"""Derived models: a plan per target tensor (checked against the checkpoints' manifests before any byte is
read), the arithmetic that produces it, and the safetensors file that holds them all.

A derived file is a pure function of (canonical derive request, algorithm version): every source is named
by its content digest, every fresh tensor is the one initserve serves for (seed, name, scheme). The engine
does no I/O: bytes of source tensors come from a ``read(tensor digest) -> bytes`` callable the caller
supplies (the service's checkpoint store).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import derive_bounds as bounds
from . import derive_ops as ops
from .algorithms import IMPLICIT_ALGORITHM
from .checkpoint import ST_DTYPES, canonical_json
from .derive_rules import DeriveRequest, Rule, TargetTensor
from .dtypes import DTYPES, cast_into
from .errors import FieldError, Loc, SpecError, SpecTooLarge
from .generate import generate
from .kernels import Kernel
from .magnitudes import SCANNED, Magnitude
from .safetensors import encode_header, overlapping, place
from .spec import Spec, parse_spec

# Derive requests name no algorithm version (yet): they keep version 1, the one their files, ETags and
# golden digests were made with (orthogonal reinit by LAPACK). A field selecting version 2 (bitwise
# orthogonal) would be the derive API's next step.
DERIVE_ALGORITHM = IMPLICIT_ALGORITHM

DERIVE_VERSION = 1
CHUNK_BYTES = 8 << 20  # streamed pieces of a computed tensor
ALIGNMENT = 8

Reader = Callable[[str], bytes | memoryview]  # tensor digest -> the tensor's raw bytes (verified)
Measure = Callable[["ManifestTensor"], Magnitude]  # a float tensor's magnitude from its bytes


@dataclass(frozen=True)
class ManifestTensor:
    """What a checkpoint's manifest says about one tensor."""

    dtype: str  # safetensors code
    shape: tuple[int, ...]
    digest: str
    # Largest finite |x| and count of non-finite values (float tensors): what the overflow rules check
    # targets against before any byte is read. None: not known (the service always knows it).
    magnitude: Magnitude | None = None


Manifest = Mapping[str, ManifestTensor]


@dataclass(frozen=True)
class SourceRef:
    checkpoint: str
    name: str
    tensor: ManifestTensor


@dataclass(frozen=True)
class PlannedTensor:
    """How one target tensor is made: its rule, the source tensors it reads, the generation spec it uses."""

    target: TargetTensor
    rule: Rule
    action: str  # the resolved action (channel_adapt's "auto" resolves to copy, sum or repeat)
    sources: tuple[SourceRef, ...]
    spec: Spec | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def itemsize(self) -> int:
        return ST_DTYPES[self.target.code][0]

    @property
    def nbytes(self) -> int:
        return math.prod(self.target.shape) * self.itemsize

    def record(self) -> dict[str, Any]:
        """What the file's metadata says about this tensor: rule, sources and generation spec."""
        return {
            "rule": self.rule.index,
            "action": self.action,
            "match": self.rule.match,
            "sources": [{"checkpoint": s.checkpoint, "name": s.name, "digest": s.tensor.digest} for s in self.sources],
            "spec": self.spec.canonical() if self.spec is not None else None,
            **({"options": dict(self.options)} if self.options else {}),
        }


def derive_digest(canonical: str, algorithm: int = DERIVE_ALGORITHM) -> str:
    """sha256 hex of ``"initserve-derive/1 algorithm-<v>\\n" + canonical request``: the ETag of a derived file."""
    return hashlib.sha256(f"initserve-derive/{DERIVE_VERSION} algorithm-{algorithm}\n{canonical}".encode()).hexdigest()


# --- planning ----------------------------------------------------------------------------------------
class _Planner:
    def __init__(
        self, request: DeriveRequest, manifests: Mapping[str, Manifest], measure: Measure | None = None
    ) -> None:
        self.request = request
        self.manifests = manifests
        self.measure = measure
        self.errors: list[FieldError] = []
        self.too_large: tuple[TargetTensor, SpecTooLarge] | None = None  # a generated tensor past 16 EiB

    def fail(self, loc: Loc, msg: str) -> None:
        self.errors.append(FieldError(loc, msg))

    def source(self, rule: Rule, target: TargetTensor, checkpoint: str | None = None) -> SourceRef | None:
        checkpoint = checkpoint or self.request.source
        name = rule.source_name or target.name
        tensor = self.manifests[checkpoint].get(name)
        if tensor is None:
            where: Loc = ("rules", rule.index, "from") if rule.index >= 0 else ("target", "tensors", target.name)
            self.fail(where, f"checkpoint {checkpoint[:12]}… has no tensor {name!r} (needed for {target.name!r})")
            return None
        return SourceRef(checkpoint, name, tensor)

    def spec(self, rule: Rule, target: TargetTensor, body: dict[str, Any]) -> Spec | None:
        try:
            return parse_spec(
                {"seed": self.request.seed, "layout": self.request.layout, "name": target.name, **body},
                loc=("rules", rule.index),
                default_algorithm=DERIVE_ALGORITHM,
            )
        except SpecTooLarge as exc:
            # A size problem, not a malformed rule: reported as such (413) unless the request is invalid.
            self.too_large = self.too_large or (target, exc)
            return None
        except SpecError as exc:
            for error in exc.errors:
                self.fail(error.loc, f"{target.name!r}: {error.msg}")
            return None

    def loc(self, target: TargetTensor) -> Loc:
        return ("target", "tensors", target.name)

    def need_float(self, target: TargetTensor, *refs: SourceRef, engine_dtype: bool = True) -> bool:
        ok = True
        if engine_dtype and target.dtype not in DTYPES:
            self.fail((*self.loc(target), "dtype"), f"{target.name!r}: this action writes {', '.join(DTYPES)}")
            ok = False
        for ref in refs:
            if ST_DTYPES[ref.tensor.dtype][1] != "float" or ref.tensor.dtype not in ("F16", "BF16", "F32", "F64"):
                self.fail(
                    self.loc(target),
                    f"{target.name!r}: source {ref.name!r} is {ref.tensor.dtype}; "
                    "this action needs F16, BF16, F32 or F64",
                )
                ok = False
        return ok

    def same_shape(self, target: TargetTensor, ref: SourceRef, what: str) -> bool:
        if ref.tensor.shape != target.shape:
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: {what} needs the source shape {list(ref.tensor.shape)} to equal the target shape "
                f"{list(target.shape)}",
            )
            return False
        return True

    # --- overflow rules (derive_bounds.py; docs/pretrained.md, "Overflow") ----------------------------
    def magnitude(self, ref: SourceRef) -> Magnitude | None:
        """The source's largest finite |x| and non-finite count: the manifest's, else measured; None if unknown."""
        if ref.tensor.magnitude is not None:
            return ref.tensor.magnitude
        if self.measure is None or ref.tensor.dtype not in SCANNED:
            return None
        return self.measure(ref.tensor)

    def converts(self, target: TargetTensor, ref: SourceRef, what: str) -> bool:
        """A float source rounded to another float dtype: its largest finite |x| must round to a finite value
        (inf and NaN stay what they are). Exact: M is a value of the source."""
        if ref.tensor.dtype == target.code or target.dtype not in DTYPES:
            return True
        found = self.magnitude(ref)
        if found is None or bounds.fits(found.max_abs, target.dtype):
            return True
        self.fail(
            (*self.loc(target), "dtype"),
            f"{target.name!r}: {what} of {ref.name!r} (max |x| {found.max_abs:.6g}) to {target.dtype}: "
            f"{found.max_abs:.6g} is {bounds.beyond(target.dtype)}; use a wider dtype",
        )
        return False

    def finite_sources(self, target: TargetTensor, rule: Rule, *refs: SourceRef) -> list[float] | None:
        """The largest finite |x| of each source of an arithmetic action, or None after failing: arithmetic
        would spread a source's inf or NaN into other values (a mean, a sum), so it needs finite sources."""
        found = []
        for ref in refs:
            magnitude = self.magnitude(ref)
            if magnitude is None:
                found.append(0.0)
                continue
            if magnitude.nonfinite:
                self.fail(
                    self.loc(target),
                    f"{target.name!r}: source {ref.name!r} holds {magnitude.nonfinite} inf or NaN values; "
                    f"{rule.action} needs finite sources (copy the tensor, or repair the checkpoint)",
                )
                return None
            found.append(magnitude.max_abs)
        return found

    def bounded(self, target: TargetTensor, bound: float, loc: Loc, what: str) -> bool:
        if bounds.fits(bound, target.dtype):
            return True
        self.fail(loc, f"{target.name!r}: {what} can reach max |x| {bound:.6g}, {bounds.beyond(target.dtype)}")
        return False

    def plan(self, target: TargetTensor) -> PlannedTensor | None:
        rule = self.request.rule_for(target.name)
        return getattr(self, f"_plan_{rule.action}")(rule, target)  # type: ignore[no-any-return]

    def _plan_copy(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self.same_shape(target, ref, "copy") or not self._convertible(target, ref):
            return None
        if not self.converts(target, ref, "copy"):
            return None
        return PlannedTensor(target, rule, "copy", (ref,))

    def _convertible(self, target: TargetTensor, ref: SourceRef) -> bool:
        if ref.tensor.dtype == target.code:
            return True
        if target.dtype in DTYPES and ref.tensor.dtype in ("F16", "BF16", "F32", "F64"):
            return True
        self.fail(
            (*self.loc(target), "dtype"),
            f"{target.name!r}: source is {ref.tensor.dtype}, target {target.dtype}: only floating types convert",
        )
        return False

    def _plan_slice(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self._convertible(target, ref):
            return None
        # The manifest knows the whole tensor's largest |x|, not the slice's: the rule bounds the whole.
        if not self.converts(target, ref, "slice (of the whole tensor)"):
            return None
        shape = ref.tensor.shape
        pairs = rule.fields["slice"]
        if pairs is None:
            if len(shape) != len(target.shape) or any(t > s for t, s in zip(target.shape, shape, strict=True)):
                self.fail(
                    (*self.loc(target), "shape"),
                    f"{target.name!r}: slice without 'slice' takes the leading part of each dimension, so the target "
                    f"shape {list(target.shape)} must fit in the source shape {list(shape)}",
                )
                return None
            pairs = [[0, t] for t in target.shape]
        if len(pairs) > len(shape) or any(stop > shape[i] for i, (_, stop) in enumerate(pairs)):
            self.fail(
                ("rules", rule.index, "slice"), f"{target.name!r}: slice {pairs} exceeds the source shape {list(shape)}"
            )
            return None
        result = tuple(stop - start for start, stop in pairs) + shape[len(pairs) :]
        if result != target.shape:
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: slice {pairs} of {list(shape)} has shape {list(result)}, "
                f"target is {list(target.shape)}",
            )
            return None
        return PlannedTensor(target, rule, "slice", (ref,), options={"slice": [list(p) for p in pairs]})

    def _plan_pad(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self.need_float(target, ref):
            return None
        shape = ref.tensor.shape
        if len(shape) != len(target.shape) or any(s > t for s, t in zip(shape, target.shape, strict=True)):
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: pad needs the source shape {list(shape)} to fit in the target shape "
                f"{list(target.shape)} (same rank)",
            )
            return None
        if not self.converts(target, ref, "pad"):
            return None
        spec = self.spec(rule, target, self._scheme_body(rule, target, target.dtype))
        return None if spec is None else PlannedTensor(target, rule, "pad", (ref,), spec)

    def _scheme_body(self, rule: Rule, target: TargetTensor, dtype: str) -> dict[str, Any]:
        body: dict[str, Any] = {"shape": list(target.shape), "scheme": rule.fields["scheme"], "dtype": dtype}
        if rule.fields.get("params"):
            body["params"] = rule.fields["params"]
        return body

    def _plan_reinit(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        if not self.need_float(target):
            return None
        spec = self.spec(rule, target, self._scheme_body(rule, target, target.dtype))
        return None if spec is None else PlannedTensor(target, rule, "reinit", (), spec)

    def _plan_mean_rows(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self.need_float(target, ref):
            return None
        shape = ref.tensor.shape
        if (
            not shape
            or len(shape) != len(target.shape)
            or shape[1:] != target.shape[1:]
            or not 1 <= shape[0] <= target.shape[0]
        ):
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: mean_rows appends rows: the source {list(shape)} needs ≥ 1 row, at most the "
                f"target's {list(target.shape)[:1]}, and the same trailing dimensions",
            )
            return None
        spec = None
        if rule.fields["noise"] > 0 and target.shape[0] > shape[0]:
            spec = self.spec(
                rule,
                target,
                {
                    "shape": list(target.shape),
                    "scheme": "normal",
                    "dtype": "float64",
                    "slice": [[shape[0], target.shape[0]]],
                },
            )
            if spec is None:
                return None
        if not self.converts(target, ref, "mean_rows's kept rows") or not self._mean_rows_fit(rule, target, ref, spec):
            return None
        return PlannedTensor(target, rule, "mean_rows", (ref,), spec)

    def _mean_rows_fit(self, rule: Rule, target: TargetTensor, ref: SourceRef, spec: Spec | None) -> bool:
        if target.shape[0] == ref.tensor.shape[0]:
            return True  # no new rows: a copy
        found = self.finite_sources(target, rule, ref)
        if found is None:
            return False
        (max_abs,) = found
        rows, noise = ref.tensor.shape[0], float(rule.fields["noise"])
        sums = bounds.mean_rows_sums(max_abs, rows, noise)
        if not math.isfinite(sums) or sums >= bounds.F64_MAX:
            self.fail(
                self.loc(target),
                f"{target.name!r}: mean_rows sums {rows} rows of {ref.name!r} (max |x| {max_abs:.6g}) in float64: "
                f"the sum{' of squared deviations' if noise > 0 else ''} can reach {sums:.6g}, beyond float64's "
                f"largest finite {bounds.F64_MAX:.6g}",
            )
            return False
        z_reach = float(spec.built.sampler.max_abs()) if spec is not None else 0.0
        bound = bounds.mean_rows_bound(max_abs, noise, z_reach)
        noisy = noise > 0 and bounds.fits(bounds.mean_rows_bound(max_abs, 0.0, 0.0), target.dtype)
        where: Loc = ("rules", rule.index, "noise") if noisy else (*self.loc(target), "dtype")
        what = (
            f"mean_rows's new rows (μ + noise·σ·z ≤ M + {noise:g}·M·{z_reach:g}, M = {max_abs:.6g} the max |x| of "
            f"{ref.name!r}, σ ≤ M)"
        )
        return self.bounded(target, bound, where, what)

    def _plan_channel_adapt(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self.need_float(target, ref):
            return None
        shape = ref.tensor.shape
        if (
            len(shape) < 3
            or len(target.shape) != len(shape)
            or target.shape[0] != shape[0]
            or target.shape[2:] != shape[2:]
        ):
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: channel_adapt maps a conv weight (O, I, *k) to (O, C, *k); source {list(shape)}, "
                f"target {list(target.shape)}",
            )
            return None
        channels = shape[1]
        in_chans = rule.fields["in_chans"] or target.shape[1]
        base = rule.fields["base_chans"] or channels
        mode = rule.fields["mode"]
        if mode == "auto":
            mode = "copy" if in_chans == base else ("sum" if in_chans == 1 else "repeat")
        if mode == "sum":
            if channels > base and channels % base:
                self.fail(
                    ("rules", rule.index, "base_chans"),
                    f"{target.name!r}: {channels} channels are not a multiple of {base}",
                )
                return None
            expected = (shape[0], channels // base if channels > base else 1, *shape[2:])
        elif mode == "repeat":
            if channels != base:
                self.fail(
                    ("rules", rule.index, "base_chans"),
                    f"{target.name!r}: repeat needs the source's {channels} channels to equal base_chans={base} "
                    "(timm raises NotImplementedError here)",
                )
                return None
            expected = (shape[0], in_chans, *shape[2:])
        else:
            expected = shape
        if expected != target.shape:
            self.fail(
                (*self.loc(target), "shape"),
                f"{target.name!r}: channel_adapt ({mode}, in_chans={in_chans}, base_chans={base}) "
                f"gives {list(expected)}, "
                f"target is {list(target.shape)}",
            )
            return None
        if not self._channel_adapt_fits(rule, target, ref, mode, in_chans, base):
            return None
        options = {"mode": mode, "in_chans": in_chans, "base_chans": base}
        return PlannedTensor(target, rule, "channel_adapt", (ref,), options=options)

    def _channel_adapt_fits(
        self, rule: Rule, target: TargetTensor, ref: SourceRef, mode: str, in_chans: int, base: int
    ) -> bool:
        if mode == "copy":
            return self.converts(target, ref, "channel_adapt (a copy)")
        found = self.finite_sources(target, rule, ref)
        if found is None:
            return False
        (max_abs,) = found
        in_float32 = ref.tensor.dtype != "F64"  # timm's conv_weight.float(); float64 sources stay float64
        if mode == "sum":
            summed = min(ref.tensor.shape[1], base)
            bound = bounds.channel_sum_bound(max_abs, summed, in_float32)
            what = f"channel_adapt's sum of {summed} channels of {ref.name!r} (≤ {summed}·{max_abs:.6g})"
        else:
            bound = bounds.channel_repeat_bound(max_abs, base, in_chans, in_float32)
            what = f"channel_adapt's repeat of {ref.name!r} (≤ {max_abs:.6g}·{base}/{in_chans})"
        arithmetic = "float32" if in_float32 else "float64"
        if not bounds.fits(bound, arithmetic):
            self.fail(
                ("rules", rule.index, "mode"),
                f"{target.name!r}: {what} can reach max |x| {bound:.6g} in the {arithmetic} arithmetic timm uses, "
                f"{bounds.beyond(arithmetic)}",
            )
            return False
        return self.bounded(target, bound, (*self.loc(target), "dtype"), what)

    def _plan_shrink_perturb(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        ref = self.source(rule, target)
        if ref is None or not self.need_float(target, ref) or not self.same_shape(target, ref, "shrink_perturb"):
            return None
        spec = self.spec(rule, target, self._scheme_body(rule, target, "float64"))
        if spec is None:
            return None
        found = self.finite_sources(target, rule, ref)
        if found is None:
            return None
        (max_abs,) = found
        shrink, noise = float(rule.fields["shrink"]), float(rule.fields["noise"])
        eps_reach = float(spec.built.sampler.max_abs()) if math.prod(target.shape) else 0.0
        kept, added = bounds.shrink_perturb_terms(max_abs, shrink, noise, eps_reach)
        field_name = "shrink" if kept >= added else "noise"
        what = (
            f"shrink_perturb output (≤ shrink·M + noise·max|ε| = {shrink:g}·{max_abs:.6g} + {noise:g}·{eps_reach:.6g}, "
            f"M the max |x| of {ref.name!r}, ε from {spec.scheme})"
        )
        if not self.bounded(target, kept + added, ("rules", rule.index, field_name), what):
            return None
        return PlannedTensor(target, rule, "shrink_perturb", (ref,), spec)

    def _plan_soup(self, rule: Rule, target: TargetTensor) -> PlannedTensor | None:
        refs = [self.source(rule, target, checkpoint) for checkpoint in rule.fields["checkpoints"]]
        present = [ref for ref in refs if ref is not None]
        if len(present) != len(refs) or not self.need_float(target, *present):
            return None
        if not all(self.same_shape(target, ref, "soup") for ref in present):
            return None
        found = self.finite_sources(target, rule, *present)
        if found is None:
            return None
        bound = bounds.soup_bound(max(found, default=0.0), len(present))
        if not self.bounded(
            target, bound, (*self.loc(target), "dtype"), "soup (a weighted mean: ≤ the sources' max |x|)"
        ):
            return None
        return PlannedTensor(target, rule, "soup", tuple(present))


def plan_derive(
    request: DeriveRequest,
    manifests: Mapping[str, Manifest],
    *,
    max_bytes: int | None = None,
    measure: Measure | None = None,
) -> DerivedFile:
    """Check every target tensor against its rule and the manifests; raise :class:`SpecError` naming each
    problem (loc from the request root), or :class:`SpecTooLarge` past ``max_bytes``. Reads no tensor, except
    through ``measure`` for a float source whose manifest entry has no magnitude (None: its checks are skipped).

    The overflow rules (:mod:`.derive_bounds`) refuse every request whose output could hold an infinity
    the sources do not: a conversion whose source max |x| rounds to infinity in the target dtype, arithmetic
    whose bound passes the target's (or float64's / float32's) range, arithmetic on a source with inf/NaN."""
    planner = _Planner(request, manifests, measure)
    planned = [p for target in request.tensors if (p := planner.plan(target)) is not None]
    if planner.errors:
        raise SpecError(planner.errors)
    if planner.too_large is not None:
        target, exc = planner.too_large
        limit = exc.limit if max_bytes is None else min(exc.limit, max_bytes)
        raise SpecTooLarge((*planner.loc(target), "shape"), exc.nbytes, limit)
    file = DerivedFile(request, tuple(planned))
    if max_bytes is not None and file.total_length > max_bytes:
        raise SpecTooLarge(("target", "tensors"), file.total_length, max_bytes)
    return file


# --- computing ---------------------------------------------------------------------------------------
_RAW_VIEWS = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}


def _raw(data: bytes | memoryview, dtype: str, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    return np.frombuffer(data, dtype=_RAW_VIEWS[ST_DTYPES[dtype][0]]).reshape(shape)


def _cast(values: npt.NDArray[np.floating], target: TargetTensor) -> npt.NDArray[Any]:
    info = DTYPES[target.dtype]
    out = np.empty(values.shape, dtype=info.storage)
    cast_into(np.asarray(values, dtype=np.float64), out, info)
    return out


def _converted(data: bytes | memoryview, ref: SourceRef, target: TargetTensor) -> npt.NDArray[Any]:
    """The source in the target's storage type: its own bits when the dtypes agree, else rounded once."""
    if ref.tensor.dtype == target.code:
        raw = _raw(data, ref.tensor.dtype, ref.tensor.shape)
        return raw.view(DTYPES[target.dtype].storage) if target.dtype in DTYPES else raw
    return _cast(ops.widen(data, ref.tensor.dtype, ref.tensor.shape), target)


def compute(item: PlannedTensor, read: Reader, kernel: Kernel | None = None) -> list[memoryview]:
    """The target tensor's bytes (C order, little-endian, the target dtype) as consecutive pieces: a
    piece may be the source's own bytes, uncopied. ``kernel``: which implementation generates fresh
    tensors (they agree byte for byte; None: the default)."""
    if item.action == "mean_rows":
        return _mean_rows(item, read, kernel)
    return [memoryview(_compute_whole(item, read, kernel)).cast("B")]


def _compute_whole(item: PlannedTensor, read: Reader, kernel: Kernel | None) -> bytes | memoryview:
    action, target = item.action, item.target
    if action in ("copy", "channel_adapt") and item.options.get("mode", "copy") == "copy":
        ref = item.sources[0]
        data = read(ref.tensor.digest)
        return data if ref.tensor.dtype == target.code else _converted(data, ref, target).tobytes()
    if action == "slice":
        ref = item.sources[0]
        values = _converted(read(ref.tensor.digest), ref, target)
        index = tuple(slice(a, b) for a, b in item.options["slice"])
        return np.ascontiguousarray(values[index]).tobytes()
    if action == "reinit":
        assert item.spec is not None
        return generate(item.spec, kernel=kernel).tobytes()
    if action == "pad":
        assert item.spec is not None
        ref = item.sources[0]
        result = generate(item.spec, kernel=kernel)
        result[tuple(slice(0, s) for s in ref.tensor.shape)] = _converted(read(ref.tensor.digest), ref, target)
        return result.tobytes()
    if action == "channel_adapt":
        ref = item.sources[0]
        data = read(ref.tensor.digest)
        weight = ops.widen(data, ref.tensor.dtype, ref.tensor.shape)
        if ref.tensor.dtype != "F64":
            weight = weight.astype(np.float32)  # timm: conv_weight.float()
        adapted = ops.channel_adapt(weight, item.options["in_chans"], item.options["base_chans"], item.options["mode"])
        return _cast(adapted, target).tobytes()
    if action == "shrink_perturb":
        assert item.spec is not None
        ref = item.sources[0]
        source = ops.widen(read(ref.tensor.digest), ref.tensor.dtype, ref.tensor.shape)
        epsilon = np.asarray(generate(item.spec, kernel=kernel), dtype=np.float64)
        noise = float(item.rule.fields["noise"])
        return _cast(ops.shrink_perturb(source, float(item.rule.fields["shrink"]), noise, epsilon), target).tobytes()
    if action == "soup":
        sources = [ops.widen(read(r.tensor.digest), r.tensor.dtype, r.tensor.shape) for r in item.sources]
        weights = item.rule.fields["weights"] or [1.0] * len(sources)
        return _cast(ops.soup(sources, [float(w) for w in weights]), target).tobytes()
    raise AssertionError(f"unplanned action {action}")


def _mean_rows(item: PlannedTensor, read: Reader, kernel: Kernel | None) -> list[memoryview]:
    """The kept rows (the source's bytes themselves when the dtypes agree), then the new rows."""
    ref, target = item.sources[0], item.target
    data = read(ref.tensor.digest)
    rows, new = ref.tensor.shape[0], target.shape[0] - ref.tensor.shape[0]
    width = math.prod(target.shape[1:])
    kept = memoryview(data).cast("B") if ref.tensor.dtype == target.code else _converted(data, ref, target).data
    pieces = [kept.cast("B")]
    if new:
        source = ops.native(data, ref.tensor.dtype, ref.tensor.shape).reshape(rows, width)
        z = None
        if item.spec is not None:
            z = np.asarray(generate(item.spec, kernel=kernel), dtype=np.float64).reshape(new, width)
        added = _cast(ops.mean_rows(source, new, float(item.rule.fields["noise"]), z), target)
        pieces.append(added.data.cast("B"))
    return pieces


def _cut(pieces: list[memoryview], start: int, stop: int) -> Iterator[memoryview]:
    """Bytes [start, stop) of the concatenated pieces, in views of at most CHUNK_BYTES."""
    offset = 0
    for piece in pieces:
        lo, hi = max(start, offset), min(stop, offset + piece.nbytes)
        for first in range(lo, hi, CHUNK_BYTES):
            yield piece[first - offset : min(first + CHUNK_BYTES, hi) - offset]
        offset += piece.nbytes


# --- the file ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    item: PlannedTensor
    begin: int
    end: int


class DerivedFile:
    """The safetensors file of a derive plan; tensors are computed only when their bytes are read.

    Layout as the engine's other files: tensors ordered by descending itemsize then name, JSON header with
    sorted keys padded to 8 bytes. ``__metadata__``: ``initserve.derive`` (the canonical request),
    ``initserve.algorithm``, ``initserve.derive_version`` and, per tensor, ``initserve.tensor.<name>``
    (the canonical JSON of :meth:`PlannedTensor.record`).
    """

    def __init__(self, request: DeriveRequest, planned: tuple[PlannedTensor, ...]) -> None:
        self.request = request
        self.canonical_json = request.canonical_json()
        self.digest = derive_digest(self.canonical_json)
        placed, data_length = place(
            planned, itemsize=lambda p: p.itemsize, name=lambda p: p.target.name, nbytes=lambda p: p.nbytes
        )
        self.entries = tuple(_Entry(*entry) for entry in placed)
        self.header = self._header()
        self.data_start = len(self.header)
        self.total_length = self.data_start + data_length

    def _header(self) -> bytes:
        metadata = {
            "initserve.algorithm": str(DERIVE_ALGORITHM),
            "initserve.derive_version": str(DERIVE_VERSION),
            "initserve.derive": self.canonical_json,
        }
        body: dict[str, object] = {}
        for entry in self.entries:
            target = entry.item.target
            metadata[f"initserve.tensor.{target.name}"] = canonical_json(entry.item.record())
            body[target.name] = {
                "dtype": target.code,
                "shape": list(target.shape),
                "data_offsets": [entry.begin, entry.end],
            }
        body["__metadata__"] = metadata
        return encode_header(body)

    def iter_bytes_with(
        self, read: Reader, start: int = 0, stop: int | None = None, *, kernel: Kernel | None = None
    ) -> Iterator[memoryview]:
        """Bytes [start, stop) of the file; only tensors the range overlaps are computed, one at a time."""
        stop = self.total_length if stop is None else min(stop, self.total_length)
        if start >= stop:
            return
        if start < self.data_start:
            yield memoryview(self.header)[start : min(stop, self.data_start)]
        for entry, lo, hi in overlapping(self.entries, self.data_start, start, stop):
            pieces = compute(entry.item, read, kernel)
            computed = sum(piece.nbytes for piece in pieces)
            if computed != entry.end - entry.begin:
                raise AssertionError(
                    f"{entry.item.target.name}: computed {computed} bytes, planned {entry.end - entry.begin}"
                )
            yield from _cut(pieces, lo, hi)

    def to_bytes(self, read: Reader, *, kernel: Kernel | None = None) -> bytes:
        return b"".join(bytes(view) for view in self.iter_bytes_with(read, kernel=kernel))
