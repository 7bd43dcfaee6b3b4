"""Pre-trained initialisation on :class:`~initserve_client.AsyncClient`: the methods of
:mod:`._checkpoints`, awaitable; files are read in a worker thread, one chunk at a time."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from ._checkpoints import UPLOAD_CHUNK, derive_body, safetensors_bytes, tensor_path, verified_tensor
from ._errors import InitserveError
from ._safetensors import SafetensorsFile, parse

if TYPE_CHECKING:
    import torch

    from ._retry import RetryPolicy

__all__ = ["AsyncCheckpointMethods"]


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(source.read, UPLOAD_CHUNK):
            yield chunk
    finally:
        source.close()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk


class AsyncCheckpointMethods:
    """Mixed into :class:`~initserve_client.AsyncClient`."""

    _http: httpx.AsyncClient
    _retry: RetryPolicy

    if TYPE_CHECKING:  # provided by BaseClient and AsyncClient

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

        async def _send(self, request: httpx.Request) -> httpx.Response: ...

    async def upload_checkpoint(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`Client.upload_checkpoint <initserve_client.Client.upload_checkpoint>`, awaitable."""
        data: bytes | None = None
        path: Path | None = None
        if isinstance(source, Mapping):
            data = safetensors_bytes(source)
            length = len(data)
        else:
            path = Path(source)
            length = (await asyncio.to_thread(path.stat)).st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        attempt = 0
        while True:
            attempt += 1
            request = self._build_request("POST", "/v1/checkpoints", headers=headers)
            request.stream = httpx.ByteStream(data or b"") if path is None else _AsyncStream(_file_chunks(path))
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_exception(attempt, exc)
                if delay is None:
                    raise self._give_up(request, attempt, exc) from exc
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                manifest: dict[str, Any] = response.json()
                return manifest
            delay = self._retry.delay_after_status(attempt, response.status_code, response.headers.get("retry-after"))
            if delay is None:
                raise self._error_for(request, response, attempt)
            await asyncio.sleep(delay)

    async def checkpoint(self, digest: str) -> dict[str, Any]:
        response = await self._send(self._build_request("GET", f"/v1/checkpoints/{digest}"))
        manifest: dict[str, Any] = response.json()
        return manifest

    async def checkpoint_tensor(self, digest: str, name: str) -> np.ndarray[Any, Any]:
        response = await self._send(self._build_request("GET", tensor_path(digest, name)))
        return verified_tensor(response, digest, name)

    async def derive_file(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> SafetensorsFile:
        body = derive_body(source, tensors, rules, seed, layout)
        response = await self._send(self._build_request("POST", "/v1/derive", json=body))
        return parse(response.content)

    async def derive(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, np.ndarray[Any, Any]]:
        file = await self.derive_file(source, tensors, rules, seed=seed, layout=layout)
        return {name: file.array(name) for name in tensors}

    async def derive_torch(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, torch.Tensor]:
        from ._torch import to_torch

        file = await self.derive_file(source, tensors, rules, seed=seed, layout=layout)
        return {name: to_torch(file.array(name, raw_bits=True), file.tensors[name].dtype) for name in tensors}
