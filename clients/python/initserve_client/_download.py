"""Download bookkeeping without I/O: byte-range plans, response checks, and the buffer writer.

The clients feed raw body chunks into a :class:`BodyWriter`, which puts each one straight at its
offset in a preallocated sink — a ``bytearray`` (no cache) or the cache's temp file, written with
``pwrite`` (measured 2-4× faster than faulting in a fresh shared mapping) and memory-mapped once
complete: no list of chunks, no ``b"".join``. A broken stream resumes at ``writer.offset`` with a
``Range`` request when the body comes from a tensor URL.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from ._errors import IntegrityError, MissingDependencyError

__all__ = [
    "BackgroundHasher",
    "BodyWriter",
    "MemorySink",
    "Progress",
    "Sink",
    "make_progress",
    "parse_content_range",
    "plan_ranges",
]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
MIN_RANGE_PART = 8 << 20


class Progress(Protocol):
    def update(self, n: int) -> Any: ...
    def close(self) -> None: ...


def plan_ranges(total: int, parts: int, *, min_part: int = MIN_RANGE_PART) -> list[tuple[int, int]]:
    """Split ``[0, total)`` into at most ``parts`` contiguous ``[start, stop)`` ranges of ≥ ``min_part`` bytes."""
    if total <= 0:
        return [(0, 0)]
    count = max(1, min(parts, total // max(1, min_part)))
    step, extra = divmod(total, count)
    ranges, start = [], 0
    for i in range(count):
        stop = start + step + (1 if i < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes 0-99/1000`` → ``(0, 100, 1000)`` as a half-open range; ``None`` if absent or malformed."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        return None
    first, last, total = match.groups()
    return int(first), int(last) + 1, None if total == "*" else int(total)


def make_progress(total: int, setting: bool | None, threshold: int, desc: str) -> Progress | None:
    """A tqdm bar when ``setting`` is True, or when it is None (auto), stderr is a terminal and the body is large."""
    if setting is False:
        return None
    if setting is None and (total < threshold or not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if setting:
            raise MissingDependencyError("progress=True needs tqdm: pip install 'initserve[progress]'") from None
        return None
    bar: Progress = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)
    return bar


HASH_BATCH = 8 << 20


class Sink(Protocol):
    """Where a download's bytes go: a preallocated memory buffer or a preallocated temp file."""

    @property
    def size(self) -> int: ...
    def write_at(self, offset: int, data: bytes) -> None: ...


class MemorySink:
    """A preallocated buffer; chunks are copied straight into their slice."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    @property
    def size(self) -> int:
        return self.view.nbytes

    def write_at(self, offset: int, data: bytes) -> None:
        self.view[offset : offset + len(data)] = data


class BackgroundHasher:
    """sha256 of a byte stream, computed in one worker thread while the download goes on.

    Chunks are batched (``HASH_BATCH`` bytes) and handed to a single worker, so batches are hashed in
    order; hashlib releases the GIL on large updates, so hashing overlaps with receiving instead of
    stalling the socket. The chunks are the immutable ``bytes`` the transport produced: no copy.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def _update(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._sha.update(chunk)

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="initserve-sha256")
        self._pending.append(self._pool.submit(self._update, self._batch))
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._batch, self._batched = [], 0

    def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= HASH_BATCH:
            self._flush()

    def hexdigest(self) -> str:
        self._flush()
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class BodyWriter:
    """Writes the body of responses for bytes ``[start, stop)`` of a file into its :class:`Sink`.

    ``sink`` may be ``None`` with ``allocate`` given: the first response's ``Content-Length`` sizes a
    memory buffer (the no-cache path learns the size only from the response).
    """

    def __init__(
        self,
        sink: Sink | None,
        start: int = 0,
        stop: int | None = None,
        *,
        allocate: Callable[[int], Sink] | None = None,
        hash_body: bool = False,
        progress: Progress | None = None,
        expected_etag: str | None = None,
    ) -> None:
        if sink is None and allocate is None:
            raise ValueError("BodyWriter needs a sink or an allocate callback")
        self.sink = sink
        self.start = start
        self.stop = stop if stop is not None or sink is None else sink.size
        self.offset = start
        self._allocate = allocate
        self._hash_body = hash_body
        self.hasher = BackgroundHasher() if hash_body else None
        self.progress = progress
        self.expected_etag = expected_etag

    @property
    def whole_file(self) -> bool:
        return self.start == 0 and (self.sink is None or self.stop == self.sink.size)

    def range_header(self) -> str | None:
        """The ``Range`` to ask for the bytes still missing; ``None`` when the whole file is wanted."""
        if self.offset == 0 and self.whole_file:
            return None
        assert self.stop is not None
        return f"bytes={self.offset}-{self.stop - 1}"

    def restart(self) -> None:
        """Forget what was written (a non-resumable source is read again from the start)."""
        if self.progress is not None and self.offset > self.start:
            self.progress.update(self.start - self.offset)
        self.offset = self.start
        if self.hasher is not None:
            self.hasher.close()
            self.hasher = BackgroundHasher()

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """Check a 200/206 response against what we asked for; size the buffer if needed."""
        etag = headers.get("etag")
        if self.expected_etag is not None and etag is not None and etag.strip() != self.expected_etag:
            raise IntegrityError(f"the server's ETag changed from {self.expected_etag} to {etag} during the download")
        length_header = headers.get("content-length")
        length = int(length_header) if length_header is not None and length_header.isdigit() else None
        if status == 206:
            parsed = parse_content_range(headers.get("content-range"))
            if parsed is None or parsed[0] != self.offset or parsed[1] != self.stop:
                raise IntegrityError(
                    f"asked for {self.range_header()}, got Content-Range {headers.get('content-range')!r}"
                )
            return
        if status != 200:
            raise IntegrityError(f"unexpected HTTP {status} for a download")
        if not self.whole_file:
            raise IntegrityError("the server ignored the Range header of a partial download")
        if self.offset != self.start:
            self.restart()  # a 200 always carries the whole file from byte 0
        if self.sink is None:
            if length is None:
                raise IntegrityError("the response has no Content-Length; cannot preallocate its buffer")
            assert self._allocate is not None
            self.sink = self._allocate(length)
            self.stop = length
        elif length is not None and length != self.sink.size:
            raise IntegrityError(f"Content-Length {length} differs from the expected size {self.sink.size}")

    def write(self, chunk: bytes) -> None:
        n = len(chunk)
        end = self.offset + n
        assert self.sink is not None and self.stop is not None
        if end > self.stop:
            raise IntegrityError(f"the server sent more than the {self.stop - self.start} bytes expected")
        self.sink.write_at(self.offset, chunk)
        self.offset = end
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.progress is not None:
            self.progress.update(n)

    def finish(self) -> None:
        if self.stop is None or self.offset != self.stop:
            raise IntegrityError(f"the body ended at byte {self.offset}, expected {self.stop}")

    def sha256(self) -> str | None:
        """sha256 of the bytes written (``hash_body`` writers), once the body is complete."""
        if self.hasher is None:
            return None
        digest = self.hasher.hexdigest()
        self.hasher = None
        return digest

    def close(self) -> None:
        """Stop background hashing (on failure paths)."""
        if self.hasher is not None:
            self.hasher.close()
            self.hasher = None
