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

import base64
import binascii
import dataclasses
import errno
import hashlib
import json
import logging
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from initserve.engine.checkpoint import DTYPE_CODES

from ._cache import Cache, CacheEntry, EtagLock, lock_pauses, normalize_etag
from ._download import BodyWriter, MemorySink, Progress, Sink, make_progress, plan_ranges
from ._errors import CacheError, CorruptedDownloadError, IntegrityError, OfflineError, SafetensorsFormatError
from ._safetensors import SafetensorsFile, parse
from ._specs import request_key
from ._treehash import LEAF_SIZE, assemble, hash_leaves, tree_sha256

log = logging.getLogger("initserve_client")

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


@dataclass
class Wait:
    """Pause ``seconds`` holding no worker thread (``time.sleep`` in Client, ``asyncio.sleep`` in AsyncClient)."""

    seconds: float


Action = Send | Download | Blocking | Wait
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
    offline_source: str = "offline=True"  # the setting that turned offline mode on, named in OfflineError


def offline_message(source: str, what: str, root: object) -> str:
    """Why an offline fetch failed and how to get out of offline mode, naming the setting that set it."""
    if source.startswith("INITSERVE_OFFLINE"):
        how = "unset INITSERVE_OFFLINE (or pass offline=False)"
    elif source == "--offline":
        how = "drop --offline"
    else:
        how = "create the client with offline=False"
    return (
        f"offline mode is on ({source}) and {what} is not in the cache at {root} (or its copy was corrupted); "
        f"to fetch it once online, {how}"
    )


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
    """Per tensor: dtype and shape, plus the scheme and seed from the file's canonical spec (what
    ``initserve cache ls`` shows to tell entries apart)."""
    try:
        spec = json.loads(file.metadata.get("initserve.spec", "{}"))
    except ValueError:
        spec = {}
    specs = spec.get("tensors", {}) if isinstance(spec, dict) and "tensors" in spec else {}
    summary: dict[str, Any] = {}
    for name, info in file.tensors.items():
        own = specs.get(name) if specs else spec
        entry: dict[str, Any] = {"dtype": info.dtype, "shape": list(info.shape)}
        if isinstance(own, dict) and isinstance(spec, dict):
            entry.update(scheme=own.get("scheme"), seed=spec.get("seed"))
        summary[name] = entry
    return summary


def _parts(
    ctx: FetchContext,
    path: str,
    body: Mapping[str, Any],
    resolved: Resolved | None,
    *,
    sink: Sink | None,
    progress: Progress | None,
    allocate: Callable[[int], Sink] | None = None,
) -> list[DownloadPart]:
    """One stream, or ``parallel`` byte ranges of the tensor URL for large files. Without ``resolved``
    (where the file lives and its size, unknown): one ``POST path body`` into the sink ``allocate`` makes."""
    url, size, etag = (resolved.url, resolved.content_length, resolved.etag) if resolved else (None, None, None)

    def get(writer: BodyWriter) -> httpx.Request:
        assert url is not None
        rng = writer.range_header()
        return ctx.build_request("GET", url, headers={**WANT_DIGEST, "Range": rng} if rng else WANT_DIGEST)

    def post(_writer: BodyWriter) -> httpx.Request:
        return ctx.build_request("POST", path, json=dict(body), headers=WANT_DIGEST)

    if url is not None and sink is not None and size is not None:
        parallel = ctx.parallel if size >= ctx.parallel_threshold else 1
        hashed = ctx.cache is not None
        ranges = plan_ranges(size, parallel, align=LEAF_SIZE)
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


# RFC 9530: this client will ask for the file's SHA-256 digest after the body, so the server hashes what
# it streams (a server cannot put a streamed file's digest in a header before the body).
WANT_DIGEST = {"Want-Repr-Digest": "sha-256=10"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPR_SHA256 = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):")
DOWNLOAD_ATTEMPTS = 2  # a body that fails its digest is fetched once more before giving up


def parse_repr_digest(value: str | None) -> bytes | None:
    """The raw SHA-256 of an RFC 9530 ``Repr-Digest`` field (``sha-256=:<base64>:``), or None."""
    match = _REPR_SHA256.search(value or "")
    if match is None:
        return None
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def authoritative_tree_sha256(
    ctx: FetchContext,
    *,
    url: str | None,
    path: str,
    body: Mapping[str, Any],
    size: int,
    writers: list[BodyWriter] | None = None,
) -> Flow:
    """The server's SHA-256 tree hash of the file (the cache's content hash; see _treehash.py).

    A file of one leaf came with ``Repr-Digest`` = SHA-256 of its bytes when the server held it whole
    before sending (small files): its tree hash is SHA-256 of that digest, no request needed. Otherwise
    the server is asked for ``?format=digest`` of the tensor URL (or of the POST, for a file without one).
    """
    if size <= LEAF_SIZE:
        for writer in writers or []:
            raw = parse_repr_digest(writer.repr_digest)
            if raw is not None:
                return hashlib.sha256(raw).hexdigest()
    if url is not None:
        request = ctx.build_request("GET", url, params={"format": "digest"})
    else:
        request = ctx.build_request("POST", path, params={"format": "digest"}, json=dict(body))
    answer = yield from send_json(request)
    value = answer.get("tree_sha256") if isinstance(answer, dict) else None
    length = answer.get("content_length") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not _HEX64.match(value) or not isinstance(length, int):
        raise IntegrityError(f"malformed ?format=digest answer for {url or path}: {str(answer)[:200]}")
    if length != size:
        raise CorruptedDownloadError(f"the server's file at {url or path} has {length} bytes; {size} are held")
    return value


def _check_against(received: str, expected: str, where: str) -> None:
    if received != expected:
        raise CorruptedDownloadError(
            f"the bytes received for {where} have tree hash {received}, but the server's digest is {expected}: "
            "they were changed in transit (a proxy, a middlebox or the network); nothing was returned or cached"
        )


def _cache_os_error(cache: Cache, exc: OSError) -> CacheError:
    """A cache write that failed, as a CacheError that says what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "the disk is full: free space, point INITSERVE_CACHE_DIR at a larger disk, or pass cache=False"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "it is not writable: fix its permissions, point INITSERVE_CACHE_DIR elsewhere, or pass cache=False"
    else:
        advice = "point INITSERVE_CACHE_DIR elsewhere, or pass cache=False"
    return CacheError(f"cannot write to the cache at {cache.root} ({exc.strerror or exc}); {advice}")


def fetch_file(ctx: FetchContext, path: str, body: Mapping[str, Any]) -> Flow:
    """Return a parsed :class:`SafetensorsFile` for ``POST path body``, through the cache when enabled."""
    if ctx.cache is None:
        if ctx.offline:
            raise OfflineError(
                f"offline mode is on ({ctx.offline_source}) and the cache is disabled (cache=False): "
                "nothing can be served"
            )
        return (yield from _fetch_uncached(ctx, path, body))
    return (yield from _fetch_cached(ctx, ctx.cache, path, body))


def _fetch_uncached(ctx: FetchContext, path: str, body: Mapping[str, Any]) -> Flow:
    """Download into memory and check the bytes against the server's digest before parsing them."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        view, url, writers = yield from _download_uncached(ctx, path, body)
        received: str = yield Blocking(tree_sha256, (view,))
        expected = yield from authoritative_tree_sha256(
            ctx, url=url, path=path, body=body, size=view.nbytes, writers=writers
        )
        try:
            _check_against(received, expected, url or path)
        except CorruptedDownloadError:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
            continue
        return parse(view)
    raise AssertionError("unreachable")


def _download_uncached(ctx: FetchContext, path: str, body: Mapping[str, Any]) -> Flow:
    """(the file's bytes, its tensor URL or None, the writers that received it)."""
    if ctx.parallel > 1:
        resolved = Resolved.from_json(
            (yield from send_json(ctx.build_request("POST", "/v1/resolve", json=_resolve_body(path, body))))
        )
        if resolved.url is not None:  # below the threshold _parts plans a single stream of the URL
            buffer = MemorySink.allocate(resolved.content_length)
            progress = make_progress(resolved.content_length, ctx.progress, ctx.progress_threshold, ctx.desc)
            parts = _parts(ctx, path, body, resolved, sink=buffer, progress=progress)
            try:
                yield Download(parts)
            finally:
                if progress is not None:
                    progress.close()
            return buffer.view, resolved.url, [part.writer for part in parts]

    holder: dict[str, Progress | None] = {"progress": None}

    def allocate(size: int) -> Sink:
        holder["progress"] = make_progress(size, ctx.progress, ctx.progress_threshold, ctx.desc)
        part.writer.progress = holder["progress"]
        return MemorySink.allocate(size)

    (part,) = _parts(ctx, path, body, None, sink=None, progress=None, allocate=allocate)
    try:
        yield Download([part])
    finally:
        if holder["progress"] is not None:
            holder["progress"].close()
    assert isinstance(part.writer.sink, MemorySink)
    return part.writer.sink.view, None, [part.writer]


def _open(cache: Cache, entry: CacheEntry, path: str, body: Mapping[str, Any], key: str | None = None) -> Flow:
    """The cached file of ``entry`` if it is intact and is what ``path``/``body`` asks for, else None
    (a request index entry that names another file is dropped; the caller fetches again)."""
    view: memoryview | None = yield Blocking(cache.open_blob, (entry,))
    if view is None:
        return None
    try:
        file = parse(view)
    except SafetensorsFormatError:
        # A blob whose tree hash matches but which does not parse was stored by a broken writer: drop it.
        cache.forget(entry)
        return None
    problem = mismatch(path, body, file) or etag_mismatch(entry.etag, file)
    if problem is not None:
        log.warning("cache entry for %s does not match the request (%s); fetching again", path, problem)
        if key is not None:
            cache.forget_request(key)
        return None
    return file


def _expected(spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[str | None, Any]:
    """(safetensors dtype code, result shape) a spec asks for; None/[] where the client cannot tell."""
    dtype = spec.get("dtype", defaults.get("dtype", "float32"))
    shape = spec.get("shape")
    if isinstance(shape, list) and isinstance(spec.get("slice"), list):
        cut = [stop - start for start, stop in spec["slice"] if isinstance(start, int) and isinstance(stop, int)]
        shape = cut + shape[len(cut) :]
    return DTYPE_CODES.get(str(dtype)), shape


def mismatch(path: str, body: Mapping[str, Any], file: SafetensorsFile) -> str | None:
    """Why ``file`` is not the answer to ``path``/``body``, or None.

    Compared: the tensor names, dtypes and shapes, and against the file's canonical spec (its
    ``initserve.spec`` metadata) the seed and every other field the request states in a form that has
    one canonical spelling — the algorithm, each tensor's layout, its slice offsets and its numeric
    params. Not compared: the scheme and string params, whose framework aliases only the server maps
    (``kaiming_uniform_`` is stored as ``kaiming_uniform``)."""
    if path == "/v1/bundle":
        tensors = body.get("tensors")
        wanted = dict(tensors) if isinstance(tensors, Mapping) else {}
        defaults: Mapping[str, Any] = body
    else:
        wanted = {str(body.get("name", "weight")): body}
        defaults = {}
    if set(wanted) != set(file.tensors):
        return f"tensors {sorted(file.tensors)}, asked for {sorted(wanted)}"
    for name, spec in wanted.items():
        info = file.tensors[name]
        dtype, shape = _expected(spec if isinstance(spec, Mapping) else {}, defaults)
        if dtype is not None and info.dtype != dtype:
            return f"{name} is {info.dtype}, asked for {dtype}"
        if isinstance(shape, list) and list(info.shape) != shape:
            return f"{name} has shape {list(info.shape)}, asked for {shape}"
    stored_text = file.metadata.get("initserve.spec")
    if stored_text is None:
        return None
    try:
        stored = json.loads(stored_text)
    except ValueError:
        return "its metadata holds no readable spec"
    if not isinstance(stored, dict):
        return "its metadata holds no readable spec"
    if "seed" in body and stored.get("seed") != body["seed"]:
        return f"seed {stored.get('seed')}, asked for {body['seed']}"
    if "algorithm" in body and file.metadata.get("initserve.algorithm") != str(body["algorithm"]):
        return f"algorithm {file.metadata.get('initserve.algorithm')}, asked for {body['algorithm']}"
    stored_tensors = stored.get("tensors") if path == "/v1/bundle" else {next(iter(wanted)): stored}
    for name, spec in wanted.items():
        own = stored_tensors.get(name) if isinstance(stored_tensors, dict) else None
        problem = _stated_mismatch(spec if isinstance(spec, Mapping) else {}, defaults, own)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def _stated_mismatch(spec: Mapping[str, Any], defaults: Mapping[str, Any], stored: object) -> str | None:
    """How one tensor's canonical spec ``stored`` contradicts what ``spec`` (with the bundle's
    ``defaults``) states explicitly, or None."""
    if not isinstance(stored, dict):
        return "the file's metadata holds no spec for it"
    layout = spec.get("layout", defaults.get("layout"))
    if layout is not None and stored.get("layout") != layout:
        return f"layout {stored.get('layout')!r}, asked for {layout!r}"
    rank = len(stored.get("shape") or ())
    asked, held = _slice_starts(spec.get("slice"), rank), _slice_starts(stored.get("slice"), rank)
    if asked is not None and asked != held:
        return f"slice starting at {held}, asked for one starting at {asked}"
    params, stored_params = spec.get("params"), stored.get("params")
    if isinstance(params, Mapping) and isinstance(stored_params, dict):
        for key, value in params.items():
            held_value = stored_params.get(key)
            if _number(value) and _number(held_value) and not _same_number(value, held_value):
                return f"params.{key} = {held_value!r}, asked for {value!r}"
    return None


def _slice_starts(pairs: object, rank: int) -> list[int] | None:
    """The first index along every dimension (0 where no pair is given), or None if not readable."""
    if pairs is None:
        return [0] * rank
    if not isinstance(pairs, list | tuple):
        return None
    starts = [pair[0] for pair in pairs if isinstance(pair, list | tuple) and len(pair) == 2]
    if len(starts) != len(pairs) or not all(_number(start) for start in starts):
        return None
    return [int(start) for start in starts] + [0] * (rank - len(starts))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_number(a: object, b: object) -> bool:
    """Equal as the canonical form stores them (integers exactly, floats as float64)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return float(a) == float(b)  # type: ignore[arg-type]  # both are numbers (_number)
    except OverflowError:  # an integer past float64: only an equal integer matches it
        return False


def etag_mismatch(etag: str, file: SafetensorsFile) -> str | None:
    """Why ``file`` is not the file of ``etag``, or None: a file's strong ETag is SHA-256 of
    ``"initserve-algorithm-<v>\\n" + <canonical spec>`` (docs/determinism.md), both in its metadata."""
    spec, algorithm = file.metadata.get("initserve.spec"), file.metadata.get("initserve.algorithm")
    if spec is None or algorithm is None:
        return None
    own = hashlib.sha256(f"initserve-algorithm-{algorithm}\n{spec}".encode()).hexdigest()
    if own != normalize_etag(etag):
        return f"its spec is that of ETag {own[:12]}…, the index says {normalize_etag(etag)[:12]}…"
    return None


def _fetch_cached(ctx: FetchContext, cache: Cache, path: str, body: Mapping[str, Any]) -> Flow:
    try:
        return (yield from _fetch_cached_unchecked(ctx, cache, path, body))
    except OSError as exc:  # only the cache's own files raise OSError here (transport errors are httpx's)
        raise _cache_os_error(cache, exc) from exc


def _fetch_cached_unchecked(ctx: FetchContext, cache: Cache, path: str, body: Mapping[str, Any]) -> Flow:
    key = request_key(path, body)
    yield Blocking(cache.ensure)
    entry = cache.lookup_request(key)
    if entry is not None:
        hit = yield from _open(cache, entry, path, body, key)
        if hit is not None:
            return hit
    if ctx.offline:
        raise OfflineError(
            offline_message(ctx.offline_source, f"{path} {json.dumps(dict(body), sort_keys=True)}", cache.root)
        )
    resolved = Resolved.from_json(
        (yield from send_json(ctx.build_request("POST", "/v1/resolve", json=_resolve_body(path, body))))
    )
    lock = cache.lock(resolved.etag, ctx.lock_timeout)
    yield from _acquire(lock)
    try:
        # After the lock: another process may have stored it while we waited.
        entry = cache.lookup_etag(resolved.etag)
        if entry is not None:
            hit = yield from _open(cache, entry, path, body)
            if hit is not None:
                cache.record(entry, request_key=key)
                return hit
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                return (yield from _download_to_cache(ctx, cache, key, path, body, resolved))
            except CorruptedDownloadError:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
    finally:
        lock.release()


def _acquire(lock: EtagLock) -> Flow:
    """Take the per-ETag lock, or give up after its timeout, waiting between non-blocking attempts. A
    waiter never sits in a worker thread: eight coroutines of one AsyncClient fetching the same file
    filled asyncio's six default threads waiting, and the one holding the lock had none left to write
    the file (a hang until lock_timeout, ten minutes)."""
    pauses = lock_pauses()
    while (yield Blocking(lock.try_acquire)) is None:
        yield Wait(next(pauses))


def _download_to_cache(
    ctx: FetchContext, cache: Cache, key: str, path: str, body: Mapping[str, Any], resolved: Resolved
) -> Flow:
    blob = yield Blocking(cache.new_blob, (resolved.content_length,))
    progress = make_progress(resolved.content_length, ctx.progress, ctx.progress_threshold, ctx.desc)
    parts: list[DownloadPart] = []
    try:
        parts = _parts(ctx, path, body, resolved, sink=blob, progress=progress)
        yield Download(parts)

        # Each writer hashed the leaves inside its range while receiving; leaves cut by a range
        # boundary are hashed from the finished file. Blocking: waits for the hashing threads.
        def tree_hash() -> str:
            leaves = [part.writer.leaf_digests() or {} for part in parts]
            return assemble(resolved.content_length, leaves, lambda missing: hash_leaves(blob.mapped(), missing))

        sha: str = yield Blocking(tree_hash)
        expected = yield from authoritative_tree_sha256(
            ctx,
            url=resolved.url,
            path=path,
            body=body,
            size=resolved.content_length,
            writers=[part.writer for part in parts],
        )
        _check_against(sha, expected, resolved.url or path)  # a bad body is aborted below, never committed
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
    problem = mismatch(path, body, file) or etag_mismatch(resolved.etag, file)
    if problem is not None:
        raise IntegrityError(f"the server answered {path} with another file ({problem})")
    cache.record(dataclasses.replace(entry, tensors=_summary(file)), request_key=key)
    return file
