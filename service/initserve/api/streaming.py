"""The streamed response: a generated safetensors file, whole or in byte ranges.

Bytes come from the engine's ``SafetensorsFile.iter_bytes(start, stop)``, which generates only
the elements a range covers. Each ``next()`` runs in a worker thread so the event loop keeps
serving (``/healthz`` stays fast during a multi-GiB stream). The server's transport may keep a
reference to what it was given after ``send`` returns (uvloop queues the object itself), so a
*reused* engine buffer is copied to ``bytes`` in that worker thread before the next ``next()``;
a source that yields buffers nobody reuses (``copy_chunks=False``: the generated files, read with
``reuse=False``) is sent as it is, which saves a copy of every byte. The next chunk is fetched
while the current one is being sent, so the socket does not wait for the thread hop. Server
memory stays a few chunks plus the transport's high-water mark, whatever the tensor size. A client
disconnect stops generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from initserve.api.http_cache import ByteRange
from initserve.api.limits import GenerationSlot
from initserve.engine import Kernel


class ByteSource(Protocol):
    """What the response needs from the engine's ``SafetensorsFile``."""

    @property
    def total_length(self) -> int: ...

    def iter_bytes(
        self, start: int = 0, stop: int | None = None, *, kernel: Kernel | None = None, threads: int | None = None
    ) -> Iterator[memoryview]: ...


class StreamObserver(Protocol):
    """Sees every chunk of one streamed range, in order (the server hashes leaves this way)."""

    def update(self, data: memoryview) -> None:
        """Called in the worker thread that produced the chunk, before it is copied for sending."""

    def flush(self) -> None:
        """Called on the event loop before the chunk just seen is sent."""


Segment = bytes | ByteRange
DataCallback = Callable[[int, int], None]
ObserverFactory = Callable[[int, int], StreamObserver]


def _next_owned(iterator: Iterator[memoryview], observer: StreamObserver | None = None) -> memoryview | None:
    """The next chunk of a source whose buffers are never written again: sent as it is."""
    view = next(iterator, None)
    if view is not None and observer is not None:
        observer.update(view)  # from the engine's buffer, while it is still in the CPU cache
    return view


def _next_copy(iterator: Iterator[memoryview], observer: StreamObserver | None = None) -> bytes | None:
    """The next chunk of a source that reuses its buffers: copied before the source writes it again."""
    view = _next_owned(iterator, observer)
    return None if view is None else bytes(view)


async def until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class GeneratedFileResponse(Response):
    """Sends ``segments`` in order: literal bytes as they are, :class:`ByteRange` s generated.

    ``send_body=False`` (HEAD) sends the headers only and generates nothing. ``cheap_gap(a, b)`` says
    whether bytes [a, b) cost nothing extra to generate (header, or a whole-tensor scheme's data):
    ranges separated only by such gaps are read in one pass. ``slot`` is
    released when the response ends, however it ends. ``on_data(start, stop)`` is told each
    file range that was sent, for metrics. ``observe(start, stop)`` makes a :class:`StreamObserver`
    for each single range streamed (the leaf digests of ``?format=digest``).
    ``copy_chunks=False`` when ``source`` yields buffers that it never writes again: they are sent
    without a copy.
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        status_code: int,
        headers: Mapping[str, str],
        segments: Sequence[Segment],
        send_body: bool = True,
        slot: GenerationSlot | None = None,
        on_data: DataCallback | None = None,
        threads: int | None = None,
        kernel: Kernel | None = None,
        cpu_limiter: anyio.CapacityLimiter | None = None,
        cheap_gap: Callable[[int, int], bool] | None = None,
        observe: ObserverFactory | None = None,
        copy_chunks: bool = True,
    ) -> None:
        self.source = source
        self.observe = observe
        self.copy_chunks = copy_chunks
        self.status_code = status_code
        self.segments = list(segments)
        self.send_body = send_body
        self.slot = slot
        self.on_data = on_data or (lambda _start, _stop: None)
        self.threads = threads
        self.kernel = kernel
        self.cpu_limiter = cpu_limiter
        self.cheap_gap = cheap_gap
        self.background = None
        self.body = b""
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if not self.send_body or scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with anyio.create_task_group() as group:

                async def stream_then_stop() -> None:
                    await self._stream(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream_then_stop)
                await until_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            if self.slot is not None:
                self.slot.release()

    async def _stream(self, send: Send) -> None:
        segments, index = self.segments, 0
        while index < len(segments):
            segment = segments[index]
            if isinstance(segment, bytes):
                await send({"type": "http.response.body", "body": segment, "more_body": True})
                index += 1
                continue
            # Ranges separated only by bytes a whole-tensor scheme computes anyway are read in one pass:
            # one QR per request, not one per range (64 ranges of an orthogonal tensor were 64 QRs).
            end = index
            while (
                self.cheap_gap is not None
                and end + 2 < len(segments)
                and isinstance(segments[end + 1], bytes)
                and isinstance(segments[end + 2], ByteRange)
                and self.cheap_gap(segments[end].stop, segments[end + 2].start)  # type: ignore[union-attr]
            ):
                end += 2
            if end == index:
                await self._stream_range(send, segment)
            else:
                await self._stream_joined(send, segments[index : end + 1])
            index = end + 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream_joined(self, send: Send, group: Sequence[Segment]) -> None:
        """Ranges and the literal parts between them, from one pass over [first.start, last.stop)."""
        spans = [part for part in group if isinstance(part, ByteRange)]
        literals = [part for part in group if isinstance(part, bytes)]
        iterator = self.source.iter_bytes(spans[0].start, spans[-1].stop, kernel=self.kernel, threads=self.threads)
        position, current = spans[0].start, 0
        try:
            while current < len(spans):
                chunk = await anyio.to_thread.run_sync(_next_copy, iterator, limiter=self.cpu_limiter)
                if chunk is None:
                    break
                begin, finish = position, position + len(chunk)
                position = finish
                view = memoryview(chunk)
                while current < len(spans):
                    span = spans[current]
                    low, high = max(begin, span.start), min(finish, span.stop)
                    if low < high:
                        await send(
                            {"type": "http.response.body", "body": view[low - begin : high - begin], "more_body": True}
                        )
                        self.on_data(low, high)
                    if span.stop > finish:
                        break
                    current += 1
                    if current < len(spans):
                        await send({"type": "http.response.body", "body": literals[current - 1], "more_body": True})
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if current != len(spans):
            raise RuntimeError(f"engine stopped at byte {position} of ranges ending at {spans[-1].stop}")

    async def _stream_range(self, send: Send, span: ByteRange) -> None:
        iterator = self.source.iter_bytes(span.start, span.stop, kernel=self.kernel, threads=self.threads)
        observer = self.observe(span.start, span.stop) if self.observe is not None else None
        position = span.start
        try:
            # A producer task fetches chunk k+1 in a worker thread while chunk k is being sent: without it
            # the socket sat idle for a thread hop (and a copy) per chunk. The channel holds no chunk, so
            # at most one waits beside the one being sent.
            outbox, inbox = anyio.create_memory_object_stream[bytes | memoryview](0)
            async with anyio.create_task_group() as group:
                group.start_soon(self._produce, iterator, observer, outbox)
                async with inbox:
                    async for chunk in inbox:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        self.on_data(position, position + len(chunk))
                        position += len(chunk)
        finally:
            # After the task group: the producer's thread has finished its next() (run_sync is not
            # abandoned on cancel), so the iterator is never closed while it runs.
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if position != span.stop:
            raise RuntimeError(f"engine yielded bytes [{span.start}, {position}) for range [{span.start}, {span.stop})")

    async def _produce(
        self,
        iterator: Iterator[memoryview],
        observer: StreamObserver | None,
        outbox: anyio.abc.ObjectSendStream[bytes | memoryview],
    ) -> None:
        step = _next_copy if self.copy_chunks else _next_owned
        async with outbox:
            while True:
                chunk = await anyio.to_thread.run_sync(step, iterator, observer, limiter=self.cpu_limiter)
                if chunk is None:
                    return
                if observer is not None:
                    # On the event loop, before the chunk is sent; the next update() starts only after the
                    # consumer took this chunk, so update() and flush() never overlap.
                    observer.flush()
                await outbox.send(chunk)
