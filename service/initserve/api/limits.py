"""Back-pressure: a bounded number of concurrent generations, and a request body size limit.

Both answer *immediately* when a limit is hit (503 + ``Retry-After``, or 413) instead of
queueing, so memory stays bounded and clients or load balancers can go elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initserve.api.problems import PROBLEM_MEDIA_TYPE, TITLES, TYPE_PREFIX, ProblemError
from initserve.engine.errors import human_bytes


class GenerationSlot:
    """One held unit of generation capacity; :meth:`release` is idempotent."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release: Callable[[], None] | None = on_release

    def release(self) -> None:
        if self._on_release is not None:
            callback, self._on_release = self._on_release, None
            callback()


class GenerationLimiter:
    """At most ``capacity`` generations (streams and stats) at once in this process.

    All calls happen on the event loop thread, so a plain counter is race-free.
    """

    def __init__(self, capacity: int, retry_after_seconds: int) -> None:
        self.capacity = capacity
        self.retry_after_seconds = retry_after_seconds
        self.in_flight = 0
        self.on_change: Callable[[int], None] = lambda _: None

    def try_acquire(self) -> GenerationSlot:
        """Take a slot or raise the 503 ``saturated`` problem."""
        if self.in_flight >= self.capacity:
            raise ProblemError(
                503,
                "saturated",
                f"all {self.capacity} generation slots are busy; retry in {self.retry_after_seconds} s",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        self.in_flight += 1
        self.on_change(self.in_flight)
        return GenerationSlot(self._release)

    def _release(self) -> None:
        self.in_flight -= 1
        self.on_change(self.in_flight)


class BodySizeLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413, whether announced or streamed.

    A ``Content-Length`` above the limit is refused before reading anything. Otherwise the
    body is read here (specs are small JSON, so buffering up to the limit is cheap) and
    replayed to the app; a chunked body that grows past the limit is refused as soon as it does,
    and one that has not fully arrived ``timeout`` seconds after the head is refused with 408.
    Paths in ``streamed`` (checkpoint uploads) pass untouched: their route streams the body to
    storage under its own limit.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: tuple[str, ...] = (), timeout: float | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed
        self.timeout = timeout  # seconds for the whole buffered body (a body trickled byte by byte: 408)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE")
            or scope["path"] in self.streamed
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed Content-Length itself
            if too_big:
                await self._refuse(scope, send, human_bytes(int(declared)))
                return
        chunks: list[bytes] = []
        size = 0
        other: Message | None = None  # a disconnect instead of the body
        with anyio.move_on_after(self.timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    other = message
                    break
                body = message.get("body", b"")
                size += len(body)
                if size > self.max_bytes:
                    break
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        if other is not None:
            await self.app(scope, _replay([], other, receive), send)
            return
        if size > self.max_bytes:
            await self._refuse(scope, send, f"more than {human_bytes(self.max_bytes)}")
            return
        if deadline.cancelled_caught:
            detail = f"the request body did not arrive within {self.timeout:g} s ({size} bytes received)"
            await self._refuse(scope, send, "", status=408, slug="request-timeout", detail=detail)
            return
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _refuse(
        self, scope: Scope, send: Send, seen: str, *, status: int = 413, slug: str = "too-large", detail: str = ""
    ) -> None:
        detail = detail or f"request body of {seen} exceeds the limit of {human_bytes(self.max_bytes)}"
        body = json.dumps(
            {
                "type": TYPE_PREFIX + slug,
                "title": TITLES[slug],
                "status": status,
                "detail": detail,
                "instance": scope.get("path", ""),
                "errors": [{"loc": ["body"], "msg": detail}],
            }
        ).encode()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body makes the connection unusable
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that first yields the buffered body in one message, then defers to the server."""
    state = {"sent": False}

    async def replay() -> Message:
        if not state["sent"]:
            state["sent"] = True
            if pending is not None:
                return pending
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await receive()

    return replay
