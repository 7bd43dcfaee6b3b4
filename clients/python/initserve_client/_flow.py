"""The fetch logic, written once as generators that *yield* the I/O they need (httpx's auth-flow idea).

A flow yields one of three actions and receives its result:

* :class:`Send` — an HTTP request whose (small) body is read; the driver retries and raises typed errors;
* :class:`Download` — byte ranges to stream into :class:`~._download.BodyWriter` s; the driver retries
  and resumes;
* :class:`Blocking` — local work that may block (hashing a blob, waiting on a file lock); the sync
  driver calls it, the async driver runs it in a thread.

``Client`` and ``AsyncClient`` drive the same flows, so cache planning, verification and decoding
cannot drift apart between them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._cache import Cache, CacheEntry
from ._download import BodyWriter, MemorySink, Progress, Sink, make_progress, plan_ranges
from ._errors import IntegrityError, OfflineError, SafetensorsFormatError
from ._safetensors import SafetensorsFile, parse
from ._specs import request_key
from ._treehash import assemble, hash_leaves

__all__ = ["Blocking", "Download", "DownloadPart", "FetchContext", "Flow", "Send", "fetch_file", "send_json"]


@dataclass
class Send:
    request: httpx.Request


@dataclass
class DownloadPart:
    """One stream: ``build(writer)`` makes the request for the bytes the writer still misses."""

    build: Callable[[BodyWriter], httpx.Request]
    writer: BodyWriter
    resumable: bool


@dataclass
class Download:
    parts: list[DownloadPart]


@dataclass
class Blocking:
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


Action = Send | Download | Blocking
Flow = Generator[Action, Any, Any]


@dataclass(frozen=True)
class Resolved:
    """``POST /v1/resolve``: where the file lives and what it is, learnt without generating it."""

    url: str | None
    etag: str
    content_length: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resolved:
        try:
            etag = str(data["etag"])
            if not etag.startswith('"') and not etag.startswith("W/"):
                etag = f'"{etag}"'
            url = data.get("url")
            return cls(url=str(url) if url else None, etag=etag, content_length=int(data["content_length"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed /v1/resolve answer: {exc}") from None


@dataclass
class FetchContext:
    """What a fetch flow needs from its client; built by the client, no I/O."""

    build_request: Callable[..., httpx.Request]
    cache: Cache | None
    offline: bool
    parallel: int
    parallel_threshold: int
    progress: bool | None
    progress_threshold: int
    lock_timeout: float
    desc: str = "initserve"
    extra: dict[str, Any] = field(default_factory=dict)


def send_json(request: httpx.Request) -> Flow:
    """Send a request and decode its JSON body."""
    response: httpx.Response = yield Send(request)
    try:
        return json.loads(response.content)
    except ValueError:
        raise IntegrityError(f"{request.method} {request.url.path} answered with invalid JSON") from None


def _resolve_body(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"bundle": dict(body)} if path == "/v1/bundle" else dict(body)


def _summary(file: SafetensorsFile) -> dict[str, Any]:
    return {name: {"dtype": info.dtype, "shape": list(info.shape)} for name, info in file.tensors.items()}


def _parts(
    ctx: FetchContext,
    *,
    url: str | None,
    path: str,
    body: Mapping[str, Any],
    sink: Sink | None,
    size: int | None,
    allocate: Callable[[int], Sink] | None,
    etag: str | None,
    progress: Progress | None,
) -> list[DownloadPart]:
    """One stream, or ``parallel`` byte ranges of the tensor URL for large files."""

    def get(writer: BodyWriter) -> httpx.Request:
        assert url is not None
        rng = writer.range_header()
        return ctx.build_request("GET", url, headers={"Range": rng} if rng else None)

    def post(_writer: BodyWriter) -> httpx.Request:
        return ctx.build_request("POST", path, json=dict(body))

    if url is not None and sink is not None and size is not None:
        parallel = ctx.parallel if size >= ctx.parallel_threshold else 1
        hashed = ctx.cache is not None
        ranges = plan_ranges(size, parallel)
        return [
            DownloadPart(
                get,
                BodyWriter(sink, a, b, hash_body=hashed, progress=progress, expected_etag=etag),
                resumable=True,
            )
            for a, b in ranges
        ]
    writer = BodyWriter(sink, allocate=allocate, hash_body=ctx.cache is not None, progress=progress, expected_etag=etag)
    return [DownloadPart(post, writer, resumable=False)]


def fetch_file(ctx: FetchContext, path: str, body: Mapping[str, Any]) -> Flow:
    """Return a parsed :class:`SafetensorsFile` for ``POST path body``, through the cache when enabled."""
    if ctx.cache is None:
        if ctx.offline:
            raise OfflineError("offline mode is on and the cache is disabled (cache=False): nothing can be served")
        return (yield from _fetch_uncached(ctx, path, body))
    return (yield from _fetch_cached(ctx, ctx.cache, path, body))


def _fetch_uncached(ctx: FetchContext, path: str, body: Mapping[str, Any]) -> Flow:
    if ctx.parallel > 1:
        resolved = Resolved.from_json(
            (yield from send_json(ctx.build_request("POST", "/v1/resolve", json=_resolve_body(path, body))))
        )
        if resolved.url is not None:  # below the threshold _parts plans a single stream of the URL
            buffer = MemorySink.allocate(resolved.content_length)
            progress = make_progress(resolved.content_length, ctx.progress, ctx.progress_threshold, ctx.desc)
            try:
                yield Download(
                    _parts(
                        ctx,
                        url=resolved.url,
                        path=path,
                        body=body,
                        sink=buffer,
                        size=resolved.content_length,
                        allocate=None,
                        etag=resolved.etag,
                        progress=progress,
                    )
                )
            finally:
                if progress is not None:
                    progress.close()
            return parse(buffer.view)

    holder: dict[str, Progress | None] = {"progress": None}

    def allocate(size: int) -> Sink:
        holder["progress"] = make_progress(size, ctx.progress, ctx.progress_threshold, ctx.desc)
        part.writer.progress = holder["progress"]
        return MemorySink.allocate(size)

    (part,) = _parts(
        ctx, url=None, path=path, body=body, sink=None, size=None, allocate=allocate, etag=None, progress=None
    )
    try:
        yield Download([part])
    finally:
        if holder["progress"] is not None:
            holder["progress"].close()
    assert isinstance(part.writer.sink, MemorySink)
    return parse(part.writer.sink.view)


def _open(cache: Cache, entry: CacheEntry) -> Flow:
    view: memoryview | None = yield Blocking(cache.open_blob, (entry,))
    if view is None:
        return None
    try:
        return parse(view)
    except SafetensorsFormatError:
        # A blob whose tree hash matches but which does not parse was stored by a broken writer: drop it.
        cache.forget(entry)
        return None


def _fetch_cached(ctx: FetchContext, cache: Cache, path: str, body: Mapping[str, Any]) -> Flow:
    key = request_key(path, body)
    yield Blocking(cache.ensure)
    entry = cache.lookup_request(key)
    if entry is not None:
        hit = yield from _open(cache, entry)
        if hit is not None:
            return hit
    if ctx.offline:
        raise OfflineError(
            f"offline mode is on and {path} {json.dumps(dict(body), sort_keys=True)} is not in the cache at "
            f"{cache.root} (or its copy was corrupted); fetch it once online, or unset INITSERVE_OFFLINE"
        )
    resolved = Resolved.from_json(
        (yield from send_json(ctx.build_request("POST", "/v1/resolve", json=_resolve_body(path, body))))
    )
    lock = cache.lock(resolved.etag, ctx.lock_timeout)
    yield Blocking(lock.acquire)
    try:
        # After the lock: another process may have stored it while we waited.
        entry = cache.lookup_etag(resolved.etag)
        if entry is not None:
            hit = yield from _open(cache, entry)
            if hit is not None:
                cache.record(entry, request_key=key)
                return hit
        return (yield from _download_to_cache(ctx, cache, key, path, body, resolved))
    finally:
        lock.release()


def _download_to_cache(
    ctx: FetchContext, cache: Cache, key: str, path: str, body: Mapping[str, Any], resolved: Resolved
) -> Flow:
    blob = yield Blocking(cache.new_blob, (resolved.content_length,))
    progress = make_progress(resolved.content_length, ctx.progress, ctx.progress_threshold, ctx.desc)
    parts: list[DownloadPart] = []
    try:
        parts = _parts(
            ctx,
            url=resolved.url,
            path=path,
            body=body,
            sink=blob,
            size=resolved.content_length,
            allocate=None,
            etag=resolved.etag,
            progress=progress,
        )
        yield Download(parts)

        # Each writer hashed the leaves inside its range while receiving; leaves cut by a range
        # boundary are hashed from the finished file. Blocking: waits for the hashing threads.
        def tree_hash() -> str:
            leaves = [part.writer.leaf_digests() or {} for part in parts]
            return assemble(resolved.content_length, leaves, lambda missing: hash_leaves(blob.mapped(), missing))

        sha: str = yield Blocking(tree_hash)
        blob.commit(sha)
    except BaseException:
        for part in parts:
            part.writer.close()
        blob.abort()
        raise
    finally:
        if progress is not None:
            progress.close()
    entry = CacheEntry(etag=resolved.etag, digest=sha, size=resolved.content_length, url=resolved.url)
    # Just hashed while writing: map it without hashing again.
    view = yield Blocking(lambda: cache.open_blob(entry, verify=False))
    if view is None:
        raise IntegrityError(f"the blob {sha} vanished from the cache right after it was written")
    try:
        file = parse(view)
    except SafetensorsFormatError:
        cache.forget(entry)  # never index a file that does not parse
        raise
    cache.record(dataclasses.replace(entry, tensors=_summary(file)), request_key=key)
    return file
