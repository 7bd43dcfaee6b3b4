"""Serve an immutable file that is not a generated spec: a stored checkpoint tensor or a derived model.

The HTTP semantics are those of ``/v1/tensors`` (RFC 9110 via :mod:`initserve.api.http_cache`): strong
ETag, ``If-None-Match`` → 304, ``Range``/``If-Range`` → 206 (one range, or ``multipart/byteranges``) or
416, HEAD without a body, ``Cache-Control: immutable``. Bytes come from a :class:`ByteSource` streamed by
:class:`GeneratedFileResponse` (each chunk made in a worker thread).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from starlette.responses import Response

from initserve.api.http_cache import (
    IMMUTABLE,
    ByteRange,
    RangeNotSatisfiable,
    if_none_match_hits,
    if_range_allows,
    multipart_plan,
    parse_range,
    strong_etag,
)
from initserve.api.limits import GenerationSlot
from initserve.api.problems import ProblemError
from initserve.api.streaming import ByteSource, GeneratedFileResponse, Segment

OCTET = "application/octet-stream"


def immutable_headers(digest: str, location: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"ETag": strong_etag(digest), "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes"}
    if location is not None:
        headers["Content-Location"] = location
    headers.update(extra or {})
    return headers


def not_modified(request: Request, headers: Mapping[str, str]) -> Response | None:
    """304 when ``If-None-Match`` matches the ETag in ``headers``, else None."""
    if if_none_match_hits(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=dict(headers))
    return None


def plan_body(
    request: Request, length: int, digest: str, headers: dict[str, str], *, ranges_allowed: bool
) -> tuple[int, list[Segment]]:
    """``(status, segments)`` of the answer — the whole file (200), one range or several as
    ``multipart/byteranges`` (206) — with its Content-Type/Length/Range set in ``headers``; raises the 416
    problem when no requested range overlaps. Ranges count for GET only, and only while ``If-Range``
    (if any) matches the ETag in ``headers``."""
    ranges = None
    if ranges_allowed and request.method == "GET" and if_range_allows(request.headers.get("if-range"), headers["ETag"]):
        try:
            ranges = parse_range(request.headers.get("range"), length)
        except RangeNotSatisfiable as exc:
            raise ProblemError(
                416,
                "range-not-satisfiable",
                str(exc),
                errors=[(("header", "range"), f"range must start below {length}")],
                headers={**headers, "Content-Range": f"bytes */{length}"},
            ) from exc
    if ranges is None:
        headers.update({"Content-Type": OCTET, "Content-Length": str(length)})
        return 200, [ByteRange(0, length)]
    if len(ranges) == 1:
        headers.update(
            {
                "Content-Type": OCTET,
                "Content-Length": str(len(ranges[0])),
                "Content-Range": ranges[0].content_range(length),
            }
        )
        return 206, [ranges[0]]
    plan = multipart_plan(ranges, length, digest, OCTET)
    segments: list[Segment] = []
    for preamble, span in zip(plan.parts, plan.ranges, strict=True):
        segments += [preamble, span]
    segments.append(plan.epilogue)
    headers.update({"Content-Type": plan.content_type, "Content-Length": str(plan.content_length)})
    return 206, segments


def serve_file(
    request: Request,
    source: ByteSource,
    digest: str,
    headers: dict[str, str],
    *,
    ranges_allowed: bool,
    slot: GenerationSlot | None = None,
) -> Response:
    """The whole file or the requested ranges of ``source``; ``headers`` from :func:`immutable_headers`.
    ``slot`` (a generation slot already taken) is released when the response ends, or at once if none is sent."""
    try:
        status, segments = plan_body(request, source.total_length, digest, headers, ranges_allowed=ranges_allowed)
    except ProblemError:
        if slot is not None:
            slot.release()
        raise
    if request.method == "HEAD" and slot is not None:
        slot.release()
        slot = None
    return GeneratedFileResponse(
        source,
        status_code=status,
        headers=headers,
        segments=segments,
        send_body=request.method != "HEAD",
        slot=slot,
        kernel=request.app.state.kernel,
        cpu_limiter=request.app.state.cpu_limiter,
    )
