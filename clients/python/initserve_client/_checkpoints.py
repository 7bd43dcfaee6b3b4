"""Pre-trained initialisation on the client: upload checkpoints, read them, derive models.

The logic is written once, as flows (:mod:`._flow`) on :class:`CheckpointFlows`; :class:`CheckpointMethods`
(``Client``) and :class:`~._checkpoints_async.AsyncCheckpointMethods` (``AsyncClient``) only drive them.
Uploads stream a file from disk (constant memory, ``Content-Length`` known; the async client reads it in
a worker thread) or a state dict serialised here as safetensors. Tensors read back are verified against
their digest (the sha256 of the tensor record, docs/pretrained.md); derived files are parsed and checked
like every other file.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import numpy as np
from initserve.engine.checkpoint import DTYPE_CODES, tensor_digest

from ._base import BaseClient
from ._errors import InitserveError, IntegrityError
from ._flow import Blocking, Flow, Send
from ._safetensors import SafetensorsFile, parse
from ._specs import plain_json, require_json
from ._tensor_view import tensor_as_numpy

if TYPE_CHECKING:
    import torch

__all__ = ["CheckpointFlows", "CheckpointMethods", "record_digest", "safetensors_bytes"]

UPLOAD_CHUNK = 1 << 20
_BITS_ONLY = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def record_digest(dtype: str, shape: Sequence[int], data: bytes | memoryview) -> str:
    """The tensor digest the server's manifest gives: the engine's one definition (same distribution)."""
    return tensor_digest(dtype, shape, data)


def _unsupported(dtype: object) -> InitserveError:
    return InitserveError(f"cannot upload dtype {dtype}; supported: {', '.join(DTYPE_CODES)}")


def _as_array(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    """(safetensors dtype, shape, raw little-endian C-order bytes) of a numpy array or torch tensor."""
    if hasattr(value, "detach"):
        import torch

        tensor = value.detach().to("cpu").contiguous()
        name = str(tensor.dtype).removeprefix("torch.")
        if name in _BITS_ONLY:  # dtypes torch cannot hand to numpy travel as their bit patterns
            bits = tensor.view(torch.uint8 if tensor.element_size() == 1 else torch.int16)
            return DTYPE_CODES[name], tuple(tensor.shape), tensor_as_numpy(bits).tobytes()
        try:
            value = tensor_as_numpy(tensor)  # not Tensor.numpy(): it would pin a live model's storage
        except TypeError:  # a dtype numpy lacks (complex32, float8_e4m3fnuz, …)
            raise _unsupported(tensor.dtype) from None
    array = np.asarray(value)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into shape (1,))
        array = array.copy(order="C")
    code = DTYPE_CODES.get(array.dtype.name)  # the server's table: numpy's dtype names are the API's
    if code is None:
        raise _unsupported(array.dtype)
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


def arrays_of(file: SafetensorsFile, names: Iterable[str]) -> dict[str, np.ndarray[Any, Any]]:
    """``{name: numpy array}`` of a derived file (BF16 needs ml_dtypes)."""
    return {name: file.array(name) for name in names}


def torch_tensors_of(file: SafetensorsFile, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: torch.Tensor}`` of a derived file, of the exact dtypes."""
    from ._torch import to_torch

    return {name: to_torch(file.array(name, raw_bits=True), file.tensors[name].dtype) for name in names}


class FileStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A file's bytes, one chunk at a time, read afresh on every iteration: a retried upload sends the
    whole file again. Iterated asynchronously, it reads in a worker thread (the event loop never waits
    on the disk)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb") as source:
            while chunk := source.read(UPLOAD_CHUNK):
                yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        source = await asyncio.to_thread(self._path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(source.read, UPLOAD_CHUNK):
                yield chunk
        finally:
            source.close()


class CheckpointFlows(BaseClient):
    """The checkpoint requests, written once as flows that ``Client`` and ``AsyncClient`` drive."""

    def _upload_flow(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> Flow:
        stream: httpx.ByteStream | FileStream
        if isinstance(source, Mapping):
            data = safetensors_bytes(source)
            length, stream = len(data), httpx.ByteStream(data)
        else:
            path = Path(source)
            length = (yield Blocking(path.stat)).st_size
            stream = FileStream(path) if length else httpx.ByteStream(b"")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        request = self._build_request("POST", "/v1/checkpoints", headers=headers)
        request.stream = stream  # sent again from its start by every retry
        response: httpx.Response = yield Send(request)
        manifest: dict[str, Any] = response.json()
        return manifest

    def _checkpoint_flow(self, digest: str) -> Flow:
        response: httpx.Response = yield Send(self._build_request("GET", f"/v1/checkpoints/{digest}"))
        manifest: dict[str, Any] = response.json()
        return manifest

    def _checkpoint_tensor_flow(self, digest: str, name: str) -> Flow:
        response: httpx.Response = yield Send(self._build_request("GET", tensor_path(digest, name)))
        return verified_tensor(response, digest, name)

    def _derive_flow(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]],
        seed: int,
        layout: str,
    ) -> Flow:
        body = derive_body(source, tensors, rules, seed, layout)
        response: httpx.Response = yield Send(self._build_request("POST", "/v1/derive", json=body))
        return parse(response.content)


class CheckpointMethods(CheckpointFlows):
    """Mixed into :class:`~initserve_client.Client`: drives :class:`CheckpointFlows`."""

    if TYPE_CHECKING:  # provided by Client

        def _drive(self, flow: Flow) -> Any: ...

    def upload_checkpoint(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
        """Upload a safetensors file (a path, streamed) or a state dict; returns the manifest.

        The manifest is ``{"digest", "tensors": {name: {"digest", "dtype", "shape", "nbytes"}}, "stored":
        {"new_tensors", "new_bytes"}}`` (float tensors also give ``max_abs``, their largest finite |x|, and
        ``nonfinite``, their count of inf and NaN); tensors the server already held are not stored again.
        Raises the usual :class:`~initserve_client.APIError` s (413 too large, 422 not safetensors, 403 a
        read-only key)."""
        manifest: dict[str, Any] = self._drive(self._upload_flow(source))
        return manifest

    def checkpoint(self, digest: str) -> dict[str, Any]:
        """The manifest of a stored checkpoint."""
        manifest: dict[str, Any] = self._drive(self._checkpoint_flow(digest))
        return manifest

    def checkpoint_tensor(self, digest: str, name: str) -> np.ndarray[Any, Any]:
        """One stored tensor as numpy (BF16 needs ml_dtypes), verified against its tensor digest."""
        tensor: np.ndarray[Any, Any] = self._drive(self._checkpoint_tensor_flow(digest, name))
        return tensor

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
        file: SafetensorsFile = self._drive(self._derive_flow(source, tensors, rules, seed, layout))
        return file

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
        return arrays_of(self.derive_file(source, tensors, rules, seed=seed, layout=layout), tensors)

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
        return torch_tensors_of(self.derive_file(source, tensors, rules, seed=seed, layout=layout), tensors)
