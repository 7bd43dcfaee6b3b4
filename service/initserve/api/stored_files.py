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


def serve_file(
    request: Request,
    source: ByteSource,
    digest: str,
    headers: dict[str, str],
    *,
    ranges_allowed: bool,
    slot: GenerationSlot | None = None,
) -> Response:
    """The whole file or the requested ranges of ``source``; ``headers`` from :func:`immutable_headers`."""
    length = source.total_length
    ranges = None
    if ranges_allowed and request.method == "GET" and if_range_allows(request.headers.get("if-range"), headers["ETag"]):
        try:
            ranges = parse_range(request.headers.get("range"), length)
        except RangeNotSatisfiable as exc:
            if slot is not None:
                slot.release()
            raise ProblemError(
                416,
                "range-not-satisfiable",
                str(exc),
                errors=[(("header", "range"), f"range must start below {length}")],
                headers={**headers, "Content-Range": f"bytes */{length}"},
            ) from exc
    segments: list[Segment]
    if ranges is None:
        status, segments = 200, [ByteRange(0, length)]
        headers.update({"Content-Type": OCTET, "Content-Length": str(length)})
    elif len(ranges) == 1:
        status, segments = 206, [ranges[0]]
        headers.update(
            {
                "Content-Type": OCTET,
                "Content-Length": str(len(ranges[0])),
                "Content-Range": ranges[0].content_range(length),
            }
        )
    else:
        plan = multipart_plan(ranges, length, digest, OCTET)
        status, segments = 206, []
        for preamble, span in zip(plan.parts, plan.ranges, strict=True):
            segments += [preamble, span]
        segments.append(plan.epilogue)
        headers.update({"Content-Type": plan.content_type, "Content-Length": str(plan.content_length)})
    head = request.method == "HEAD"
    if head and slot is not None:
        slot.release()
        slot = None
    return GeneratedFileResponse(
        source,
        status_code=status,
        headers=headers,
        segments=segments,
        send_body=not head,
        slot=slot,
        kernel=request.app.state.kernel,
        cpu_limiter=request.app.state.cpu_limiter,
    )
