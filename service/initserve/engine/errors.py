"""Validation errors that name the field and the rule that was broken."""

from __future__ import annotations

from dataclasses import dataclass

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One broken rule. ``loc`` is the path of the field inside the spec, e.g. ``("shape", 1)``."""

    loc: Loc
    msg: str

    def render(self) -> str:
        return f"{format_loc(self.loc)}: {self.msg}" if self.loc else self.msg


def format_loc(loc: Loc) -> str:
    """``("params", "std")`` -> ``params.std``; ``("shape", 1)`` -> ``shape[1]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class SpecError(ValueError):
    """A spec broke one or more rules; ``errors`` lists each with its field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(error.render() for error in errors))


class SpecTooLarge(SpecError):
    """The result would exceed a configured byte limit (decided without allocating)."""

    def __init__(self, loc: Loc, nbytes: int, limit: int) -> None:
        self.nbytes = nbytes
        self.limit = limit
        super().__init__(
            [
                FieldError(
                    loc,
                    f"result would be {human_bytes(nbytes)}, above the limit of {human_bytes(limit)}; "
                    "ask for a slice or a smaller shape",
                )
            ]
        )


def human_bytes(count: int) -> str:
    """``1073741824`` → ``1 GiB (1,073,741,824 bytes)``: binary units for reading, exact count to check."""
    value, unit = float(count), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    if unit == "bytes":
        return f"{count:,} bytes"
    shown = f"{value:.0f}" if value >= 100 or value.is_integer() else f"{value:.3g}"
    return f"{shown} {unit} ({count:,} bytes)"


def fail(loc: Loc, msg: str) -> SpecError:
    """Shorthand for raising a single-field error: ``raise fail(("shape", 0), "must be ≥ 0, got -1")``."""
    return SpecError([FieldError(loc, msg)])
