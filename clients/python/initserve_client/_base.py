"""``BaseClient``: everything ``Client`` and ``AsyncClient`` share — configuration, request building,
error mapping and the fetch flows. No I/O happens here; the subclasses drive the flows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from ._cache import Cache
from ._config import ClientConfig, resolve_config
from ._errors import APIError, InitserveError, RetriesExhaustedError, TransportError, error_from_response
from ._flow import FetchContext, Flow, fetch_file, send_json
from ._retry import COMPUTED, RetryPolicy, refused_locally
from ._safetensors import SafetensorsFile
from ._specs import DTypeLike, bundle_body, init_body, require_json

__all__ = ["BaseClient", "Decoded"]

USER_AGENT = "initserve-client/0.1"

# (array, safetensors dtype): arrays of BF16/F8 are raw bits when asked for torch.
Decoded = tuple[np.ndarray[Any, Any], str]


class BaseClient:
    """Configuration and pure logic; see :class:`initserve_client.Client` for the arguments."""

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
        self._config = resolve_config(
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
        )
        self._retry = retry_policy if retry_policy is not None else RetryPolicy(attempts=self._config.retries)
        self._cache = Cache(self._config.cache_dir) if self._config.cache_dir is not None else None

    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def cache(self) -> Cache | None:
        return self._cache

    # -- requests -----------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self._config.base_url + path_or_url

    def _build_request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        computed: bool = False,
    ) -> httpx.Request:
        """``computed``: the server answers only once the whole result is computed (stats, diagnose), so
        the read waits up to ``compute_timeout`` and a read timeout is final (:data:`COMPUTED`)."""
        all_headers = {"User-Agent": USER_AGENT}
        if self._config.api_key:
            all_headers["Authorization"] = f"Bearer {self._config.api_key}"
        all_headers.update(headers or {})
        return httpx.Request(
            method,
            self._url(path_or_url),
            json=require_json(json),  # every JSON body: NaN/inf → InvalidSpecError naming the field
            headers=all_headers,
            params=params,
            # httpx reads the timeout from the request; set it as Client.build_request would.
            extensions={
                "timeout": (self._config.compute_timeout if computed else self._config.timeout).as_dict(),
                **({COMPUTED: True} if computed else {}),
            },
        )

    def _context(self, desc: str) -> FetchContext:
        c = self._config
        return FetchContext(
            build_request=self._build_request,
            cache=self._cache,
            offline=c.offline,
            parallel=c.parallel,
            parallel_threshold=c.parallel_threshold,
            progress=c.progress,
            progress_threshold=c.progress_threshold,
            lock_timeout=c.lock_timeout,
            desc=desc,
            offline_source=c.offline_source,
        )

    # -- responses ----------------------------------------------------------------------------------
    @staticmethod
    def _is_encoded(response: httpx.Response) -> bool:
        """True when a proxy compressed the body: read decoded bytes then, not raw ones."""
        return response.headers.get("content-encoding", "identity").lower() not in ("identity", "")

    def _error_for(self, request: httpx.Request, response: httpx.Response, attempt: int) -> InitserveError:
        error: APIError = error_from_response(
            response.status_code,
            response.headers.get("content-type", ""),
            response.content,
            retry_after=response.headers.get("retry-after"),
            method=request.method,
            url=request.url.path,
        )
        if attempt > 1:
            return RetriesExhaustedError(f"{request.method} {request.url}", attempt, error)
        return error

    def _give_up(self, request: httpx.Request, attempt: int, exc: BaseException) -> InitserveError:
        if refused_locally(exc):
            origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
            return TransportError(
                f"{request.method} {request.url} failed: connection refused — is `initserve serve` running at "
                f"{origin}? (the URL comes from {self._config.base_url_source})"
            )
        if isinstance(exc, httpx.ReadTimeout) and request.extensions.get(COMPUTED):
            waited = self._config.compute_timeout.read
            return TransportError(
                f"{request.method} {request.url}: no answer within compute_timeout = {waited:g} s (the server "
                "computes it whole before answering, and stops when we leave); not retried, since a retry would "
                "compute it again. Wait longer: compute_timeout= or INITSERVE_COMPUTE_TIMEOUT"
            )
        if attempt > 1:
            return RetriesExhaustedError(f"{request.method} {request.url}", attempt, exc)
        return TransportError(f"{request.method} {request.url} failed: {type(exc).__name__}: {exc}")

    # -- flows --------------------------------------------------------------------------------------
    def _tensor_flow(
        self,
        shape: Sequence[int],
        scheme: str,
        *,
        raw_bits: bool,
        seed: int | None,
        params: Mapping[str, Any] | None,
        dtype: DTypeLike,
        layout: str | None,
        name: str | None,
        slice: Sequence[Sequence[int]] | None,
        algorithm: int | None,
    ) -> Flow:
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
        file: SafetensorsFile = yield from fetch_file(self._context(f"{scheme} {list(shape)}"), "/v1/init", body)
        wanted = name if name is not None else "weight"
        key = wanted if wanted in file.tensors or len(file.tensors) != 1 else next(iter(file.tensors))
        return file.array(key, raw_bits=raw_bits), file.tensors[key].dtype

    def _bundle_flow(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        raw_bits: bool,
        seed: int | None,
        dtype: DTypeLike,
        layout: str | None,
        algorithm: int | None,
    ) -> Flow:
        body = bundle_body(tensors, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm)
        file: SafetensorsFile = yield from fetch_file(self._context(f"bundle of {len(tensors)}"), "/v1/bundle", body)
        missing = set(tensors) - set(file.tensors)
        if missing:
            raise InitserveError(f"the server's bundle lacks tensors {sorted(missing)}")
        return {name: (file.array(name, raw_bits=raw_bits), file.tensors[name].dtype) for name in tensors}

    def _stats_flow(self, body: Mapping[str, Any]) -> Flow:
        request = self._build_request(
            "POST",
            "/v1/init",
            json=dict(body),
            params={"format": "stats"},
            headers={"Accept": "application/json"},
            computed=True,
        )
        return (yield from send_json(request))

    def _diagnose_flow(self, body: Mapping[str, Any]) -> Flow:
        request = self._build_request(
            "POST", "/v1/diagnose", json=dict(body), headers={"Accept": "application/json"}, computed=True
        )
        return (yield from send_json(request))

    def _get_json_flow(self, path: str) -> Flow:
        return (yield from send_json(self._build_request("GET", path)))

    def _resolve_flow(self, body: Mapping[str, Any]) -> Flow:
        return (yield from send_json(self._build_request("POST", "/v1/resolve", json=dict(body))))
