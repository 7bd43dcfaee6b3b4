"""uvicorn's httptools protocol with request-head limits, a head timeout and problem+json parse errors.

uvicorn bounds neither the number nor the size of request headers, and never times out a request head
that is sent slowly or not at all: 1,024 headers of 1 MiB cost a gigabyte of RSS, and a thousand sockets
that each trickle a partial head hold every file descriptor (slowloris). This subclass of its
``HttpToolsProtocol`` adds, per connection:

- at most ``max_headers`` header fields and ``max_header_bytes`` of request head (request line and
  header fields, as received) → ``431 Request Header Fields Too Large``;
- a request target of at most ``max_url_bytes`` → ``414 URI Too Long`` (httptools itself fails past
  64 KiB with a bare 400);
- the whole head within ``header_timeout`` seconds of its first byte (or of the connection's opening)
  → ``408 Request Timeout``;
- a head the parser rejects → ``400 bad-request`` as problem+json instead of uvicorn's plain text.

Each answer is a problem+json body followed by closing the connection; nothing reaches the app.
Bytes are counted as they arrive, so the memory a head can take is bounded before httptools buffers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import lru_cache
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from initserve.api.problems import PROBLEM_MEDIA_TYPE, TITLES, TYPE_PREFIX
from initserve.api.settings import Settings

logger = logging.getLogger("initserve.api")
LINGER_SECONDS = 2.0


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def problem_bytes(status: int, slug: str, detail: str, loc: list[str]) -> bytes:
    """A complete HTTP/1.1 response: the problem as JSON, then ``Connection: close``."""
    body = json.dumps(
        {
            "type": TYPE_PREFIX + slug,
            "title": TITLES.get(slug, slug),
            "status": status,
            "detail": detail,
            "instance": None,
            "errors": [{"loc": loc, "msg": detail}],
        },
        ensure_ascii=False,
    ).encode()
    head = f"content-type: {PROBLEM_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
    return STATUS_LINE[status] + head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus the head limits and head timeout above (settings from ``INITSERVE_*``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.max_headers = settings.max_headers
        self.max_header_bytes = settings.max_header_bytes
        self.max_url_bytes = settings.max_url_bytes
        self.header_timeout = settings.header_timeout
        self._head_pending = True  # between the end of one head (or the connection's start) and the next
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- head timer --------------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_pending and not self.transport.is_closing():
            detail = f"the request head was not received within {self.header_timeout:g} s"
            self._refuse(408, "request-timeout", detail, ["header"])

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    # --- limits ------------------------------------------------------------------------------------
    def _refuse(self, status: int, slug: str, detail: str, loc: list[str]) -> None:
        if self._refused:
            return
        self._refused = True
        self._disarm_head_timer()
        logger.warning("request head refused", extra={"status": status, "detail": detail, "client": self.client})
        self.transport.write(problem_bytes(status, slug, detail, loc))
        # Lingering close: closing with unread input makes the kernel send RST, and the client may lose the
        # answer before reading it. Half-close, discard what still arrives, and close after LINGER_SECONDS.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_pending:
            self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_pending and not self._refused and self._head_bytes > self.max_header_bytes + self.max_url_bytes:
            detail = f"the request head exceeds {self.max_header_bytes + self.max_url_bytes} bytes"
            self._refuse(431, "headers-too-large", detail, ["header"])

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a callback below already refused the head and closed
            self._refuse(400, "bad-request", "the request is not valid HTTP/1.1", ["header"])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._header_count = 0
        self._url_bytes = 0
        self._field_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_url_bytes:
            self._refuse(414, "uri-too-long", f"the request target exceeds {self.max_url_bytes} bytes", ["url"])
            raise httptools.HttpParserError("request target too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._field_bytes += len(name) + len(value) + 4
        if self._header_count > self.max_headers:
            self._refuse(431, "headers-too-large", f"more than {self.max_headers} header fields", ["header"])
            raise httptools.HttpParserError("too many header fields")
        if self._field_bytes > self.max_header_bytes:
            detail = f"the header fields exceed {self.max_header_bytes} bytes"
            self._refuse(431, "headers-too-large", detail, ["header"])
            raise httptools.HttpParserError("header fields too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True  # the next head's timer starts with its first byte
