"""The download transport: HTTP/1.1 bodies read with ``readinto`` straight into their destination.

httpx hands a body out as freshly allocated ``bytes`` chunks of at most 64 KiB, each copied a few
times on the way (h11's buffer, the chunk, the caller's buffer); for a 1 GiB tensor that is the
client's main CPU cost, taken from the cores the server generates on. The standard library's
``http.client`` reads a body with ``HTTPResponse.readinto``, which lets the socket write into a
caller-supplied buffer: here a slice of the preallocated result, or a small recycled buffer that is
hashed and written to the cache file while it is still in the CPU cache.

Only the download bodies (:class:`~._flow.Download`) use this transport; every other request goes
through httpx. It keeps the client's contracts: the request is the httpx request the flow built
(URL, ``Authorization``, ``User-Agent``, ``Range``, JSON body), timeouts are httpx's (connect, then
read), failures raise the same httpx exception classes, so :class:`~._retry.RetryPolicy` decides
retries and resumption exactly as for httpx, and error responses are turned into httpx responses for
the typed errors. It is blocking: the async client runs it in a worker thread.

When an HTTP proxy applies to the URL (``HTTP_PROXY`` & co., honoured by httpx), downloads stay on
httpx: this transport speaks only directly to the origin.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import httpx

from ._download import BodyWriter
from ._flow import DownloadPart
from ._retry import RetryPolicy

__all__ = [
    "CancelledDownload",
    "DownloadCancel",
    "RawResponse",
    "RawTransport",
    "download_part",
    "download_parts",
]

# One idle connection per origin and thread of a parallel download is plenty.
_MAX_IDLE_PER_ORIGIN = 8


class CancelledDownload(Exception):
    """The async caller was cancelled; the worker thread stops at its next step."""


class DownloadCancel:
    """A cancel flag for a download running in worker threads; :meth:`set` also unblocks their sockets."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledDownload("download cancelled")

    def sleep(self, seconds: float) -> None:
        if self._event.wait(seconds):
            raise CancelledDownload("download cancelled")

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.add(sock)
        if self._event.is_set():
            self._shutdown(sock)

    def unwatch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def set(self) -> None:
        self._event.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None]:
    """(connect, read) seconds from the request's httpx timeout extension."""
    timeout: dict[str, Any] = request.extensions.get("timeout", {})
    return timeout.get("connect"), timeout.get("read")


def _translate(exc: BaseException, request: httpx.Request, *, connecting: bool) -> httpx.TransportError:
    """The httpx exception class for a socket/http.client failure (so retry decisions stay the same)."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return (httpx.ConnectTimeout if connecting else httpx.ReadTimeout)(message, request=request)
    if isinstance(exc, http.client.IncompleteRead | http.client.RemoteDisconnected | http.client.BadStatusLine):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(message, request=request)
    if connecting:
        return httpx.ConnectError(message, request=request)
    return httpx.ReadError(message, request=request)


class RawResponse:
    """A response whose body is read with :meth:`readinto`; :meth:`close` returns the connection to the pool."""

    def __init__(
        self,
        transport: RawTransport,
        origin: tuple[str, str, int],
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection = connection
        self._response = response
        self.request = request
        self.status_code = response.status
        # http.client decodes header bytes as latin-1; hand httpx the bytes back, or a non-ASCII value
        # (a proxy's "Retry-After: ²") fails to re-encode.
        self.headers = httpx.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()])
        self._reusable = False

    @property
    def is_encoded(self) -> bool:
        return self.headers.get("content-encoding", "identity").lower() not in ("identity", "")

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the body (fewer bytes only at its end); a body cut short raises httpx's error."""
        try:
            n = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise _translate(exc, self.request, connecting=False) from exc
        if n == 0 and buffer.nbytes and self._response.length:
            raise httpx.RemoteProtocolError(
                f"peer closed the connection {self._response.length} bytes before the end of the body",
                request=self.request,
            )
        if self._response.isclosed():
            self._reusable = not self._response.will_close
        return n

    def read_all(self) -> httpx.Response:
        """The whole (small) body as an httpx response: error bodies, and bodies a proxy compressed."""
        try:
            content = self._response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _translate(exc, self.request, connecting=False) from exc
        self._reusable = not self._response.will_close
        return httpx.Response(
            self.status_code, headers=self.headers.multi_items(), content=content, request=self.request
        )

    def close(self) -> None:
        self._response.close()
        if self._reusable:
            self._transport._release(self._origin, self._connection)
        else:
            self._connection.close()


class RawTransport:
    """Blocking HTTP/1.1 for download bodies, with a small keep-alive pool (thread-safe)."""

    def __init__(self, *, trust_env: bool = True) -> None:
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._trust_env = trust_env
        self._ssl: ssl.SSLContext | None = None

    def usable_for(self, url: httpx.URL) -> bool:
        """False when a proxy from the environment applies (httpx would use it; this transport cannot)."""
        if url.scheme not in ("http", "https"):
            return False
        if not self._trust_env:
            return True
        proxies = urllib.request.getproxies()
        if not (proxies.get(url.scheme) or proxies.get("all")):
            return True
        return bool(urllib.request.proxy_bypass(url.host))

    def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # httpx's defaults: its CA bundle, TLS ≥ 1.2
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _take(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(origin)
            return idle.pop() if idle else None

    def _release(self, origin: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
                return
        connection.close()

    def open(self, request: httpx.Request, cancel: DownloadCancel | None = None) -> RawResponse:
        """Send ``request`` and read the status line and headers."""
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connect_timeout, read_timeout = _timeouts(request)
        target = url.raw_path.decode("ascii")
        body = request.read() or None
        headers = dict(request.headers.multi_items())
        headers.setdefault("accept-encoding", "identity")
        while True:
            reused = self._take(origin)
            connection = reused if reused is not None else self._connect(origin, connect_timeout)
            connecting = reused is None
            try:
                if connection.sock is None:
                    connection.connect()
                connecting = False
                assert connection.sock is not None
                connection.sock.settimeout(read_timeout)
                if cancel is not None:
                    cancel.watch(connection.sock)
                connection.request(request.method, target, body=body, headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if cancel is not None:
                    cancel.unwatch(connection.sock)
                connection.close()
                if reused is not None and not isinstance(exc, TimeoutError | socket.timeout):
                    continue  # the server closed an idle keep-alive connection: try a fresh one
                raise _translate(exc, request, connecting=connecting) from exc
            return RawResponse(self, origin, connection, response, request)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def download_part(
    transport: RawTransport,
    build: Callable[[BodyWriter], httpx.Request],
    writer: BodyWriter,
    *,
    resumable: bool,
    retry: RetryPolicy,
    error_for: Callable[[httpx.Request, httpx.Response, int], BaseException],
    give_up: Callable[[httpx.Request, int, BaseException], BaseException],
    cancel: DownloadCancel | None = None,
) -> None:
    """Stream one part into its writer with retries: the same loop as the httpx path, for this transport.

    Transport errors and 429/502/503/504 are retried as :class:`RetryPolicy` says; a stream that broke
    after making progress resumes at ``writer.offset`` (``Range``) with a fresh attempt budget when
    ``resumable``, or starts over otherwise.
    """
    attempt = 0
    while True:
        attempt += 1
        if cancel is not None:
            cancel.check()
        request = build(writer)
        before = writer.offset
        delay: float | None
        try:
            response = transport.open(request, cancel)
            try:
                if response.status_code in (200, 206):
                    writer.begin(response.status_code, response.headers)
                    if response.is_encoded:  # a proxy compressed it despite Accept-Encoding: identity
                        writer.write(response.read_all().content)
                    else:
                        writer.receive(response.readinto, cancel.check if cancel is not None else None)
                    writer.finish()
                    return
                delay = retry.delay_after_status(attempt, response.status_code, response.headers.get("retry-after"))
                if delay is None:
                    raise error_for(request, response.read_all(), attempt)
            finally:
                if cancel is not None:
                    cancel.unwatch(response._connection.sock)
                response.close()
        except httpx.TransportError as exc:
            if cancel is not None:
                cancel.check()  # a socket shut down by the cancel is no network failure
            if writer.offset > before and resumable:
                attempt = 0  # progress was made: a flaky link gets a fresh budget, resumed where it broke
            retry_delay = retry.delay_after_exception(max(attempt, 1), exc)
            if retry_delay is None:
                raise give_up(request, attempt, exc) from exc
            if not resumable:
                writer.restart()
            delay = retry_delay
        if cancel is not None:
            cancel.sleep(delay)
        else:
            time.sleep(delay)


def download_parts(
    transport: RawTransport,
    parts: Sequence[DownloadPart],
    *,
    retry: RetryPolicy,
    error_for: Callable[[httpx.Request, httpx.Response, int], BaseException],
    give_up: Callable[[httpx.Request, int, BaseException], BaseException],
    cancel: DownloadCancel | None = None,
) -> None:
    """Every part of a :class:`~._flow.Download`: one in the calling thread, several in parallel threads.

    The first failing part cancels the others (their sockets are shut down), so a failed parallel
    download returns promptly with that first error.
    """
    cancel = cancel if cancel is not None else DownloadCancel()

    def run(part: DownloadPart) -> None:
        download_part(
            transport,
            part.build,
            part.writer,
            resumable=part.resumable,
            retry=retry,
            error_for=error_for,
            give_up=give_up,
            cancel=cancel,
        )

    if len(parts) == 1:
        run(parts[0])
        return
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="initserve-range") as pool:
        futures = [pool.submit(run, part) for part in parts]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C in the waiting thread: stop the workers instead of waiting for them
            cancel.set()
            raise
        if any(future.done() and future.exception() is not None for future in futures):
            cancel.set()
        errors = [future.exception() for future in futures]
    first = next((error for error in errors if error is not None and not isinstance(error, CancelledDownload)), None)
    if first is None:
        first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
