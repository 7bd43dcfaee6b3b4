"""Download bookkeeping without I/O: byte-range plans, response checks, and the buffer writer.

The clients feed raw body chunks into a :class:`BodyWriter`, which puts each one straight at its
offset in a preallocated sink — a numpy buffer (no cache) or the cache's temp file, written with
``pwrite`` (measured 2-4× faster than faulting in a fresh shared mapping) and memory-mapped once
complete: no list of chunks, no ``b"".join``. A broken stream resumes at ``writer.offset`` with a
``Range`` request when the body comes from a tensor URL.
"""

from __future__ import annotations

import itertools
import queue
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ._errors import IntegrityError, MissingDependencyError
from ._memory import allocate_buffer
from ._treehash import HashPipeline, LeafHasher

__all__ = [
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


def plan_ranges(total: int, parts: int, *, min_part: int = MIN_RANGE_PART, align: int = 1) -> list[tuple[int, int]]:
    """Split ``[0, total)`` into at most ``parts`` contiguous ``[start, stop)`` ranges of ≥ ``min_part`` bytes.

    With ``align`` (the tree hash's leaf size, ≥ ``min_part``) a file of at least two whole leaves is cut
    only at multiples of it — into fewer parts if it has fewer whole leaves than ``parts``; the last part
    takes the short tail. Then no leaf is cut: each range's writer hashes whole leaves while receiving
    and the server files whole leaves while streaming, so neither hashes a leaf a second time.
    """
    if total <= 0:
        return [(0, 0)]
    count = max(1, min(parts, total // max(1, min_part)))
    whole = total // align if align >= min_part else 0
    if align > 1 and count > 1 and whole >= 2:
        count = min(count, whole)
        bounds = [(i * whole // count) * align for i in range(count)] + [total]
        return list(itertools.pairwise(bounds))
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


# Bytes asked of the socket per read: large enough that Python's per-call overhead vanishes, small
# enough that a piece is still in the CPU cache when it is hashed and written to the cache file.
RECEIVE_STEP = 1 << 20
# Pieces in flight between the receiving thread and the hashing thread (per writer). With 4 the two
# threads kept waiting for each other (py-spy: 15 % of the receiver's samples in take(), 30 % of the
# hasher's idle); 16 (16 MiB, about the L3 cache) cut a 1 GiB cold-cache fetch from ≈1.28 to ≈1.13 s.
RING_BUFFERS = 16


class Sink(Protocol):
    """Where a download's bytes go: a preallocated memory buffer or a preallocated temp file."""

    @property
    def size(self) -> int: ...
    def write_at(self, offset: int, data: bytes | memoryview) -> None: ...
    def direct(self) -> memoryview | None:
        """The destination memory itself, when the socket may read straight into it (else ``None``)."""
        ...


class MemorySink:
    """A preallocated buffer: the socket reads straight into its slices."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    @classmethod
    def allocate(cls, size: int) -> MemorySink:
        return cls(allocate_buffer(size))

    @property
    def size(self) -> int:
        return self.view.nbytes

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self.view[offset : offset + len(data)] = data

    def direct(self) -> memoryview:
        return self.view


class _BufferRing:
    """A few recycled receive buffers: a piece goes back once it is written and hashed."""

    def __init__(self, count: int, size: int) -> None:
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(memoryview(bytearray(size)))

    def take(self) -> memoryview:
        return self._free.get()

    def give_back(self, buffer: memoryview) -> Callable[[], None]:
        return lambda: self._free.put(buffer)


class BodyWriter:
    """Writes the body of responses for bytes ``[start, stop)`` of a file into its :class:`Sink`.

    ``sink`` may be ``None`` with ``allocate`` given: the first response's ``Content-Length`` sizes a
    memory buffer (the no-cache path learns the size only from the response). With ``hash_body`` the
    bytes are fed, in order, to a :class:`~._treehash.LeafHasher` in a background thread;
    :meth:`leaf_digests` gives the SHA-256 of the tree-hash leaves inside the range once it is complete.
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
        self.pipeline: HashPipeline | None = None
        if hash_body and sink is not None:
            self.pipeline = HashPipeline(
                LeafHasher(start, self.stop if self.stop is not None else sink.size, sink.size)
            )
        self.progress = progress
        self.expected_etag = expected_etag
        self.repr_digest: str | None = None  # the server's RFC 9530 Repr-Digest of the whole file, if it sent one
        self._ring: _BufferRing | None = None

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
        if self.pipeline is not None:
            self.pipeline.drain()
            self.pipeline.hasher.reset()

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """Check a 200/206 response against what we asked for; size the buffer if needed."""
        etag = headers.get("etag")
        if self.expected_etag is not None and etag is not None and etag.strip() != self.expected_etag:
            raise IntegrityError(f"the server's ETag changed from {self.expected_etag} to {etag} during the download")
        self.repr_digest = headers.get("repr-digest") or self.repr_digest
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
            if self._hash_body:
                self.pipeline = HashPipeline(LeafHasher(0, length, length))
        elif length is not None and length != self.sink.size:
            raise IntegrityError(f"Content-Length {length} differs from the expected size {self.sink.size}")

    def _advance(self, n: int) -> None:
        self.offset += n
        if self.progress is not None:
            self.progress.update(n)

    def write(self, chunk: bytes) -> None:
        """Take a chunk the caller received (the httpx path): written at its offset, hashed in order."""
        n = len(chunk)
        assert self.sink is not None and self.stop is not None
        if self.offset + n > self.stop:
            raise IntegrityError(f"the server sent more than the {self.stop - self.start} bytes expected")
        self.sink.write_at(self.offset, chunk)
        if self.pipeline is not None:
            self.pipeline.submit(chunk)  # immutable bytes: no copy, nothing to recycle
        self._advance(n)

    def receive(self, readinto: Callable[[memoryview], int], check: Callable[[], None] | None = None) -> None:
        """Read the rest of the body with ``readinto`` (fills a buffer; 0 at the end of the body).

        A memory sink is filled in place (the socket writes the result's own pages); a file sink reads
        into a few recycled buffers that are written with ``pwrite`` and hashed while still cached.
        Stops at ``stop``: a body longer than expected is detected by the caller's next read or the
        connection's framing, never written past the range.
        """
        assert self.sink is not None and self.stop is not None
        target = self.sink.direct()
        while self.offset < self.stop:
            if check is not None:
                check()
            want = min(RECEIVE_STEP, self.stop - self.offset)
            if target is not None:
                piece = target[self.offset : self.offset + want]
                n = readinto(piece)
                if n == 0:
                    return
                if self.pipeline is not None:
                    self.pipeline.submit(piece[:n])
                self._advance(n)
                continue
            if self._ring is None:
                self._ring = _BufferRing(RING_BUFFERS, RECEIVE_STEP)
            buffer = self._ring.take()
            release = self._ring.give_back(buffer)
            try:
                n = readinto(buffer[:want])
                if n:
                    self.sink.write_at(self.offset, buffer[:n])
            except BaseException:
                release()
                raise
            if n == 0:
                release()
                return
            if self.pipeline is not None:
                self.pipeline.submit(buffer[:n], release)
            else:
                release()
            self._advance(n)

    def finish(self) -> None:
        if self.stop is None or self.offset != self.stop:
            raise IntegrityError(f"the body ended at byte {self.offset}, expected {self.stop}")

    def leaf_digests(self) -> dict[int, bytes] | None:
        """SHA-256 of each tree-hash leaf written (``hash_body`` writers), once the body is complete."""
        if self.pipeline is None:
            return None
        self.pipeline.close()
        self.pipeline.drain()
        digests = self.pipeline.hasher.digests()
        self.pipeline = None
        return digests

    def close(self) -> None:
        """Stop background hashing (on failure paths)."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
