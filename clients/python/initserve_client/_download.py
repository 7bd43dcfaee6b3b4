"""Download bookkeeping without I/O: byte-range plans, response checks, and the buffer writer.

The clients feed raw body chunks into a :class:`BodyWriter`, which copies each one straight into its
slice of a preallocated buffer (a memory-mapped cache file or a ``bytearray``): no list of chunks,
no ``b"".join``. A broken stream resumes at ``writer.offset`` with a ``Range`` request when the body
comes from a tensor URL.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ._errors import IntegrityError, MissingDependencyError

__all__ = ["BodyWriter", "Progress", "make_progress", "parse_content_range", "plan_ranges"]

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


class BodyWriter:
    """Copies the body of responses for bytes ``[start, stop)`` of a file into ``buffer[start:stop]``.

    ``buffer`` may be ``None`` with ``allocate`` given: the first response's ``Content-Length``
    sizes it (the no-cache path learns the size only from the response).
    """

    def __init__(
        self,
        buffer: memoryview | None,
        start: int = 0,
        stop: int | None = None,
        *,
        allocate: Callable[[int], memoryview] | None = None,
        hash_body: bool = False,
        progress: Progress | None = None,
        expected_etag: str | None = None,
    ) -> None:
        if buffer is None and allocate is None:
            raise ValueError("BodyWriter needs a buffer or an allocate callback")
        self.buffer = buffer
        self.start = start
        self.stop = stop if stop is not None or buffer is None else buffer.nbytes
        self.offset = start
        self._allocate = allocate
        self._hash_body = hash_body
        self.hasher = hashlib.sha256() if hash_body else None
        self.progress = progress
        self.expected_etag = expected_etag

    @property
    def whole_file(self) -> bool:
        return self.start == 0 and (self.buffer is None or self.stop == self.buffer.nbytes)

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
        self.hasher = hashlib.sha256() if self._hash_body else None

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
        self.restart()  # a 200 always carries the whole file from byte 0
        if self.buffer is None:
            if length is None:
                raise IntegrityError("the response has no Content-Length; cannot preallocate its buffer")
            assert self._allocate is not None
            self.buffer = self._allocate(length)
            self.stop = length
        elif length is not None and length != self.buffer.nbytes:
            raise IntegrityError(f"Content-Length {length} differs from the expected size {self.buffer.nbytes}")

    def write(self, chunk: bytes) -> None:
        n = len(chunk)
        end = self.offset + n
        assert self.buffer is not None and self.stop is not None
        if end > self.stop:
            raise IntegrityError(f"the server sent more than the {self.stop - self.start} bytes expected")
        self.buffer[self.offset : end] = chunk
        self.offset = end
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.progress is not None:
            self.progress.update(n)

    def finish(self) -> None:
        if self.stop is None or self.offset != self.stop:
            raise IntegrityError(f"the body ended at byte {self.offset}, expected {self.stop}")
