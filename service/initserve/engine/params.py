"""Declarative parameter schemas: each scheme lists its parameters, and one function validates them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import FieldError

ParamValue = float | int | str


@dataclass(frozen=True)
class Param:
    """One scheme parameter. ``default`` None means required; a callable default is resolved from
    the other (already validated) parameters, e.g. truncated_normal's ``low = mean - 2*std``."""

    name: str
    kind: str  # "float" | "int" | "choice" | "bool"
    default: ParamValue | None = None
    default_rule: str | None = None  # text of a computed default, e.g. "mean - 2*std"
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)  # accepted spelling -> canonical
    doc: str = ""
    null: str | None = None  # the choice that JSON null stands for (a framework's None), if any

    @property
    def required(self) -> bool:
        return self.default is None and self.default_rule is None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "type": self.kind, "doc": self.doc}
        if self.default is not None:
            info["default"] = self.default
        elif self.default_rule is not None:
            info["default"] = self.default_rule
        else:
            info["required"] = True
        if self.minimum is not None:
            info["exclusive_minimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            info["maximum"] = self.maximum
        if self.choices:
            info["choices"] = list(self.choices)
        if self.aliases:
            info["aliases"] = dict(self.aliases)
        if self.null is not None:
            info["null"] = self.null
        return info

    def validate(self, value: object) -> tuple[ParamValue | None, str | None]:
        """(normalised value, None) or (None, the rule it broke)."""
        if self.kind == "choice":
            if value is None and self.null is not None:
                return self.null, None
            if not isinstance(value, str):
                return None, f"must be one of {', '.join(self.choices)}; got {_show(value)}"
            value = self.aliases.get(value, value)
            if value not in self.choices:
                return None, f"must be one of {', '.join(self.choices)}; got {value!r}"
            return value, None
        if self.kind == "bool":
            if not isinstance(value, bool):
                return None, f"must be true or false, got {_show(value)}"
            return value, None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a number, got {_show(value)}"
        if self.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    return None, f"must be an integer, got {value!r}"
                value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond float64's range (JSON allows 1 followed by 400 zeros)
                return None, f"must be a finite number within float64's range (±1.8e308), got {_brief(value)}"
            if not math.isfinite(value):
                return None, f"must be finite, got {value!r}"
        if self.minimum is not None:
            if self.exclusive_minimum and not value > self.minimum:
                return None, f"must be > {_num(self.minimum)}, got {_brief(value)}"
            if not self.exclusive_minimum and value < self.minimum:
                return None, f"must be ≥ {_num(self.minimum)}, got {_brief(value)}"
        if self.maximum is not None and value > self.maximum:
            return None, f"must be ≤ {_num(self.maximum)}, got {_brief(value)}"
        return value, None


def _brief(value: float) -> str:
    """repr, except that an integer of more than 20 digits is described by its length."""
    text = repr(value)
    return f"an integer of {len(text.lstrip('-'))} digits" if isinstance(value, int) and len(text) > 21 else text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return _brief(value)  # the number itself, not its Python type ("got int")
    # In JSON's words: the caller sent an array or an object, not a Python list or dict.
    if isinstance(value, list | tuple):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


FAN_MAX = 1 << 62  # no tensor has more elements (see spec.MAX_ELEMENTS), so no fan is larger

FAN_OVERRIDES = (
    Param(
        "fan_in",
        "int",
        default_rule="from shape and layout",
        minimum=1,
        maximum=FAN_MAX,
        doc="explicit fan_in (e.g. for a 1-D bias); overrides the fan computed from the shape",
    ),
    Param(
        "fan_out",
        "int",
        default_rule="from shape and layout",
        minimum=1,
        maximum=FAN_MAX,
        doc="explicit fan_out; overrides the fan computed from the shape",
    ),
)


def validate_params(
    scheme: str, schema: tuple[Param, ...], given: Mapping[str, object]
) -> tuple[dict[str, ParamValue], list[FieldError]]:
    """Validate ``given`` against ``schema``. Returns explicit values (computed defaults are filled
    by the scheme, which knows their rule) and the errors, each located at ``("params", name)``."""
    errors: list[FieldError] = []
    known = {param.name: param for param in schema}
    values: dict[str, ParamValue] = {}
    for key in given:
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            errors.append(
                FieldError(("params", key), f"unknown parameter {key!r} for scheme {scheme!r} (accepted: {names})")
            )
    for param in schema:
        if param.name in given:
            value, problem = param.validate(given[param.name])
            if problem is not None:
                errors.append(FieldError(("params", param.name), problem))
            elif value is not None:
                values[param.name] = value
        elif param.default is not None:
            values[param.name] = param.default
        elif param.required:
            errors.append(FieldError(("params", param.name), f"params.{param.name} is required for scheme {scheme!r}"))
    return values, errors
