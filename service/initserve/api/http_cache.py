"""HTTP caching semantics for immutable generated files (RFC 9110 §8.8, §13, §14).

Pure functions over header strings: strong ETags, ``If-None-Match``, ``If-Range`` and byte
``Range`` parsing into a plan of what to send. The streaming response executes the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IMMUTABLE = "public, max-age=31536000, immutable"
MAX_RANGES = 64  # more distinct ranges than this and we answer 200 with the whole file (RFC 9110 allows it)


class RangeNotSatisfiable(Exception):
    """No range of the header overlaps the representation; answer 416 with ``bytes */<length>``."""

    def __init__(self, length: int) -> None:
        super().__init__(f"no requested range overlaps the {length} bytes of this resource")
        self.length = length


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, stop)`` of a representation (``stop`` exclusive, unlike the header)."""

    start: int
    stop: int

    def content_range(self, length: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{length}"

    def __len__(self) -> int:
        return self.stop - self.start


def strong_etag(digest: str) -> str:
    return f'"{digest}"'


def _etag_list(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def if_none_match_hits(header: str | None, etag: str) -> bool:
    """Weak comparison as RFC 9110 §13.1.2 requires: ``W/"x"`` matches ``"x"``; ``*`` matches all."""
    if header is None:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _etag_list(header))


def if_range_allows(header: str | None, etag: str) -> bool:
    """``If-Range`` needs a *strong* match (§13.1.5); a date or weak tag never matches ours."""
    return header is None or header.strip() == etag


def _parse_spec(text: str, length: int) -> ByteRange | None:
    """One ``first-last`` / ``first-`` / ``-suffix``; None when unsatisfiable; ValueError if malformed."""
    first, sep, last = text.strip().partition("-")
    if not sep:
        raise ValueError(text)
    first, last = first.strip(), last.strip()
    if first == "":
        if not last.isdigit():
            raise ValueError(text)
        suffix = int(last)
        if suffix == 0 or length == 0:
            return None
        return ByteRange(max(0, length - suffix), length)
    if not first.isdigit() or (last and not last.isdigit()):
        raise ValueError(text)
    start = int(first)
    if last and int(last) < start:
        raise ValueError(text)
    if start >= length:
        return None
    stop = length if not last else min(int(last) + 1, length)
    return ByteRange(start, stop)


def parse_range(header: str | None, length: int) -> list[ByteRange] | None:
    """Ranges to send, sorted and coalesced, or None for "send the whole representation".

    None is returned when there is no header, a unit other than ``bytes``, a malformed
    header (a server may ignore those, RFC 9110 §14.2), or more than :data:`MAX_RANGES`
    ranges. Raises :class:`RangeNotSatisfiable` when ranges parse but none overlaps.
    """
    if header is None:
        return None
    unit, eq, specs = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    items = specs.split(",")
    if len(items) > 4 * MAX_RANGES:
        return None
    try:
        parsed = [_parse_spec(item, length) for item in items if item.strip()]
    except ValueError:
        return None
    if not parsed:
        return None
    ranges = sorted((r for r in parsed if r is not None), key=lambda r: r.start)
    if not ranges:
        raise RangeNotSatisfiable(length)
    merged = [ranges[0]]
    for item in ranges[1:]:
        last = merged[-1]
        if item.start <= last.stop:  # overlapping or adjacent: one part is cheaper and equivalent
            merged[-1] = ByteRange(last.start, max(last.stop, item.stop))
        else:
            merged.append(item)
    if len(merged) > MAX_RANGES:
        return None
    return merged


@dataclass(frozen=True)
class MultipartPlan:
    """The exact bytes of a ``multipart/byteranges`` body (RFC 9110 §14.6), around the file ranges.

    ``parts[i]`` is the literal preamble of range ``i``; ``epilogue`` closes the body. The
    boundary is derived from the ETag so the same request always yields the same bytes.
    """

    boundary: str
    parts: tuple[bytes, ...]
    ranges: tuple[ByteRange, ...]
    epilogue: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(p) for p in self.parts) + sum(len(r) for r in self.ranges) + len(self.epilogue)


def multipart_plan(ranges: Sequence[ByteRange], length: int, digest: str, part_type: str) -> MultipartPlan:
    boundary = f"initserve-{digest[:40]}"
    parts = []
    for index, item in enumerate(ranges):
        lead = b"" if index == 0 else b"\r\n"
        head = f"--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: {item.content_range(length)}\r\n\r\n"
        parts.append(lead + head.encode("ascii"))
    epilogue = f"\r\n--{boundary}--\r\n".encode("ascii")
    return MultipartPlan(boundary, tuple(parts), tuple(ranges), epilogue)
