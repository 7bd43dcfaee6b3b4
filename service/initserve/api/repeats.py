"""Exact repeats of small-file requests, answered from the response cache before routing.

A request that produced a small file's whole body (200, from :mod:`initserve.api.serving`) is
remembered by everything that can change its response: method, path, query string,
``Content-Type``, ``Accept`` and the body bytes. When the very same request comes again and the
file is still in the :class:`ResponseCache`, the recorded status and headers are sent with the
cached bytes at once: no routing, no body validation, no spec parsing, no canonical JSON or
digest — the response is byte for byte what the full path produced (the outer middleware still
adds ``X-Request-ID``, counts the request under its route and writes the access line).

What is never answered here (it takes the full path): requests carrying ``Range``, ``If-Range``,
``If-None-Match`` or ``Origin`` (CORS), requests whose path, query and body exceed :data:`MAX_REQUEST`
bytes together (so the memo stays within a few MiB), and, when API keys are
configured, requests without a valid key (the full path answers 401). Remembered requests are
bounded (:data:`MAX_ENTRIES`, least recently used first) and an entry whose file was evicted
from the cache is forgotten on its next use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initserve.api.metrics import Metrics
from initserve.api.response_cache import CacheKey, ResponseCache
from initserve.api.security import raw_key_allowed

MAX_ENTRIES = 1024
MAX_REQUEST = 4096  # path + query + body; specs are a few hundred bytes, bigger requests are not remembered
PATHS = ("/v1/init", "/v1/bundle")
TENSORS_PREFIX = "/v1/tensors/"
STATE_CACHE_KEY = "initserve.small_file"  # set by serving when it sent a small file whole with 200
_BYPASS = frozenset({b"range", b"if-range", b"if-none-match", b"origin"})

RequestKey = tuple[str, str, bytes, bytes, bytes, bytes]  # method, path, query, content-type, accept, body


@dataclass(frozen=True)
class Answer:
    """What the full path sent for a request key, minus the file bytes (those live in the cache)."""

    cache_key: CacheKey
    headers: list[tuple[bytes, bytes]]
    route: Any  # the matched route object, so metrics label the request as the full path did
    etag: str | None


class RepeatMemo:
    """Bounded LRU from request keys to :class:`Answer` s; thread-safe (cachetools is not, hence the lock)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._answers: LRUCache[RequestKey, Answer] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: RequestKey) -> Answer | None:
        with self._lock:
            return self._answers.get(key)

    def put(self, key: RequestKey, answer: Answer) -> None:
        with self._lock:
            self._answers[key] = answer

    def forget(self, key: RequestKey) -> None:
        with self._lock:
            self._answers.pop(key, None)


def _eligible_path(method: str, path: str) -> bool:
    if method == "POST":
        return path in PATHS
    return method == "GET" and path.startswith(TENSORS_PREFIX)


class RepeatMiddleware:
    """Answers exact repeats from the cache; records the answers of the requests it lets through.

    Sits inside the body-size limit (so a POST body arrives as one buffered message) and outside
    CORS and the routers.
    """

    def __init__(
        self, app: ASGIApp, cache: ResponseCache, metrics: Metrics, api_keys: tuple[bytes, ...], memo: RepeatMemo
    ) -> None:
        self.app = app
        self.cache = cache
        self.metrics = metrics
        self.api_keys = api_keys
        self.memo = memo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.cache.enabled or not _eligible_path(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = keyed_headers(scope, self.api_keys, _BYPASS)
        if headers is None:
            await self.app(scope, receive, send)
            return
        content_type, accept = headers
        body = b""
        if scope["method"] == "POST":
            message = await receive()
            if message["type"] != "http.request" or message.get("more_body", False):
                await self.app(scope, replay(message, receive), send)
                return
            body = message.get("body", b"")
            receive = replay(message, receive)
        query: bytes = scope.get("query_string", b"")
        if len(body) + len(query) + len(scope["path"]) > MAX_REQUEST:
            await self.app(scope, receive, send)
            return
        key: RequestKey = (scope["method"], scope["path"], query, content_type, accept, body)
        answer = self.memo.get(key)
        if answer is not None:
            data = self.cache.get(answer.cache_key)
            if data is not None:
                await self._answer(scope, send, answer, data)
                return
            self.memo.forget(key)
        await self._pass_and_record(scope, receive, send, key)

    async def _answer(self, scope: Scope, send: Send, answer: Answer, data: bytes) -> None:
        scope["route"] = answer.route
        scope.setdefault("state", {})["etag"] = answer.etag
        self.metrics.cache_hits.inc()
        await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    async def _pass_and_record(self, scope: Scope, receive: Receive, send: Send, key: RequestKey) -> None:
        start: Message | None = None

        async def keep_start(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            await send(message)

        await self.app(scope, receive, keep_start)
        state = scope.get("state", {})
        cache_key = state.get(STATE_CACHE_KEY)
        if start is None or start["status"] != 200 or cache_key is None or self.cache.get(cache_key) is None:
            return
        headers = list(start.get("headers", []))
        self.memo.put(key, Answer(cache_key, headers, scope.get("route"), state.get("etag")))


def keyed_headers(
    scope: Scope, api_keys: tuple[bytes, ...], bypass: frozenset[bytes] = frozenset()
) -> tuple[bytes, bytes] | None:
    """The first ``Content-Type`` and ``Accept`` (raw, b"" when absent) of a request that carries none of
    the ``bypass`` headers and that :func:`~initserve.api.security.require_api_key` would let in; None for
    any other request (the full path answers it: 401 for a missing or unknown key)."""
    content_type = accept = authorization = api_key = b""
    for name, value in scope["headers"]:
        if name in bypass:
            return None
        if name == b"content-type" and not content_type:
            content_type = value
        elif name == b"accept" and not accept:
            accept = value
        elif name == b"authorization" and not authorization:
            authorization = value
        elif name == b"x-api-key" and not api_key:
            api_key = value
    return (content_type, accept) if raw_key_allowed(authorization, api_key, api_keys) else None


def replay(message: Message, receive: Receive) -> Receive:
    """A ``receive`` that yields ``message`` (already read by a middleware) once, then defers to the server."""
    pending: list[Message] = [message]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
