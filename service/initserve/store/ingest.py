"""An uploaded safetensors file, consumed as it streams in: validated, split into tensor records, stored.

Memory stays constant whatever the file's size: the header is held (at most the reference
implementation's 100 MB), and each tensor's bytes pass straight through to a :class:`BlobWriter`, which
hashes them as they go, and (float tensors) through a :class:`MagnitudeScan`, which keeps the largest finite
|x| and the count of inf/NaN the manifest records for derive's overflow rules. The file is refused as
soon as it is known to be wrong: a header that does not parse or whose tensors do not tile the data, a
total size above the limit (known from the header, before any tensor byte is stored), a
``Content-Length`` that disagrees with the header, bytes past the end, or a body that ends early.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from initserve.engine.checkpoint import TensorEntry, UploadLayout, header_length, parse_upload_header
from initserve.engine.errors import FieldError, SpecError, SpecTooLarge
from initserve.engine.magnitudes import SCANNED, Magnitude, MagnitudeScan

from .base import BlobWriter, Store


@dataclass
class IngestResult:
    layout: UploadLayout
    digests: dict[str, str] = field(default_factory=dict)
    magnitudes: dict[str, Magnitude] = field(default_factory=dict)  # float tensors: largest finite |x|, non-finite
    new_blobs: int = 0
    new_bytes: int = 0


class Ingest:
    """Feed the body with :meth:`feed` (blocking: it writes to the store), then :meth:`finish`."""

    def __init__(self, store: Store, limit: int, declared_length: int | None = None) -> None:
        self.store = store
        self.limit = limit
        self.declared_length = declared_length
        self._head = bytearray()
        self._layout: UploadLayout | None = None
        self._position = 0  # bytes of the data section received
        self._index = 0  # the tensor being received
        self._writer: BlobWriter | None = None
        self._scan: MagnitudeScan | None = None  # the current tensor's, when it is a float tensor
        self._result: IngestResult | None = None

    def _fail(self, msg: str, loc: tuple[str, ...] = ("body",)) -> SpecError:
        self.abort()
        return SpecError([FieldError(loc, msg)])

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        if self._layout is None:
            view = self._feed_header(view)
            if self._layout is None:
                return
        while view.nbytes:
            view = self._feed_data(view)

    def _feed_header(self, view: memoryview) -> memoryview:
        need = 8 if len(self._head) < 8 else 8 + header_length(bytes(self._head[:8]))
        while True:
            take = min(need - len(self._head), view.nbytes)
            self._head += view[:take]
            view = view[take:]
            if len(self._head) < need:
                return view
            if need == 8:
                try:
                    size = header_length(bytes(self._head))
                except SpecError:
                    self.abort()
                    raise
                if 8 + size > self.limit:
                    self.abort()
                    raise SpecTooLarge(("body",), 8 + size, self.limit)
                need = 8 + size
                continue
            try:
                layout = parse_upload_header(need - 8, bytes(self._head[8:]))
            except SpecError:
                self.abort()
                raise
            if layout.total_length > self.limit:
                self.abort()
                raise SpecTooLarge(("body",), layout.total_length, self.limit)
            if self.declared_length is not None and self.declared_length != layout.total_length:
                raise self._fail(
                    f"Content-Length is {self.declared_length} but the header describes a "
                    f"{layout.total_length}-byte file"
                )
            self._layout = layout
            self._result = IngestResult(layout)
            self._head = bytearray()
            self._advance()
            return view

    def _current(self) -> TensorEntry | None:
        assert self._layout is not None
        tensors = self._layout.tensors
        return tensors[self._index] if self._index < len(tensors) else None

    def _advance(self) -> None:
        """Open the next tensor's writer, committing every tensor whose bytes are complete (empty ones too)."""
        assert self._result is not None
        while (entry := self._current()) is not None:
            if self._writer is None:
                self._writer = self.store.writer()
                self._writer.write(entry.prefix())
                self._scan = MagnitudeScan(entry.dtype) if entry.dtype in SCANNED else None
            if self._position < entry.end:
                return
            digest, created = self._writer.commit()
            self._writer = None
            self._result.digests[entry.name] = digest
            if self._scan is not None:
                self._result.magnitudes[entry.name] = self._scan.result()
                self._scan = None
            if created:
                self._result.new_blobs += 1
                self._result.new_bytes += len(entry.prefix()) + entry.nbytes
            self._index += 1

    def _feed_data(self, view: memoryview) -> memoryview:
        entry = self._current()
        if entry is None:
            assert self._layout is not None
            raise self._fail(f"the body continues past the {self._layout.total_length} bytes its header describes")
        assert self._writer is not None
        take = min(entry.end - self._position, view.nbytes)
        self._writer.write(view[:take])
        if self._scan is not None:
            self._scan.update(view[:take])
        self._position += take
        self._advance()
        return view[take:]

    def finish(self) -> IngestResult:
        if self._layout is None:
            raise self._fail("the body ended inside the safetensors header" if self._head else "the body is empty")
        if self._current() is not None:
            raise self._fail(
                f"the body ended after {self._layout.data_start + self._position} of the "
                f"{self._layout.total_length} bytes its header describes"
            )
        assert self._result is not None
        return self._result

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
