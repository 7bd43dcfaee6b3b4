"""The derive request: target model, source checkpoint and ordered rules, validated into canonical form.

``{"source": <checkpoint digest>, "target": {"seed", "layout", "tensors": {name: {"shape", "dtype"}}},
"rules": [{"match": <fnmatch pattern>, "action": ..., ...}, ...]}``. Each target tensor takes the first
rule whose ``match`` (``fnmatch.fnmatchcase`` over the full name) matches it; a tensor no rule matches is
copied. The canonical form (defaults filled in, keys sorted) is what the derive digest, token and file
metadata are made from. Formulas: docs/pretrained.md.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .checkpoint import DTYPE_CODES, canonical_json, check_tensor_name, is_digest
from .errors import FieldError, Loc, SpecError

ACTIONS = ("copy", "slice", "pad", "reinit", "mean_rows", "channel_adapt", "shrink_perturb", "soup")
MAX_RULES = 256
MAX_SOUP = 16
LAYOUTS = ("torch", "keras")
SEED_LIMIT = 1 << 64
MAX_RANK = 8

# Fields each action accepts besides "match", "action" and "from", with their defaults (None: required).
_FIELDS: dict[str, dict[str, Any]] = {
    "copy": {},
    "slice": {"slice": None},
    "pad": {"scheme": None, "params": {}},
    "reinit": {"scheme": None, "params": {}},
    "mean_rows": {"noise": 0.0},
    "channel_adapt": {"mode": "auto", "base_chans": None, "in_chans": None},
    "shrink_perturb": {"shrink": None, "noise": None, "scheme": "normal", "params": {}},
    "soup": {"checkpoints": None, "weights": None},
}
_OPTIONAL_NULL = {
    ("slice", "slice"),
    ("channel_adapt", "base_chans"),
    ("channel_adapt", "in_chans"),
    ("soup", "weights"),
}


@dataclass(frozen=True)
class TargetTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # the API name: float32, bfloat16, int64, ...

    @property
    def code(self) -> str:
        return DTYPE_CODES[self.dtype]


@dataclass(frozen=True)
class Rule:
    """One validated rule; ``fields`` holds the action's own fields with defaults filled in."""

    index: int
    match: str
    action: str
    source_name: str | None  # "from": the source tensor's name; None = the target's own name
    fields: Mapping[str, Any]

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.match)

    def canonical(self) -> dict[str, Any]:
        body = {"match": self.match, "action": self.action, "from": self.source_name, **self.fields}
        return body


DEFAULT_RULE = Rule(-1, "*", "copy", None, {})


@dataclass(frozen=True)
class DeriveRequest:
    source: str
    seed: int
    layout: str
    tensors: tuple[TargetTensor, ...]  # sorted by name
    rules: tuple[Rule, ...]

    def canonical(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": {
                "seed": self.seed,
                "layout": self.layout,
                "tensors": {t.name: {"shape": list(t.shape), "dtype": t.dtype} for t in self.tensors},
            },
            "rules": [rule.canonical() for rule in self.rules],
        }

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    def rule_for(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.matches(name):
                return rule
        return DEFAULT_RULE

    def checkpoints(self) -> tuple[str, ...]:
        """Every checkpoint the request reads: the source, then the soups' in first-seen order."""
        seen = [self.source]
        for rule in self.rules:
            if rule.action == "soup":
                seen += [d for d in rule.fields["checkpoints"] if d not in seen]
        return tuple(seen)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # nan, inf, -inf: "a number" would not say what is wrong with it
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(float(value))


def _digest(value: object, loc: Loc, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str) or not is_digest(value):
        errors.append(FieldError(loc, f"must be a checkpoint digest (64 lowercase hex), got {_kind(value)}"))
        return None
    return value


def _unknown(body: Mapping[str, Any], allowed: tuple[str, ...], loc: Loc, errors: list[FieldError]) -> None:
    for key in body:
        if key not in allowed:
            errors.append(FieldError((*loc, str(key)), f"unknown field {key!r} (accepted: {', '.join(allowed)})"))


def _target(body: object, errors: list[FieldError]) -> tuple[int, str, tuple[TargetTensor, ...]]:
    loc: Loc = ("target",)
    if not isinstance(body, Mapping):
        errors.append(FieldError(loc, f"target must be an object {{seed, layout, tensors}}, got {_kind(body)}"))
        return 0, "torch", ()
    _unknown(body, ("seed", "layout", "tensors"), loc, errors)
    seed = body.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        errors.append(FieldError((*loc, "seed"), f"seed must be an integer in 0..2^64-1, got {seed!r}"))
        seed = 0
    layout = body.get("layout", "torch")
    if layout not in LAYOUTS:
        errors.append(FieldError((*loc, "layout"), f"layout must be one of torch, keras; got {layout!r}"))
        layout = "torch"
    tensors = body.get("tensors")
    if not isinstance(tensors, Mapping) or not tensors:
        errors.append(FieldError((*loc, "tensors"), f"tensors must be a non-empty object, got {_kind(tensors)}"))
        return seed, layout, ()
    result = []
    for name, spec in tensors.items():
        where: Loc = (*loc, "tensors", str(name))
        problem = check_tensor_name(name)
        if problem:
            errors.append(FieldError(where, problem))
            continue
        if not isinstance(spec, Mapping):
            errors.append(FieldError(where, f"must be an object {{shape, dtype}}, got {_kind(spec)}"))
            continue
        _unknown(spec, ("shape", "dtype"), where, errors)
        shape = spec.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_RANK
            or not all(_is_int(d) and 0 <= d < (1 << 63) for d in shape)
        ):
            errors.append(FieldError((*where, "shape"), f"shape must be 0-{MAX_RANK} integers ≥ 0, got {shape!r}"))
            continue
        dtype = spec.get("dtype", "float32")
        if dtype not in DTYPE_CODES:
            errors.append(
                FieldError((*where, "dtype"), f"dtype must be one of {', '.join(DTYPE_CODES)}; got {dtype!r}")
            )
            continue
        result.append(TargetTensor(name, tuple(shape), dtype))
    return seed, layout, tuple(sorted(result, key=lambda t: t.name))


def _number(value: object, loc: Loc, errors: list[FieldError], *, minimum: float | None = None) -> float | None:
    if not _is_number(value):
        errors.append(FieldError(loc, f"{loc[-1]} must be a finite number, got {_kind(value)}"))
        return None
    number = float(value)  # type: ignore[arg-type]
    if minimum is not None and number < minimum:
        errors.append(FieldError(loc, f"{loc[-1]} must be ≥ {minimum:g}, got {number:g}"))
        return None
    return number


def _rule_fields(action: str, body: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, default in _FIELDS[action].items():
        if key not in body:
            if default is None and (action, key) not in _OPTIONAL_NULL:
                errors.append(FieldError((*loc, key), f"{key} is required for action {action!r}"))
            fields[key] = default
            continue
        value = body[key]
        where = (*loc, key)
        if key == "scheme":
            if not isinstance(value, str) or not value:
                errors.append(FieldError(where, f"scheme must be a catalog name, got {_kind(value)}"))
            fields[key] = value
        elif key == "params":
            if not isinstance(value, Mapping):
                errors.append(FieldError(where, f"params must be an object, got {_kind(value)}"))
                value = {}
            fields[key] = dict(value)
        elif key in ("noise", "shrink"):
            fields[key] = _number(value, where, errors, minimum=0.0)
        elif key == "slice":
            if value is not None and (
                not isinstance(value, list)
                or len(value) > MAX_RANK
                or not all(
                    isinstance(p, list) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) and p[0] <= p[1]
                    for p in value
                )
            ):
                errors.append(FieldError(where, "slice must be a list of [start, stop] pairs with 0 ≤ start ≤ stop"))
            fields[key] = value
        elif key == "mode":
            if value not in ("auto", "sum", "repeat"):
                errors.append(FieldError(where, f"mode must be one of auto, sum, repeat; got {value!r}"))
            fields[key] = value
        elif key in ("base_chans", "in_chans"):
            if value is not None and (not _is_int(value) or value < 1):
                errors.append(FieldError(where, f"{key} must be an integer ≥ 1, got {value!r}"))
            fields[key] = value
        elif key == "checkpoints":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_SOUP:
                errors.append(FieldError(where, f"checkpoints must be a list of 1-{MAX_SOUP} digests"))
                value = []
            fields[key] = [_digest(d, (*where, i), errors) for i, d in enumerate(value)]
        elif key == "weights":
            if value is not None:
                if not isinstance(value, list):
                    errors.append(FieldError(where, f"weights must be a list of numbers, got {_kind(value)}"))
                    value = []
                value = [_number(w, (*where, i), errors, minimum=0.0) for i, w in enumerate(value)]
            fields[key] = value
    if action == "soup" and not errors:
        weights, checkpoints = fields["weights"], fields["checkpoints"]
        if weights is not None and len(weights) != len(checkpoints):
            errors.append(
                FieldError(
                    (*loc, "weights"),
                    f"weights has {len(weights)} entries but checkpoints has {len(checkpoints)}",
                )
            )
        elif weights is not None and not sum(weights) > 0:
            errors.append(FieldError((*loc, "weights"), "weights must not all be zero"))
        elif weights is not None and not math.isfinite(sum(weights)):
            # W = Σ w_k in float64, in listed order, as the soup computes it: an infinite W makes every
            # c_k = w_k / W zero, a soup of zeros. Only the ratios matter, so smaller weights say the same.
            errors.append(
                FieldError(
                    (*loc, "weights"),
                    f"weights must sum to a finite float64 (summed in listed order), got {sum(weights)}; "
                    "scale them down: only their ratios matter",
                )
            )
    return fields


def _rule(index: int, body: object, errors: list[FieldError]) -> Rule | None:
    loc: Loc = ("rules", index)
    if not isinstance(body, Mapping):
        errors.append(FieldError(loc, f"a rule must be an object {{match, action, ...}}, got {_kind(body)}"))
        return None
    action = body.get("action")
    if action not in ACTIONS:
        errors.append(FieldError((*loc, "action"), f"action must be one of {', '.join(ACTIONS)}; got {action!r}"))
        return None
    _unknown(body, ("match", "action", "from", *_FIELDS[action]), loc, errors)
    match = body.get("match")
    if not isinstance(match, str) or not match or len(match) > 1024:
        errors.append(
            FieldError((*loc, "match"), f"match must be an fnmatch pattern (1-1024 chars), got {_kind(match)}")
        )
        return None
    source = body.get("from")
    if source is not None and check_tensor_name(source) is not None:
        errors.append(FieldError((*loc, "from"), f"from must be a source tensor name: {check_tensor_name(source)}"))
    before = len(errors)
    fields = _rule_fields(str(action), body, loc, errors)
    if len(errors) > before:
        return None
    return Rule(index, match, str(action), source, fields)


def parse_derive(body: object) -> DeriveRequest:
    """Validate a derive request; raise :class:`SpecError` naming every broken rule (loc from the body root)."""
    if not isinstance(body, Mapping):
        raise SpecError([FieldError((), f"a derive request must be a JSON object, got {_kind(body)}")])
    errors: list[FieldError] = []
    _unknown(body, ("source", "target", "rules"), (), errors)
    source = _digest(body.get("source"), ("source",), errors)
    seed, layout, tensors = _target(body.get("target"), errors)
    rules_body = body.get("rules", [])
    if not isinstance(rules_body, list) or len(rules_body) > MAX_RULES:
        errors.append(FieldError(("rules",), f"rules must be a list of at most {MAX_RULES} rules"))
        rules_body = []
    rules = [rule for i, r in enumerate(rules_body) if (rule := _rule(i, r, errors)) is not None]
    if errors:
        raise SpecError(errors)
    assert source is not None
    return DeriveRequest(source, seed, layout, tensors, tuple(rules))
