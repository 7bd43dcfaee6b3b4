"""Pre-trained initialisation on the client: upload checkpoints, read them, derive models (sync ``Client``).

Uploads stream a file from disk (constant memory, ``Content-Length`` known) or a state dict serialised
here as safetensors. Tensors read back are verified against their digest (the sha256 of the tensor
record, docs/pretrained.md); derived files are parsed and checked like every other file.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import numpy as np
from initserve.engine.checkpoint import tensor_digest

from ._errors import InitserveError, IntegrityError
from ._safetensors import SafetensorsFile, parse
from ._specs import plain_json, require_json

if TYPE_CHECKING:
    import torch

    from ._retry import RetryPolicy

__all__ = ["CheckpointMethods", "record_digest", "safetensors_bytes"]

UPLOAD_CHUNK = 1 << 20
_NUMPY_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "bfloat16": "BF16",
}


def record_digest(dtype: str, shape: Sequence[int], data: bytes | memoryview) -> str:
    """The tensor digest the server's manifest gives: the engine's one definition (same distribution)."""
    return tensor_digest(dtype, shape, data)


def _as_array(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    """(safetensors dtype, shape, raw little-endian C-order bytes) of a numpy array or torch tensor."""
    if hasattr(value, "detach"):  # torch: bfloat16 travels as its 16-bit patterns
        import torch

        tensor = value.detach().to("cpu").contiguous()
        if tensor.dtype == torch.bfloat16:
            return "BF16", tuple(tensor.shape), tensor.view(torch.int16).numpy().tobytes()
        value = tensor.numpy()
    array = np.asarray(value)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into shape (1,))
        array = array.copy(order="C")
    code = _NUMPY_CODES.get(array.dtype.name)
    if code is None:
        raise InitserveError(f"cannot upload dtype {array.dtype}; supported: {', '.join(_NUMPY_CODES)}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return code, tuple(array.shape), array.tobytes()


def safetensors_bytes(tensors: Mapping[str, Any]) -> bytes:
    """A safetensors file of ``{name: numpy array or torch tensor}`` (tensors in name order)."""
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        code, shape, data = _as_array(tensors[name])
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def derive_body(
    source: str, tensors: Mapping[str, Mapping[str, Any]], rules: Sequence[Mapping[str, Any]], seed: int, layout: str
) -> dict[str, Any]:
    """The ``POST /v1/derive`` body as plain JSON (numpy numbers as Python numbers); NaN or ±inf anywhere
    raises :class:`InvalidSpecError` naming the field."""
    body = {
        "source": source,
        "target": {"seed": seed, "layout": layout, "tensors": {k: dict(v) for k, v in tensors.items()}},
        "rules": [dict(rule) for rule in rules],
    }
    return require_json(plain_json(body))


def verified_tensor(response: httpx.Response, digest: str, name: str) -> np.ndarray[Any, Any]:
    """The tensor of a ``GET /v1/checkpoints/{digest}/tensors/{name}`` answer, checked against its digest."""
    file = parse(response.content)
    info = file.tensors[name]
    expected = response.headers.get("x-initserve-tensor-digest", "")
    actual = record_digest(info.dtype, info.shape, file.buffer[info.begin : info.end])
    if actual != expected:
        raise IntegrityError(f"tensor {name!r} of {digest}: digest {actual} != {expected}")
    return file.array(name)


def tensor_path(digest: str, name: str) -> str:
    return f"/v1/checkpoints/{digest}/tensors/{quote(name, safe='')}"


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(UPLOAD_CHUNK):
            yield chunk


class CheckpointMethods:
    """Mixed into :class:`~initserve_client.Client`; uses its HTTP client, retry policy and request builder."""

    _http: httpx.Client
    _retry: RetryPolicy

    if TYPE_CHECKING:  # provided by BaseClient and Client

        def _build_request(
            self,
            method: str,
            path_or_url: str,
            *,
            json: Any = None,
            headers: Mapping[str, str] | None = None,
            params: Mapping[str, str] | None = None,
            computed: bool = False,
        ) -> httpx.Request: ...

        def _error_for(self, request: httpx.Request, response: httpx.Response, attempt: int) -> InitserveError: ...

        def _give_up(self, request: httpx.Request, attempt: int, exc: BaseException) -> InitserveError: ...

        def _send(self, request: httpx.Request) -> httpx.Response: ...

    def upload_checkpoint(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
        """Upload a safetensors file (a path, streamed) or a state dict; returns the manifest.

        The manifest is ``{"digest", "tensors": {name: {"digest", "dtype", "shape", "nbytes"}}, "stored":
        {"new_tensors", "new_bytes"}}`` (float tensors also give ``max_abs``, their largest finite |x|, and
        ``nonfinite``, their count of inf and NaN); tensors the server already held are not stored again.
        Raises the usual :class:`~initserve_client.APIError` s (413 too large, 422 not safetensors, 403 a
        read-only key)."""
        if isinstance(source, Mapping):
            data = safetensors_bytes(source)
            length = len(data)

            def body() -> Iterator[bytes]:
                yield data
        else:
            path = Path(source)
            length = path.stat().st_size

            def body() -> Iterator[bytes]:
                return _file_chunks(path)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        attempt = 0
        while True:
            attempt += 1
            request = self._build_request("POST", "/v1/checkpoints", headers=headers)
            request.stream = httpx.ByteStream(b"") if length == 0 else _IteratorStream(body())
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_exception(attempt, exc)
                if delay is None:
                    raise self._give_up(request, attempt, exc) from exc
                time.sleep(delay)
                continue
            if response.is_success:
                manifest: dict[str, Any] = response.json()
                return manifest
            delay = self._retry.delay_after_status(attempt, response.status_code, response.headers.get("retry-after"))
            if delay is None:
                raise self._error_for(request, response, attempt)
            time.sleep(delay)

    def checkpoint(self, digest: str) -> dict[str, Any]:
        """The manifest of a stored checkpoint."""
        response = self._send(self._build_request("GET", f"/v1/checkpoints/{digest}"))
        manifest: dict[str, Any] = response.json()
        return manifest

    def checkpoint_tensor(self, digest: str, name: str) -> np.ndarray[Any, Any]:
        """One stored tensor as numpy (BF16 needs ml_dtypes), verified against its tensor digest."""
        response = self._send(self._build_request("GET", tensor_path(digest, name)))
        return verified_tensor(response, digest, name)

    def derive_file(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> SafetensorsFile:
        """``POST /v1/derive``: the derived model's safetensors file, parsed (``.metadata`` records per
        tensor the rule, source digests and spec). ``tensors``: ``{name: {"shape", "dtype"}}``."""
        body = derive_body(source, tensors, rules, seed, layout)
        response = self._send(self._build_request("POST", "/v1/derive", json=body))
        return parse(response.content)

    def derive(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, np.ndarray[Any, Any]]:
        """:meth:`derive_file` as ``{name: numpy array}`` (BF16 needs ml_dtypes)."""
        file = self.derive_file(source, tensors, rules, seed=seed, layout=layout)
        return {name: file.array(name) for name in tensors}

    def derive_torch(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, torch.Tensor]:
        """:meth:`derive_file` as ``{name: torch.Tensor}`` of the exact dtypes."""
        from ._torch import to_torch

        file = self.derive_file(source, tensors, rules, seed=seed, layout=layout)
        return {name: to_torch(file.array(name, raw_bits=True), file.tensors[name].dtype) for name in tensors}


class _IteratorStream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
