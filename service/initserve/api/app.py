"""The composition root: :func:`create_app` wires settings, state, middleware and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from cachetools import LRUCache
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from initserve import __version__
from initserve.api.access_log import AccessLogMiddleware
from initserve.api.content_type import JSON_BODY_ROUTES, ContentEncodingMiddleware, JsonBodyMiddleware
from initserve.api.digests import DIGEST_MEMO_ENTRIES, LeafMemo
from initserve.api.docs_ui import install_docs
from initserve.api.fast_init import FastInitMiddleware, init_route
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.limits import BodySizeLimitMiddleware, GenerationLimiter
from initserve.api.methods import add_head_routes
from initserve.api.metrics import Metrics, RequestMetricsMiddleware
from initserve.api.openapi import install_openapi
from initserve.api.problems import install_problem_handlers
from initserve.api.query_params import SingleQueryParamsMiddleware
from initserve.api.repeats import RepeatMemo, RepeatMiddleware
from initserve.api.response_cache import ResponseCache
from initserve.api.routes import ROUTERS
from initserve.api.routes.checkpoints import STREAMED_UPLOADS
from initserve.api.settings import Settings
from initserve.api.whole_cache import WholeResultCache
from initserve.engine import Kernel, resolve_kernel
from initserve.engine.generate import default_threads
from initserve.engine.kernels import native_unavailable_reason

DESCRIPTION = "Deterministic neural-network weight initialization: a layer spec in, safetensors bytes out."
EXPOSED = [
    "ETag",
    "Repr-Digest",
    "Content-Location",
    "Content-Range",
    "Content-Length",
    "Content-Disposition",
    "X-Initserve-Algorithm",
    "X-Initserve-Fans",
    "X-Request-ID",
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    kernel: Kernel = app.state.kernel
    logger = logging.getLogger("initserve.api")
    if kernel.name != "native":
        reason = native_unavailable_reason()
        if settings.kernel == "auto" and reason is not None:
            logger.warning(
                "native kernel unavailable, generating with numpy (same bytes, slower)", extra={"reason": reason}
            )
    logger.info(
        "initserve ready",
        extra={
            "kernel": kernel.name,
            "max_bytes": settings.max_bytes,
            "max_concurrent_generations": settings.max_concurrent_generations,
            "api_keys": len(settings.api_keys),
        },
    )
    yield


def _cache_size_reporter(metrics: Metrics) -> Callable[[int, int], None]:
    def report(entries: int, stored_bytes: int) -> None:
        metrics.cache_entries.set(entries)
        metrics.cache_bytes.set(stored_bytes)

    return report


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; without ``settings`` they are read from ``INITSERVE_*`` variables."""
    settings = settings or Settings()
    app = FastAPI(
        title="initserve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from installed assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    # Resolved once per process and passed to every generation (the engine holds no global switch);
    # INITSERVE_KERNEL=native without the extension raises KernelUnavailable here, at start-up.
    app.state.kernel = kernel = resolve_kernel(settings.kernel)
    app.state.metrics = metrics = Metrics()
    metrics.kernel.labels(kernel.name).set(1)
    # Generation is CPU-bound: more worker threads than cores only thrash the GIL and the caches
    # (32 concurrent small requests on 2 cores ran 5x slower). Work queues here, on the event loop.
    app.state.cpu_limiter = anyio.CapacityLimiter(settings.generation_threads or default_threads())
    app.state.limiter = limiter = GenerationLimiter(settings.max_concurrent_generations, settings.retry_after_seconds)
    limiter.on_change = metrics.in_flight.set
    app.state.response_cache = cache = ResponseCache(settings.response_cache_bytes, settings.response_cache_entry_bytes)
    cache.on_evict = metrics.cache_evictions.inc
    cache.on_size = _cache_size_reporter(metrics)
    # Digests of generated files (api/digests.py): Repr-Digest values of small files, ?format=digest answers,
    # and the leaf digests streams hash on the way out (so the digest a client asks after its download is a lookup).
    app.state.repr_digests = LRUCache(maxsize=DIGEST_MEMO_ENTRIES)
    app.state.digest_memo = LRUCache(maxsize=DIGEST_MEMO_ENTRIES)
    app.state.leaf_memo = LeafMemo()
    app.state.whole_cache = whole = WholeResultCache(settings.whole_cache_bytes)
    whole.on_hit, whole.on_miss = metrics.whole_hits.inc, metrics.whole_misses.inc
    whole.on_evict = metrics.whole_evictions.inc
    whole.on_size = lambda entries, stored: metrics.whole_bytes.set(stored)
    # Routes declared on the app itself (docs) parse bodies like the routers' do: a repeated key is a 422.
    app.router.route_class = UniqueKeysRoute
    install_problem_handlers(app)
    install_openapi(app)
    install_docs(app)
    for router in ROUTERS:
        add_head_routes(router)  # HEAD wherever GET is answered (api/methods.py)
        app.include_router(router)
    add_head_routes(app.router)  # the routes added to the app itself (/docs, /redoc)
    # Innermost (inside CORS, which adds its headers to the answer): valid POST /v1/init requests skip
    # routing and dependency solving, with the same validation (api/fast_init.py).
    app.add_middleware(FastInitMiddleware, route=init_route(), api_keys=settings.read_key_values)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Range",
                "If-None-Match",
                "If-Range",
                "Want-Repr-Digest",
            ],
            expose_headers=EXPOSED,
        )
    app.state.repeat_memo = memo = RepeatMemo()
    app.add_middleware(RepeatMiddleware, cache=cache, metrics=metrics, api_keys=settings.read_key_values, memo=memo)
    app.add_middleware(JsonBodyMiddleware, paths=JSON_BODY_ROUTES)  # before the memo: both spellings share its key
    # Every path, before the memo and the /v1/init fast path; inside the body limit, which has read the body.
    app.add_middleware(SingleQueryParamsMiddleware)
    app.add_middleware(ContentEncodingMiddleware)  # before the memo, whose key has no Content-Encoding
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        streamed=STREAMED_UPLOADS,
        timeout=settings.body_timeout,
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLogMiddleware)  # outermost: every response carries the request id
    return app
