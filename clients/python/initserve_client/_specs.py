"""Request bodies for ``/v1/init`` and ``/v1/bundle`` and the cache key of a request.

Validation is the server's job (it names the field and the rule); the client only drops the
arguments left at ``None`` so the server fills its documented defaults, and turns numpy/tuple
values into plain JSON.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bundle_body", "diagnose_body", "init_body", "request_key", "tensor_spec"]


def _plain(value: Any) -> Any:
    """Tuples → lists, numpy scalars → Python numbers; booleans stay booleans (the server rejects them)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return value


def tensor_spec(
    shape: Sequence[int],
    scheme: str,
    *,
    params: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    layout: str | None = None,
    name: str | None = None,
    slice: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """A spec without a seed: the shape of one entry of a bundle's ``tensors`` map."""
    spec: dict[str, Any] = {"shape": _plain(shape), "scheme": scheme}
    optional = {"params": params, "dtype": dtype, "layout": layout, "name": name, "slice": slice}
    spec.update({key: _plain(value) for key, value in optional.items() if value is not None})
    return spec


def init_body(
    shape: Sequence[int],
    scheme: str,
    *,
    seed: int | None = None,
    params: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    layout: str | None = None,
    name: str | None = None,
    slice: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/init``."""
    body = tensor_spec(shape, scheme, params=params, dtype=dtype, layout=layout, name=name, slice=slice)
    if seed is not None:
        body["seed"] = _plain(seed)
    return body


def bundle_body(
    tensors: Mapping[str, Mapping[str, Any]],
    *,
    seed: int | None = None,
    dtype: str | None = None,
    layout: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/bundle``: each entry is a spec without seed, named by its key."""
    body: dict[str, Any] = {"tensors": {str(name): _plain(spec) for name, spec in tensors.items()}}
    optional = {"seed": seed, "dtype": dtype, "layout": layout}
    body.update({key: _plain(value) for key, value in optional.items() if value is not None})
    return body


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
        "schemes": [{"scheme": item} if isinstance(item, str) else _plain(item) for item in schemes],
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
    body.update({key: _plain(value) for key, value in optional.items() if value is not None})
    return body


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """sha256 of the route and the body as sorted, compact JSON.

    The server is the authority on canonical form, so two spellings of the same spec get two
    request keys; they meet at the server's ETag (see the cache index), and the bytes are stored once.
    """
    text = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
