"""A safetensors writer with a deterministic header, streamed with its length known up front.

Layout: 8-byte little-endian header length N, then N bytes of JSON (keys sorted, compact, padded
with spaces so the data starts at a multiple of 8), then the tensors' bytes back to back. Tensors
are ordered by descending itemsize, then name (as the safetensors library orders them), so every
tensor starts aligned to its itemsize. ``__metadata__`` holds the canonical spec and the algorithm.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .generate import DEFAULT_BLOCK, WholeSource, iter_result_chunks
from .kernels import Kernel
from .spec import BundleSpec, Spec

ALIGNMENT = 8


def encode_header(body: Mapping[str, object]) -> bytes:
    """The 8-byte length and the JSON header (keys sorted, compact, ASCII), padded with spaces so the data
    that follows starts at a multiple of 8."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    padded = len(text) + (-(8 + len(text)) % ALIGNMENT)
    return struct.pack("<Q", padded) + text.ljust(padded, b" ")


T = TypeVar("T")


def place(
    items: Iterable[T], *, itemsize: Callable[[T], int], name: Callable[[T], str], nbytes: Callable[[T], int]
) -> tuple[list[tuple[T, int, int]], int]:
    """``(item, begin, end)`` in file order — descending itemsize, then name, as the safetensors library
    writes them, so every tensor starts aligned to its itemsize — with offsets within the data section;
    and the data section's length. The one layout rule of every file the engine writes."""
    placed, offset = [], 0
    for item in sorted(items, key=lambda item: (-itemsize(item), name(item))):
        placed.append((item, offset, offset + nbytes(item)))
        offset += nbytes(item)
    return placed, offset


class Extent(Protocol):
    @property
    def begin(self) -> int: ...  # offset of the tensor's first byte within the data section

    @property
    def end(self) -> int: ...


E = TypeVar("E", bound=Extent)


def overlapping(entries: Iterable[E], data_start: int, start: int, stop: int) -> Iterator[tuple[E, int, int]]:
    """The entries that bytes [start, stop) of the file overlap, each with the overlap ``[lo, hi)`` as
    offsets from the entry's first byte."""
    for entry in entries:
        begin = data_start + entry.begin
        lo, hi = max(start, begin), min(stop, data_start + entry.end)
        if lo < hi:
            yield entry, lo - begin, hi - begin


@dataclass(frozen=True)
class _Entry:
    spec: Spec
    begin: int  # offset of the tensor's first byte within the data section
    end: int


class SafetensorsFile:
    """The safetensors file of one spec or a bundle; nothing is generated until bytes are read."""

    def __init__(self, source: Spec | BundleSpec) -> None:
        self.source = source
        specs = [source] if isinstance(source, Spec) else list(source.tensors)
        placed, data_length = place(
            specs,
            itemsize=lambda spec: spec.dtype_info.itemsize,
            name=lambda spec: spec.name,
            nbytes=lambda spec: spec.nbytes,
        )
        self.entries = tuple(_Entry(*entry) for entry in placed)
        self.header = self._header()
        self.data_start = len(self.header)
        self.total_length = self.data_start + data_length

    def _header(self) -> bytes:
        body: dict[str, object] = {
            "__metadata__": {
                "initserve.algorithm": str(self.source.algorithm),
                "initserve.spec": self.source.canonical_json(),
            }
        }
        for entry in self.entries:
            body[entry.spec.name] = {
                "dtype": entry.spec.dtype_info.safetensors,
                "shape": list(entry.spec.result_shape),
                "data_offsets": [entry.begin, entry.end],
            }
        return encode_header(body)

    def iter_bytes(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        kernel: Kernel | None = None,
        threads: int | None = None,
        block: int = DEFAULT_BLOCK,
        whole_source: WholeSource | None = None,
        reuse: bool = True,
    ) -> Iterator[memoryview]:
        """Bytes [start, stop) of the file. Only the elements that the range touches are generated
        (whole-tensor schemes excepted: they come from ``whole_source``, by default computed).
        Yielded views are reused: consume each before the next — unless ``reuse=False``, where each
        view is of a new buffer (or of the immutable header) that the consumer may keep."""
        stop = self.total_length if stop is None else min(stop, self.total_length)
        if start >= stop:
            return
        if start < self.data_start:
            yield memoryview(self.header)[start : min(stop, self.data_start)]
        for entry, lo, hi in overlapping(self.entries, self.data_start, start, stop):
            itemsize = entry.spec.dtype_info.itemsize
            first, last = lo // itemsize, -(-hi // itemsize)
            skip = lo - first * itemsize  # bytes to drop from the first element
            remaining = hi - lo
            chunks = iter_result_chunks(
                entry.spec,
                first,
                last,
                kernel=kernel,
                threads=threads,
                block=block,
                whole_source=whole_source,
                reuse=reuse,
            )
            for chunk in chunks:
                view = chunk.data.cast("B")[skip : skip + remaining]
                skip = 0
                remaining -= len(view)
                yield view

    def to_bytes(self, *, kernel: Kernel | None = None, threads: int | None = None) -> bytes:
        """The whole file in memory (small files and tests; stream with iter_bytes otherwise)."""
        return b"".join(bytes(view) for view in self.iter_bytes(kernel=kernel, threads=threads))
