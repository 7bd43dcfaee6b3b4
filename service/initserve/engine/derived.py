"""Checks on the scalars a scheme derives from its params before anything is generated.

A param can be valid on its own (finite, in range) and still derive a useless scalar: ``a = 1e200``
makes kaiming's gain √(2/(1+a²)) = 0 and the std 0; ``low = -9e307, high = 9e307`` make the uniform
width ``high − low`` overflow to +inf; a negative xavier gain makes a bound < 0. Each such scalar
(gain, std, bound, width, α/β, Φ(α)/Φ(β), the expected mean/std, the largest reachable |x|) is
checked finite and in range here, and a failure becomes a :class:`FieldError` naming the param that
drove it, so the answer is a 422 instead of a crash, an infinite value or a NaN in the stats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from .dtypes import DTYPES
from .errors import FieldError, Loc
from .params import ParamValue
from .samplers import MIN_TRUNCATED_MASS, Constant, Eye, Orthogonal, Sparse, TruncatedNormal, Uniform

# Largest |x| a scheme may be asked to produce: float64's largest finite value / 16. Schemes scale by
# factors a little above 1 on the way (simplex_etf multiplies by gain·√(K/(K−1)) before normalising),
# so a reach just under float64's limit overflowed to ±inf; no weight needs the last 4 bits of range.
MAX_REACH = float(np.finfo(np.float64).max) / 16


def culprit(given: Mapping[str, object], params: Mapping[str, ParamValue]) -> Loc:
    """The loc of the param most likely to have driven a bad derived scalar: among the numeric params
    the client gave, the one farthest from 1 in magnitude (0 counts as farthest); ``("params",)`` if
    none was given (then the shape's fans drove it, which the rank and size rules already bound)."""
    best: tuple[float, str] | None = None
    for name in given:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        magnitude = abs(float(value))
        distance = math.inf if magnitude == 0.0 or not math.isfinite(magnitude) else abs(math.log2(magnitude))
        if best is None or distance > best[0]:
            best = (distance, name)
    return ("params",) if best is None else ("params", best[1])


def derived_problems(sampler: object, gain: float | None, dtype: str | None = None) -> list[str]:
    """The rules the derived scalars of ``sampler`` (and the reported ``gain``) break; empty if none.

    Order: each derived scalar finite, then the largest reachable |x| against float64's bound and the
    output ``dtype``'s range, then the expected moments."""
    problems: list[str] = []

    def finite(name: str, value: float) -> bool:
        if not math.isfinite(value):
            problems.append(f"the derived {name} is {value!r}; it must be finite")
            return False
        return True

    if gain is not None:
        finite("gain", gain)
    if isinstance(sampler, Constant):
        finite("value", sampler.value)
    elif isinstance(sampler, Uniform):
        if finite("low bound", sampler.low) and finite("high bound", sampler.high):
            if not sampler.low <= sampler.high:
                problems.append(
                    f"the derived bounds are [{sampler.low!r}, {sampler.high!r}]; the low bound must be ≤ the high "
                    "bound (a negative gain or scale gives a negative bound)"
                )
            else:
                finite("width (high − low)", sampler.high - sampler.low)
    elif isinstance(sampler, TruncatedNormal):
        _check_normal(sampler, problems, finite)
    elif isinstance(sampler, Orthogonal | Eye):
        finite("gain", sampler.gain)
    elif isinstance(sampler, Sparse):
        _check_normal(sampler.normal, problems, finite)
    if problems:
        return problems
    # The reach first: a huge gain is refused for the values it makes, before its moments (gain², …) are
    # computed — the moments of a reach that fits are finite (samplers.linear_moments).
    reach = float(sampler.max_abs()) if hasattr(sampler, "max_abs") else 0.0
    problem = reach_problem(reach, dtype)
    if problem is not None:
        return [problem]
    moments = sampler.moments() if hasattr(sampler, "moments") else None
    if moments is not None:
        finite("expected mean", moments.mean)
        finite("expected std", moments.std)
    return problems


def reach_problem(reach: float, dtype: str | None) -> str | None:
    """Why values of magnitude up to ``reach`` cannot be served in ``dtype`` (None: float64's bound only)."""
    if not reach <= MAX_REACH:  # also NaN and inf
        shown = "an infinite magnitude" if not math.isfinite(reach) else f"magnitude {reach:.6g}"
        return (
            f"makes values of {shown}; at most {MAX_REACH:.6g} is allowed (float64's largest finite value / 16: "
            "headroom for the scheme's intermediate products, e.g. gain·√(K/(K−1)))"
        )
    if dtype is None:
        return None
    info = DTYPES[dtype]
    # A value rounds to a finite one iff it lies below the overflow threshold: 65510 becomes float16's
    # 65504 and is fine; 65520 would round to inf.
    if reach < info.overflow:
        return None
    return (
        f"makes values of magnitude {reach:.6g}, which rounds to infinity in {dtype} (its largest finite value "
        f"is {info.max_finite:.6g}; values must stay below {info.overflow:.6g}); use smaller params or a wider dtype"
    )


def _check_normal(sampler: TruncatedNormal, problems: list[str], finite: Callable[[str, float], bool]) -> None:
    if not (finite("mean", sampler.mean) and finite("std", sampler.std)):
        return
    if not sampler.std > 0.0:
        problems.append(f"the derived std is {sampler.std!r}; it must be > 0")
        return
    if math.isnan(sampler.alpha) or math.isnan(sampler.beta):
        problems.append(f"the standardised bounds α, β = {sampler.alpha!r}, {sampler.beta!r} are not numbers")
        return
    if not (math.isfinite(sampler.p_low) and math.isfinite(sampler.p_high)):
        problems.append(f"Φ(α), Φ(β) = {sampler.p_low!r}, {sampler.p_high!r} must be finite")
        return
    if sampler.truncated and not sampler.width >= MIN_TRUNCATED_MASS:
        problems.append(
            f"[low, high] has probability {sampler.width:.3g} under N(mean, std²); it must be at least "
            f"{MIN_TRUNCATED_MASS:g}"
        )


def check_derived(
    sampler: object,
    gain: float | None,
    given: Mapping[str, object],
    params: Mapping[str, ParamValue],
    loc: Loc,
    dtype: str | None = None,
) -> list[FieldError]:
    """:func:`derived_problems` as field errors located at the :func:`culprit` param, its value leading a
    magnitude rule ("params.gain: 1e+200 makes values of magnitude 1e+200, which rounds to infinity in
    float32 …"). A magnitude rule with no param given (the defaults reach past the dtype) is at ``dtype``."""
    blamed = culprit(given, params)
    errors = []
    for problem in derived_problems(sampler, gain, dtype):
        if not problem.startswith("makes values"):
            errors.append(FieldError((*loc, *blamed), problem))
            continue
        big = largest(given, params) or blamed
        if len(big) == 2:
            errors.append(FieldError((*loc, *big), f"{params[str(big[1])]!r} {problem}"))
        else:
            where = (*loc, "dtype" if dtype is not None else "params")
            errors.append(FieldError(where, f"the default params make{problem[len('makes') :]}"))
    return errors


def largest(given: Mapping[str, object], params: Mapping[str, ParamValue]) -> Loc | None:
    """The loc of the given numeric param of largest magnitude, if it exceeds 1: what a magnitude rule blames
    (a gain, std or value that makes values too large), rather than :func:`culprit`'s farthest from 1."""
    best: tuple[float, str] | None = None
    for name in given:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if abs(float(value)) > 1.0 and (best is None or abs(float(value)) > best[0]):
            best = (abs(float(value)), name)
    return None if best is None else ("params", best[1])
