"""``AsyncClient``: the asyncio mirror of :class:`~initserve_client.Client`; only the I/O differs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from ._base import BaseClient, Decoded
from ._checkpoints_async import AsyncCheckpointMethods
from ._flow import Blocking, Download, DownloadPart, Flow, Send, Wait, fetch_file
from ._rawhttp import DownloadCancel, RawTransport, download_parts
from ._retry import RetryPolicy
from ._safetensors import SafetensorsFile
from ._specs import DTypeLike, diagnose_body, init_body, plain_spec

if TYPE_CHECKING:
    import torch as pt  # the method named `torch` shadows the module in the class body

__all__ = ["AsyncClient"]


class AsyncClient(AsyncCheckpointMethods, BaseClient):
    """Fetch deterministic initializations from an initserve server, with asyncio.

    Args:
        base_url: server URL; default ``INITSERVE_URL`` or ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer``; default ``INITSERVE_API_KEY``.
        timeout: seconds or an ``httpx.Timeout`` (default 60 s, 10 s to connect; ``INITSERVE_TIMEOUT``): the
            longest wait for each network operation of a request or a stream.
        compute_timeout: seconds to wait for an answer the server computes whole before sending it
            (``stats``, ``diagnose``; default 1800, ``INITSERVE_COMPUTE_TIMEOUT``). Such a wait is not
            retried: a retry would start the computation again.
        cache_dir: cache root; default ``INITSERVE_CACHE_DIR`` or the user cache dir. ``cache=False`` disables it.
        offline: serve only from the cache (default ``INITSERVE_OFFLINE``).
        retries: total attempts per request on connection errors and 429/502/503/504.
        progress: ``True``/``False``, or ``None`` for a tqdm bar on large downloads when stderr is a terminal.
        parallel: byte-range connections for downloads of ≥ 64 MiB (1: a single stream).
        lock_timeout: seconds to wait for another process downloading the same file.

    Example::

        async with AsyncClient() as client:
            w = await client.tensor([256, 128], "kaiming_uniform", seed=42, name="fc.weight")
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        compute_timeout: float | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        offline: bool | None = None,
        retries: int = 5,
        progress: bool | None = None,
        parallel: int = 1,
        lock_timeout: float = 600.0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            compute_timeout=compute_timeout,
            cache_dir=cache_dir,
            cache=cache,
            offline=offline,
            retries=retries,
            progress=progress,
            parallel=parallel,
            lock_timeout=lock_timeout,
            retry_policy=retry_policy,
        )
        self._http = httpx.AsyncClient(timeout=self._config.timeout)
        # Download bodies go through the readinto transport (in a worker thread) unless a proxy applies.
        self._raw = RawTransport()
        self._raw_downloads = self._raw.usable_for(httpx.URL(self._config.base_url))

    # -- lifecycle ----------------------------------------------------------------------------------
    async def aclose(self) -> None:
        await self._http.aclose()
        self._raw.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- public API ---------------------------------------------------------------------------------
    async def tensor(
        self,
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
    ) -> np.ndarray[Any, Any]:
        """One tensor as a numpy array (bfloat16 needs ml_dtypes). Zero-copy view of the downloaded/cached file."""
        array: np.ndarray[Any, Any]
        array, _ = await self._drive(
            self._tensor_flow(
                shape,
                scheme,
                raw_bits=False,
                seed=seed,
                params=params,
                dtype=dtype,
                layout=layout,
                name=name,
                slice=slice,
                algorithm=algorithm,
            )
        )
        return array

    async def torch(
        self,
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
        device: str | pt.device | None = None,
    ) -> pt.Tensor:
        """One tensor as a ``torch.Tensor`` of the exact dtype (bfloat16 without ml_dtypes).

        CPU tensors share memory with the downloaded or cached file; ``device`` moves (copies) it."""
        from ._torch import to_torch

        decoded: Decoded = await self._drive(
            self._tensor_flow(
                shape,
                scheme,
                raw_bits=True,
                seed=seed,
                params=params,
                dtype=dtype,
                layout=layout,
                name=name,
                slice=slice,
                algorithm=algorithm,
            )
        )
        return to_torch(*decoded, device=device)

    async def bundle(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        algorithm: int | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Many named tensors from one ``/v1/bundle`` request; each equals ``tensor()`` of its spec with that name."""
        decoded: dict[str, Decoded] = await self._drive(
            self._bundle_flow(tensors, raw_bits=False, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm)
        )
        return {name: array for name, (array, _) in decoded.items()}

    async def bundle_torch(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        algorithm: int | None = None,
        device: str | pt.device | None = None,
    ) -> dict[str, pt.Tensor]:
        """:meth:`bundle` as torch tensors."""
        from ._torch import to_torch

        decoded: dict[str, Decoded] = await self._drive(
            self._bundle_flow(tensors, raw_bits=True, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm)
        )
        return {name: to_torch(array, st, device=device) for name, (array, st) in decoded.items()}

    async def stats(
        self,
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
        """The server's statistics of the tensor (mean, std, histogram, fans, expected moments, sha256)."""
        body = init_body(
            shape,
            scheme,
            seed=seed,
            params=params,
            dtype=dtype,
            layout=layout,
            name=name,
            slice=slice,
            algorithm=algorithm,
        )
        result: dict[str, Any] = await self._drive(self._stats_flow(body))
        return result

    async def safetensors(self, spec: Mapping[str, Any]) -> SafetensorsFile:
        """The server's safetensors file for a spec, or for a bundle (a mapping with ``tensors``), parsed.

        ``.buffer`` holds the file's bytes; ``.array(name)`` gives zero-copy views."""
        path = "/v1/bundle" if "tensors" in spec else "/v1/init"
        file: SafetensorsFile = await self._drive(fetch_file(self._context(path), path, plain_spec(spec)))
        return file

    async def stats_of(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`stats` for a ready-made spec mapping."""
        result: dict[str, Any] = await self._drive(self._stats_flow(plain_spec(spec)))
        return result

    async def diagnose(
        self,
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
        """``POST /v1/diagnose``: predicted (mean field) vs measured signal propagation, per scheme.

        Args:
            schemes: scheme names, or ``{"scheme", "params", "label"}`` mappings, compared side by side.
            depth, width, activation: an MLP of ``depth`` layers of ``width`` units (or give ``layers``:
                ``[{"width", "activation", "negative_slope", "residual"}, …]``); activation is one of
                linear, tanh, relu, leaky_relu, selu, sigmoid, gelu.
            input_width: units of the input (default: the first layer's width).
            residual: α of ``x + α·φ(Wx)`` for every layer (shorthand form only).
            seed, batch, dtype: the weights are ``/v1/init`` of each layer's spec with this seed and dtype,
                named ``layers.{i}.weight``; the probe is a ``batch`` × input_width standard normal.
            jacobian, jacobian_q: compute the input-output Jacobian's spectrum (widths ≤ 1024), at an input
                of mean square ``jacobian_q`` per unit (default: the probe's first row).

        Returns the server's JSON: per scheme, per layer predicted and measured std, gradient std, histogram,
        effective rank; χ₁, depth scale, Jacobian spectrum and a verdict (see docs/diagnose.md).
        Raises ``APIError`` (422 invalid, 413 over the server's limits, 503 saturated after retries)."""
        body = diagnose_body(
            schemes,
            depth=depth,
            width=width,
            activation=activation,
            input_width=input_width,
            layers=layers,
            residual=residual,
            negative_slope=negative_slope,
            seed=seed,
            batch=batch,
            dtype=dtype,
            jacobian=jacobian,
            jacobian_q=jacobian_q,
        )
        return await self.diagnose_of(body)

    async def diagnose_of(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`diagnose` for a ready-made request body."""
        result: dict[str, Any] = await self._drive(self._diagnose_flow(body))
        return result

    async def resolve(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/resolve``: URL, ETag and size of a spec (or ``{"bundle": ...}``), without generating it."""
        result: dict[str, Any] = await self._drive(self._resolve_flow(plain_spec(body)))
        return result

    async def schemes(self) -> list[dict[str, Any]]:
        """The server's scheme catalog."""
        data = await self._drive(self._get_json_flow("/v1/schemes"))
        return list(data["schemes"] if isinstance(data, dict) and "schemes" in data else data)

    async def scheme(self, name: str) -> dict[str, Any]:
        """One catalog entry."""
        result: dict[str, Any] = await self._drive(self._get_json_flow(f"/v1/schemes/{name}"))
        return result

    # -- flow driver ----------------------------------------------------------------------------------
    async def _drive(self, flow: Flow) -> Any:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                return stop.value
            result, error = None, None
            try:
                if isinstance(action, Send):
                    result = await self._send(action.request)
                elif isinstance(action, Download):
                    await self._download(action.parts)
                elif isinstance(action, Wait):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, Blocking):
                    result = await asyncio.to_thread(action.fn, *action.args)
                else:  # pragma: no cover - the flows yield only these four actions
                    raise TypeError(f"unknown action {action!r}")
            except BaseException as exc:  # the flow cleans up (temp files, locks) and re-raises
                error = exc

    async def _send(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_exception(attempt, exc)
                if delay is None:
                    raise self._give_up(request, attempt, exc) from exc
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                return response
            delay = self._retry.delay_after_status(attempt, response.status_code, response.headers.get("retry-after"))
            if delay is None:
                raise self._error_for(request, response, attempt)
            await asyncio.sleep(delay)

    async def _download(self, parts: list[DownloadPart]) -> None:
        if self._raw_downloads:
            await self._download_in_thread(parts)
            return
        if len(parts) == 1:
            await self._stream_part(parts[0])
            return
        async with asyncio.TaskGroup() as group:
            for part in parts:
                group.create_task(self._stream_part(part))

    async def _download_in_thread(self, parts: list[DownloadPart]) -> None:
        """The blocking readinto transport in a worker thread; cancelling the task stops the thread.

        On cancellation the thread's sockets are shut down and the task waits for the thread to end
        before it lets the flow clean up (the thread may still be writing into the cache's temp file).
        """
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        cancel = DownloadCancel()

        def report(error: BaseException | None) -> None:
            if finished.done():
                return
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

        def work() -> None:
            error: BaseException | None = None
            try:
                download_parts(
                    self._raw, parts, retry=self._retry, error_for=self._error_for, give_up=self._give_up, cancel=cancel
                )
            except BaseException as exc:  # handed to the awaiting task
                error = exc
            loop.call_soon_threadsafe(report, error)

        thread = threading.Thread(target=work, name="initserve-download", daemon=True)
        thread.start()
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(BaseException):
                await finished
            raise
        finally:
            if not finished.done():  # only if the loop is being torn down: do not leave the thread writing
                cancel.set()
            thread.join()

    async def _stream_part(self, part: DownloadPart) -> None:
        writer = part.writer
        attempt = 0
        while True:
            attempt += 1
            request = part.build(writer)
            before = writer.offset
            try:
                response = await self._http.send(request, stream=True)
                try:
                    if response.status_code in (200, 206):
                        writer.begin(response.status_code, response.headers)
                        chunks = response.aiter_bytes() if self._is_encoded(response) else response.aiter_raw()
                        async for chunk in chunks:
                            writer.write(chunk)
                        writer.finish()
                        return
                    delay = self._retry.delay_after_status(
                        attempt, response.status_code, response.headers.get("retry-after")
                    )
                    if delay is None:
                        await response.aread()
                        raise self._error_for(request, response, attempt)
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                if writer.offset > before and part.resumable:
                    attempt = 0  # progress was made: a flaky link gets a fresh budget, resumed where it broke
                retry_delay = self._retry.delay_after_exception(max(attempt, 1), exc)
                if retry_delay is None:
                    raise self._give_up(request, attempt, exc) from exc
                if not part.resumable:
                    writer.restart()
                delay = retry_delay
            await asyncio.sleep(delay)
