"""Query parameters given once: ``?format=json&format=safetensors`` is refused, not settled by whichever wins.

Frameworks disagree on a repeated query parameter (Starlette's ``request.query_params[name]`` is the
last value, FastAPI's validated parameter the first, a proxy or cache may read either), so a repeated
name makes the request mean different things to different readers. This middleware answers every
such request, on every path, with a 422 naming each repeated parameter, before routing. Names are
split and decoded exactly as Starlette does (``parse_qsl`` of the Latin-1 query, blank values kept),
so ``%66ormat`` is ``format``.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from initserve.api.problems import Loc, errors_detail, problem_response

_SHOWN_VALUES = 3  # values quoted per repeated parameter (the URL is bounded, but a message should not be)


def repeated_query_errors(query_string: bytes) -> list[tuple[Loc, str]]:
    """One ``(("query", name), message)`` per parameter name given more than once, in order of first use."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    counts = Counter(name for name, _ in pairs)
    errors: list[tuple[Loc, str]] = []
    for name, count in counts.items():
        if count < 2:
            continue
        values = [value for key, value in pairs if key == name]
        shown = ", ".join(repr(v if len(v) <= 40 else v[:37] + "...") for v in values[:_SHOWN_VALUES])
        times = "twice" if count == 2 else f"{count} times"
        more = ", …" if count > _SHOWN_VALUES else ""
        msg = f"{name}: query parameter {name!r} is given {times} ({shown}{more}); give each query parameter once"
        errors.append((("query", name), msg))
    return errors


class SingleQueryParamsMiddleware:
    """Answer 422 ``invalid-spec`` to any HTTP request whose query string repeats a parameter name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"") if scope["type"] == "http" else b""
        # A name can only repeat across an "&"; most requests have no query at all.
        errors = repeated_query_errors(query) if query.count(b"&") else []
        if not errors:
            await self.app(scope, receive, send)
            return
        detail = errors_detail(errors)
        response = problem_response(422, "invalid-spec", detail, instance=scope.get("path", ""), errors=errors)
        await response(scope, receive, send)
