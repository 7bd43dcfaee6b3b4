"""Which representation a request wants: the safetensors file (default), its JSON statistics, or its digest."""

from __future__ import annotations

from typing import Literal

Format = Literal["safetensors", "stats", "digest"]


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


def wants_stats(format_param: Format | None, accept: str | None) -> bool:
    """``?format=`` wins; else JSON only when ``Accept`` names ``application/json`` and prefers it
    to ``application/octet-stream`` (wildcards such as ``*/*`` keep the default, the file)."""
    if format_param is not None:
        return format_param == "stats"
    if not accept:
        return False
    json_q = octet_q = -1.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media == "application/json":
            json_q = max(json_q, _quality(params))
        elif media == "application/octet-stream":
            octet_q = max(octet_q, _quality(params))
    return json_q > 0 and json_q > octet_q


def wanted_format(format_param: Format | None, accept: str | None) -> Format:
    """``?format=`` wins (``digest`` only by query); else stats or the file as :func:`wants_stats` decides."""
    if format_param is not None:
        return format_param
    return "stats" if wants_stats(None, accept) else "safetensors"
