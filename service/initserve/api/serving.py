"""Answer a request for a target: 304, stats JSON, or the (ranged) streamed file.

The decision order follows RFC 9110 §13.2.2: ``If-None-Match`` first (→ 304 without
generating), then ``If-Range``/``Range`` (GET only), then generation under a concurrency slot.
HEAD builds the same headers and generates nothing.

Files of at most ``INITSERVE_RESPONSE_CACHE_ENTRY_BYTES`` are *small*: generated whole in one
worker step, sent in one piece, and answered from the :class:`ResponseCache` when they were made
before (or are being made by an identical request). Larger files stream chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import anyio.to_thread
from cachetools import LRUCache
from fastapi import Request
from starlette.responses import JSONResponse, Response

from initserve.api.digests import (
    LeafMemo,
    LeafRecorder,
    TreeHashRun,
    complete_digest,
    digest_of_bytes,
    repr_digest,
    wants_sha256,
)
from initserve.api.http_cache import (
    IMMUTABLE,
    ByteRange,
    if_none_match_hits,
    strong_etag,
)
from initserve.api.limits import GenerationLimiter, GenerationSlot
from initserve.api.metrics import Metrics
from initserve.api.names import content_disposition
from initserve.api.problems import ProblemError
from initserve.api.repeats import STATE_CACHE_KEY
from initserve.api.response_cache import CacheKey, ResponseCache
from initserve.api.settings import Settings
from initserve.api.stored_files import plan_body
from initserve.api.streaming import ByteSource, GeneratedFileResponse, Segment, until_disconnect
from initserve.api.targets import Target
from initserve.api.whole_cache import WholeCachedFile, WholeResultCache
from initserve.engine import Kernel, Spec
from initserve.engine.samplers import is_elementwise
from initserve.engine.stats import StatsRun, fans_header

OCTET = "application/octet-stream"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (JSON cannot carry them) by null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def acquire_slot(request: Request) -> GenerationSlot:
    """A generation slot, or the 503 ``saturated`` problem (counted as rejected)."""
    limiter: GenerationLimiter = request.app.state.limiter
    try:
        return limiter.try_acquire()
    except ProblemError:
        metrics: Metrics = request.app.state.metrics
        metrics.rejected.inc()
        raise


def _base_headers(target: Target, etag: str, location_suffix: str = "") -> dict[str, str]:
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "X-Initserve-Algorithm": str(target.algorithm),
        "Vary": "Accept",
    }
    if target.url is not None:
        headers["Content-Location"] = target.url + location_suffix
    if isinstance(target.value, Spec):
        fans = fans_header(target.value)
        if fans is not None:
            headers["X-Initserve-Fans"] = fans
        if not location_suffix:
            headers["Content-Disposition"] = content_disposition(target.value.name + ".safetensors")
    elif not location_suffix:
        headers["Content-Disposition"] = content_disposition("bundle.safetensors")
    return headers


async def serve_target(
    request: Request, target: Target, *, conditional: bool, stats: bool, digest: bool = False
) -> Response:
    """The response for ``target``; ``conditional`` enables If-None-Match/Range (GET and HEAD)."""
    request.state.etag = target.etag
    if stats:
        return await _serve_stats(request, target, conditional=conditional)
    if digest:
        return await _serve_digest(request, target, conditional=conditional)
    headers = _base_headers(target, target.etag)
    headers["Accept-Ranges"] = "bytes"
    if conditional and if_none_match_hits(request.headers.get("if-none-match"), target.etag):
        return Response(status_code=304, headers=headers)
    cache: ResponseCache = request.app.state.response_cache
    key = _cache_key(target)
    cached = cache.get(key)  # a hit needs neither the engine's file object nor its header
    length = len(cached) if cached is not None else target.length
    status, segments = plan_body(request, length, target.digest, headers, ranges_allowed=conditional)
    head = request.method == "HEAD"
    settings: Settings = request.app.state.settings
    if not head and (cached is not None or length <= settings.response_cache_entry_bytes):
        if cached is not None:
            request.app.state.metrics.cache_hits.inc()
            data = cached
        else:
            data = await _small_file(request, target, key)
        if status == 200:  # the whole file: the repeat middleware may answer this very request from the cache
            request.scope.setdefault("state", {})[STATE_CACHE_KEY] = key
        headers["Repr-Digest"] = _repr_digest(request, key, data)
        return Response(_assemble(data, segments), status_code=status, headers=headers)
    return GeneratedFileResponse(
        _source(request, target, reuse=False),
        status_code=status,
        headers=headers,
        segments=segments,
        send_body=not head,
        slot=None if head else acquire_slot(request),
        on_data=partial(_count_data, request.app.state.metrics, target),
        threads=settings.generation_threads,
        kernel=request.app.state.kernel,
        cpu_limiter=request.app.state.cpu_limiter,
        cheap_gap=_whole_tensor_gaps(target) if len(segments) > 1 else None,
        observe=partial(_leaf_recorder, request.app.state.leaf_memo, key, length)
        if not head and wants_sha256(request.headers.get("want-repr-digest"))
        else None,
        copy_chunks=False,  # the source's buffers are never reused (reuse=False): sent without a copy
    )


def _leaf_recorder(memo: LeafMemo, key: CacheKey, size: int, start: int, stop: int) -> LeafRecorder:
    """Hash the leaves a streamed range covers, for a later ``?format=digest`` (api/digests.py)."""
    return LeafRecorder(memo, key, start, stop, size)


def _whole_tensor_gaps(target: Target) -> Callable[[int, int], bool] | None:
    """For a file holding whole-tensor schemes (orthogonal, sparse: each computed whole for any range):
    whether file bytes [a, b) lie in the header or in such tensors' data, so that reading them in passing
    costs no extra generation. None when the file has no whole-tensor scheme."""
    whole_names = {spec.name for spec in target.specs if not is_elementwise(spec.built.sampler)}
    if not whole_names:
        return None
    free = [(0, int(target.file.data_start))] + [
        (extent.start, extent.stop) for extent in target.extents if extent.name in whole_names
    ]
    free.sort()

    def cheap(start: int, stop: int) -> bool:
        position = start
        for low, high in free:
            if low <= position < high:
                position = high
            if position >= stop:
                return True
        return position >= stop

    return cheap


def _assemble(data: bytes, segments: list[Segment]) -> bytes:
    """The body the segments describe, cut from the whole file ``data``."""
    if len(segments) == 1 and isinstance(segments[0], ByteRange) and len(segments[0]) == len(data):
        return data
    return b"".join(part if isinstance(part, bytes) else data[part.start : part.stop] for part in segments)


def _render(source: ByteSource, threads: int | None, kernel: Kernel) -> tuple[bytes, str]:
    """The whole file in memory and its ``Repr-Digest``, in one call (runs in a worker thread: SHA-256
    releases the GIL, so hashing here keeps ≈ 0.13 ms per 256 KiB file off the event loop). Each reused
    view is copied before the next is made; a small file is a header and one chunk, so this is two copies
    of the data (a zero-filled bytearray written in place then frozen to bytes cost 5x as much)."""
    data = b"".join([bytes(view) for view in source.iter_bytes(kernel=kernel, threads=threads)])
    if len(data) != source.total_length:
        raise RuntimeError(f"engine yielded {len(data)} bytes of a {source.total_length}-byte file")
    return data, repr_digest(data)


def _source(request: Request, target: Target, *, reuse: bool = True) -> WholeCachedFile:
    """The target's file, with whole-tensor results shared through the app's cache; ``reuse=False``:
    its views are of buffers the engine never writes again (see ``SafetensorsFile.iter_bytes``)."""
    whole: WholeResultCache = request.app.state.whole_cache
    return WholeCachedFile(target.file, whole, reuse)


def _cache_key(target: Target) -> CacheKey:
    return (target.kind, target.digest, target.algorithm, "safetensors")


async def _small_file(request: Request, target: Target, key: CacheKey) -> bytes:
    """The whole file of a small target: from the cache, from an identical in-flight request, or
    generated here under a generation slot (503 when none is free) and then offered to the cache."""
    cache: ResponseCache = request.app.state.response_cache
    metrics: Metrics = request.app.state.metrics
    while True:
        data = cache.get(key)
        if data is not None:
            metrics.cache_hits.inc()
            return data
        pending, owner = cache.claim(key)
        if not owner:
            data = await pending.wait()
            if data is not None:
                metrics.cache_hits.inc()
                return data
            continue  # the owner failed or gave up: try again, possibly as the owner
        made: bytes | None = None
        try:
            slot = acquire_slot(request)
            try:
                settings: Settings = request.app.state.settings
                rendered, digest = await anyio.to_thread.run_sync(
                    partial(_render, _source(request, target), settings.generation_threads, request.app.state.kernel),
                    limiter=request.app.state.cpu_limiter,
                )
                made = rendered
            finally:
                slot.release()
            # Before the waiters wake: they (and this request) find the digest made with the file.
            digests: LRUCache[CacheKey, str] = request.app.state.repr_digests
            digests[key] = digest
        finally:
            cache.finish(key, pending, made)
        metrics.cache_misses.inc()
        _count_data(metrics, target, 0, len(rendered))
        return rendered


def _count_data(metrics: Metrics, target: Target, start: int, stop: int) -> None:
    for extent in target.extents:
        overlap = min(stop, extent.stop) - max(start, extent.start)
        if overlap > 0:
            metrics.generated_bytes.labels(extent.scheme).inc(overlap)
            metrics.generated_elements.labels(extent.scheme).inc(overlap // extent.itemsize)


async def _serve_stats(request: Request, target: Target, *, conditional: bool) -> Response:
    etag = strong_etag(target.digest + ".stats")
    headers = _base_headers(target, etag, "?format=stats")
    if conditional and if_none_match_hits(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    settings: Settings = request.app.state.settings
    metrics: Metrics = request.app.state.metrics
    slot = acquire_slot(request)
    try:
        results = {}
        for spec in target.specs:
            result = await _stats_of(request, spec, settings.generation_threads)
            if result is None:  # the client went away: nobody reads this (logged as nginx's 499)
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            results[spec.name] = result
            metrics.generated_elements.labels(spec.scheme).inc(int(spec.numel))
    finally:
        slot.release()
    body = results[target.specs[0].name] if isinstance(target.value, Spec) else {"tensors": results}
    return JSONResponse(json_safe(body), headers=headers)


def _repr_digest(request: Request, key: CacheKey, data: bytes) -> str:
    """``Repr-Digest`` of a small file, hashed once per file (not per cache hit) and remembered."""
    memo: LRUCache[CacheKey, str] = request.app.state.repr_digests
    value = memo.get(key)
    if value is None:
        value = memo[key] = repr_digest(data)
    return value


async def _serve_digest(request: Request, target: Target, *, conditional: bool) -> Response:
    """``?format=digest``: the file's tree hash and leaf digests (see api/digests.py)."""
    etag = strong_etag(target.digest + ".digest")
    headers = _base_headers(target, etag, "?format=digest")
    if conditional and if_none_match_hits(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    memo: LRUCache[CacheKey, dict[str, Any]] = request.app.state.digest_memo
    key = _cache_key(target)
    body = memo.get(key)
    source = "remembered"
    if body is None:
        body, source = await _compute_digest(request, target, key)
        if body is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        memo[key] = body
    metrics: Metrics = request.app.state.metrics
    metrics.digests.labels(source).inc()
    return JSONResponse({**body, "etag": target.etag}, headers=headers)


async def _compute_digest(request: Request, target: Target, key: CacheKey) -> tuple[dict[str, Any] | None, str]:
    """(the digest body, where it came from): hashed from the response cache (``small``), assembled
    from the leaves streams of this process hashed on the way out (``streamed``), or with the leaves
    no stream covered generated again without sending them (``generated``). None: the client left."""
    settings: Settings = request.app.state.settings
    cache: ResponseCache = request.app.state.response_cache
    small = cache.get(key)
    if small is None and target.length <= settings.response_cache_entry_bytes:
        small = await _small_file(request, target, key)
    if small is not None:
        return digest_of_bytes(small), "small"
    leaf_memo: LeafMemo = request.app.state.leaf_memo
    known = leaf_memo.get(key)
    body = complete_digest(target.length, known)
    if body is not None:
        return body, "streamed"
    slot = acquire_slot(request)
    try:
        run = await anyio.to_thread.run_sync(
            partial(
                TreeHashRun,
                _source(request, target),
                known=known,
                kernel=request.app.state.kernel,
                threads=settings.generation_threads,
            ),
            limiter=request.app.state.cpu_limiter,
        )
        body = await _run_chunked(request, run)
    finally:
        slot.release()
    metrics: Metrics = request.app.state.metrics
    metrics.digest_generated_bytes.inc(run.generated)
    return body, "generated"


async def _stats_of(request: Request, spec: Spec, threads: int | None) -> dict[str, Any] | None:
    """compute_stats, one chunk per worker step like a stream (see :func:`_run_chunked`)."""
    limiter = request.app.state.cpu_limiter
    run = await anyio.to_thread.run_sync(
        partial(
            StatsRun,
            spec,
            kernel=request.app.state.kernel,
            threads=threads,
            whole_source=request.app.state.whole_cache.get,
        ),
        limiter=limiter,
    )
    return await _run_chunked(request, run)


class ChunkedRun(Protocol):
    def step(self) -> bool: ...
    def close(self) -> None: ...
    def result(self) -> dict[str, Any]: ...


async def _run_chunked(request: Request, run: ChunkedRun) -> dict[str, Any] | None:
    """Run ``run`` one step per worker call: the CPU token is given back between chunks (an admitted
    small request is not stuck behind a big stats run), and a client that goes away stops the run at
    the next chunk (its slot is freed at once): then the answer is None."""
    limiter = request.app.state.cpu_limiter
    gone = False
    try:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal gone
                await until_disconnect(request.receive)
                gone = True
                group.cancel_scope.cancel()

            group.start_soon(watch)
            while await anyio.to_thread.run_sync(run.step, limiter=limiter):
                pass
            group.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(run.close, limiter=limiter)
    return None if gone else run.result()
