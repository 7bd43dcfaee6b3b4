"""A safetensors writer with a deterministic header, streamed with its length known up front.

Layout: 8-byte little-endian header length N, then N bytes of JSON (keys sorted, compact, padded
with spaces so the data starts at a multiple of 8), then the tensors' bytes back to back. Tensors
are ordered by descending itemsize, then name (as the safetensors library orders them), so every
tensor starts aligned to its itemsize. ``__metadata__`` holds the canonical spec and the algorithm.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

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
        specs.sort(key=lambda spec: (-spec.dtype_info.itemsize, spec.name))
        entries, offset = [], 0
        for spec in specs:
            entries.append(_Entry(spec, offset, offset + spec.nbytes))
            offset += spec.nbytes
        self.entries = tuple(entries)
        self.header = self._header()
        self.data_start = len(self.header)
        self.total_length = self.data_start + offset

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
        for entry in self.entries:
            begin, end = self.data_start + entry.begin, self.data_start + entry.end
            lo, hi = max(start, begin), min(stop, end)
            if lo >= hi:
                continue
            itemsize = entry.spec.dtype_info.itemsize
            first, last = (lo - begin) // itemsize, -(-(hi - begin) // itemsize)
            skip = (lo - begin) - first * itemsize  # bytes to drop from the first element
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
