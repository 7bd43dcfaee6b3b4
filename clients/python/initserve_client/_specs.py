"""Request bodies for ``/v1/init`` and ``/v1/bundle`` and the cache key of a request.

Validation is the server's job (it names the field and the rule); the client only drops the
arguments left at ``None`` so the server fills its documented defaults, and turns the Python
objects a user has at hand into plain JSON: tuples, ``torch.Size``, numpy integers and arrays,
and dtypes given as ``torch.float16``, ``np.float16``, ``np.dtype("float32")`` or ml_dtypes'
bfloat16.

One default is *not* left to the server: a single tensor's ``name``. It is part of the random key,
so two tensors fetched with the same seed and no name would be one random stream (the smaller a
rescaled prefix of the larger, correlation 1.0). The client refuses to send a single-tensor spec
without a name (:class:`NameRequiredError`); ``name="weight"`` asks for the server's default.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ._errors import InitserveError, InvalidSpecError, format_loc

__all__ = [
    "DTypeLike",
    "NameRequiredError",
    "bundle_body",
    "diagnose_body",
    "dtype_name",
    "init_body",
    "plain_spec",
    "request_key",
    "require_name",
    "tensor_spec",
]


# A dtype as a name ("float16") or as the object at hand: torch.float16, np.float16, np.dtype("float16"),
# ml_dtypes.bfloat16. Typed loosely on purpose: torch is optional and numpy's DTypeLike is wider still.
DTypeLike = Any


class NameRequiredError(InitserveError, ValueError):
    """A single-tensor spec without ``name``: refused, because the name is part of the random key."""


def require_name(name: object, *, what: str = "name") -> None:
    """Raise :class:`NameRequiredError` when ``name`` is missing (None)."""
    if name is None:
        raise NameRequiredError(
            f"{what} is required: it is part of the random key, so two tensors with the same seed and no name "
            "are the same random stream (a smaller shape is a rescaled prefix of a larger one). Name each "
            "tensor (name='fc1.weight', name='fc2.weight'); name='weight' asks for the server's default."
        )


def dtype_name(dtype: object) -> str | None:
    """``"float16"`` for ``torch.float16``, ``np.float16``, ``np.dtype("float16")`` or the string itself;
    ``"bfloat16"`` for ``torch.bfloat16`` and ml_dtypes' bfloat16. Unknown objects pass through as their
    ``str`` so that the server names the accepted values."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    module = type(dtype).__module__.split(".", 1)[0]
    if module == "torch":  # torch.dtype: str() is "torch.float16"
        return str(dtype).removeprefix("torch.")
    try:
        import numpy as np

        return np.dtype(dtype).name  # type: ignore[call-overload, no-any-return]
    except TypeError:
        return str(dtype)


def plain_json(value: Any) -> Any:
    """Tuples → lists, numpy scalars → Python numbers; booleans stay booleans (the server rejects them)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # a numpy array (or 0-d array) of numbers
        return plain_json(value.tolist())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain_json(v) for v in value]
    return value


_Body = TypeVar("_Body")


def _invalid(errors: list[tuple[tuple[str | int, ...], str]]) -> InvalidSpecError:
    """The error the server would answer, raised before sending (the same type, loc and wording)."""
    problem = {
        "type": "urn:initserve:problem:invalid-spec",
        "title": "Invalid spec",
        "status": 422,
        "detail": "; ".join(msg for _, msg in errors),
        "errors": [{"loc": list(loc), "msg": msg} for loc, msg in errors],
    }
    return InvalidSpecError(422, problem)


def require_json(body: _Body) -> _Body:
    """Return ``body`` unchanged, or raise :class:`InvalidSpecError` naming every value JSON cannot carry.

    NaN and ±inf are not JSON numbers: ``json.dumps`` would raise a bare ValueError (or, with defaults,
    send ``NaN``, which the server refuses as malformed JSON). The server refuses them in every field as
    "must be a finite number"; the client says the same, with the field, before any request. A value
    of no JSON type at all (a ``Decimal``, a ``complex``, a ``slice`` object, a set) would be a bare
    TypeError from the JSON encoder: it is named with its field too."""
    errors: list[tuple[tuple[str | int, ...], str]] = []

    def walk(node: Any, loc: tuple[str | int, ...]) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            errors.append((loc, f"{format_loc(loc)} must be a finite number, got {node}"))
        elif not isinstance(node, Mapping | list | tuple | str | int | float) and node is not None:
            kind = type(node).__qualname__
            kind = kind if type(node).__module__ == "builtins" else f"{type(node).__module__}.{kind}"
            errors.append(
                (
                    loc,
                    f"{format_loc(loc)} must be a JSON value (a number, string, boolean, null, array or "
                    f"object), got a {kind}: {node!r:.60}",
                )
            )
        elif isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*loc, str(key)))
        elif isinstance(node, list | tuple):
            for index, value in enumerate(node):
                walk(value, (*loc, index))

    walk(body, ("body",))
    if errors:
        raise _invalid(errors)
    return body


def tensor_spec(
    shape: Sequence[int],
    scheme: str,
    *,
    params: Mapping[str, Any] | None = None,
    dtype: DTypeLike = None,
    layout: str | None = None,
    name: str | None = None,
    slice: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """A spec without a seed: the shape of one entry of a bundle's ``tensors`` map."""
    plain_shape = plain_json(shape)
    if not isinstance(plain_shape, list):  # e.g. shape=4 for [4]: say so, not "'int' object is not iterable"
        raise _invalid([(("body", "shape"), f"shape must be an array of integers, got {plain_shape!r}")])
    spec: dict[str, Any] = {"shape": plain_shape, "scheme": scheme}
    optional = {"params": params, "dtype": dtype_name(dtype), "layout": layout, "name": name, "slice": slice}
    spec.update({key: plain_json(value) for key, value in optional.items() if value is not None})
    return spec


def init_body(
    shape: Sequence[int],
    scheme: str,
    *,
    seed: int | None = None,
    params: Mapping[str, Any] | None = None,
    dtype: DTypeLike = None,
    layout: str | None = None,
    name: str | None = None,
    slice: Sequence[Sequence[int]] | None = None,
    algorithm: int | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/init``; raises :class:`NameRequiredError` without a ``name``.

    ``algorithm``: the version of docs/determinism.md to compute with (None: the server's newest)."""
    require_name(name)
    body = tensor_spec(shape, scheme, params=params, dtype=dtype, layout=layout, name=name, slice=slice)
    for key, value in (("seed", seed), ("algorithm", algorithm)):
        if value is not None:
            body[key] = plain_json(value)
    return require_json(body)


def bundle_body(
    tensors: Mapping[str, Mapping[str, Any]],
    *,
    seed: int | None = None,
    dtype: DTypeLike = None,
    layout: str | None = None,
    algorithm: int | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/bundle``: each entry is a spec without seed, named by its key; the
    bundle's ``algorithm`` (None: the server's newest) holds for every entry."""
    body: dict[str, Any] = {"tensors": {str(name): plain_json(spec) for name, spec in tensors.items()}}
    optional = {"seed": seed, "dtype": dtype_name(dtype), "layout": layout, "algorithm": algorithm}
    body.update({key: plain_json(value) for key, value in optional.items() if value is not None})
    _name_dtypes(body["tensors"])
    return require_json(body)


def diagnose_body(
    schemes: Sequence[str | Mapping[str, Any]],
    *,
    depth: int | None = None,
    width: int | None = None,
    activation: str | None = None,
    input_width: int | None = None,
    layers: Sequence[Mapping[str, Any]] | None = None,
    residual: float | None = None,
    negative_slope: float | None = None,
    seed: int | None = None,
    batch: int | None = None,
    dtype: str | None = None,
    jacobian: bool | None = None,
    jacobian_q: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/diagnose``; a scheme is a name or ``{"scheme", "params", "label"}``."""
    body: dict[str, Any] = {
        "schemes": [{"scheme": item} if isinstance(item, str) else plain_json(item) for item in schemes],
    }
    optional = {
        "depth": depth,
        "width": width,
        "activation": activation,
        "input_width": input_width,
        "layers": layers,
        "residual": residual,
        "negative_slope": negative_slope,
        "seed": seed,
        "batch": batch,
        "dtype": dtype,
        "jacobian": jacobian,
        "jacobian_q": jacobian_q,
    }
    body.update({key: plain_json(value) for key, value in optional.items() if value is not None})
    return require_json(body)


def plain_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A ready-made spec, bundle or ``{"bundle": ...}`` as plain JSON (dtypes as names); a single
    tensor's spec must have a ``name`` (:class:`NameRequiredError`)."""
    body: dict[str, Any] = plain_json(dict(spec))
    _name_dtypes(body)
    if "tensors" not in body and "bundle" not in body:
        require_name(body.get("name"), what="the spec's name")
    return require_json(body)


def _name_dtypes(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "dtype":
                node[key] = dtype_name(value)
            else:
                _name_dtypes(value)


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """sha256 of the route and the body as sorted, compact JSON.

    The server is the authority on canonical form, so two spellings of the same spec get two
    request keys; they meet at the server's ETag (see the cache index), and the bytes are stored once.
    """
    text = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
