"""``POST /v1/init`` without FastAPI's routing and dependency machinery, for requests that pass.

A distinct small request spends more event-loop time in routing, dependency solving and body parsing
than in anything initserve does. This middleware answers the plain case itself with the *same* steps
the route takes — the same ``InitSpec`` model validates the same JSON, the same
:func:`~initserve.api.targets.build_target` checks the spec and its size, the same
:func:`~initserve.api.serving.serve_target` generates, limits, hashes and caches — and hands every
other request to the full path untouched:

- anything but ``POST /v1/init`` with an empty query string and ``Content-Type: application/json``;
- a body that is not JSON, repeats a key in any object, fails validation, or is refused by
  ``build_target`` — anything raised before serving (the full path then validates again and answers
  with its own named 4xx);
- when API keys are configured, a request without a valid key (the full path answers 401).

Errors raised while serving (503 ``saturated``) are answered by the app's own problem handler, as on
the full path. The matched route is recorded in the scope, so metrics and the repeat memo label the
request ``/v1/init`` exactly as the router would.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from initserve.api.models import InitSpec
from initserve.api.negotiation import wanted_format
from initserve.api.problems import ProblemError, problem_of
from initserve.api.repeats import keyed_headers, replay
from initserve.api.routes.init import router as init_router
from initserve.api.serving import serve_target
from initserve.api.targets import build_target
from initserve.engine.strict_json import loads_unique

PATH = "/v1/init"


class FastInitMiddleware:
    """Serves valid ``POST /v1/init`` requests without routing; see the module docstring."""

    def __init__(self, app: ASGIApp, route: APIRoute, api_keys: tuple[bytes, ...]) -> None:
        self.app = app
        self.route = route  # the APIRoute of POST /v1/init (for metrics labels and the repeat memo)
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        headers = keyed_headers(scope, self.api_keys)
        if headers is None or headers[0] != b"application/json":
            await self.app(scope, receive, send)
            return
        accept = headers[1]
        message = await receive()
        receive = replay(message, receive)
        if message["type"] != "http.request" or message.get("more_body", False):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            spec = InitSpec.model_validate(loads_unique(message.get("body", b"")))
            target = build_target("t", spec.engine_mapping(), request.app.state.settings, ("body",))
            wanted = wanted_format(None, accept.decode("latin-1") or None)
        except Exception:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            response = await serve_target(
                request, target, conditional=False, stats=wanted == "stats", digest=wanted == "digest"
            )
        except ProblemError as exc:
            response = problem_of(exc, request.url.path)
        await response(scope, receive, send)


def init_route() -> APIRoute:
    """The ``APIRoute`` of ``POST /v1/init``, as the router records it in the scope of a routed request."""
    for route in init_router.routes:
        if isinstance(route, APIRoute) and route.path == PATH and "POST" in (route.methods or ()):
            return route
    raise LookupError(f"no route serves POST {PATH}")
