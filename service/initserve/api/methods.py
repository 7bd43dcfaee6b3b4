"""HEAD wherever GET is answered, and 405 answers whose ``Allow`` lists every method of the path.

RFC 9110 §9.1: a general-purpose server supports GET and HEAD. FastAPI routes answer only the methods
they were declared with, so ``HEAD /healthz`` (a common probe) or ``HEAD /v1/checkpoints/{digest}``
was a 405. :func:`add_head_routes` gives every GET route without a HEAD twin one: the same endpoint and
dependencies (API keys apply), kept out of the OpenAPI schema; the server sends its headers and no body.

A path served by several routes (``GET`` and ``HEAD`` declared apart, for their own OpenAPI entries)
answered a wrong method with the ``Allow`` of the first route alone (``GET``); :func:`allowed_methods`
collects them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def add_head_routes(router: APIRouter) -> None:
    """Add a schema-less HEAD route beside every GET route of ``router`` whose path has none.

    Call it on each router before it is included (an included router's routes are not in the app's
    list) and on the app's own router for the routes added to the app directly."""
    routes = list(router.routes)
    with_head = {route.path for route in routes if isinstance(route, Route) and "HEAD" in (route.methods or ())}
    for route in routes:
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()) and route.path not in with_head:
            router.add_api_route(
                route.path.removeprefix(router.prefix),  # add_api_route puts the router's prefix back
                route.endpoint,
                methods=["HEAD"],
                name=f"head_{route.name}",
                include_in_schema=False,
                response_class=route.response_class,
                response_model=route.response_model,
                dependencies=route.dependencies[len(router.dependencies) :],  # and the router's dependencies
            )
            with_head.add(route.path)


def _flat(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """Every plain route, descending into included routers (FastAPI keeps those as one entry)."""
    for route in routes:
        if isinstance(route, Route):  # APIRoute is a Route
            yield route
        else:
            included = getattr(getattr(route, "original_router", None), "routes", None)
            if included is not None:
                yield from _flat(included)


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route of ``app`` answers at ``scope``'s path, e.g. ``"GET, HEAD"``."""
    methods: set[str] = set()
    for route in _flat(app.router.routes):
        if route.methods and route.matches({**scope, "method": next(iter(route.methods))})[0] == Match.FULL:
            methods |= route.methods
    return ", ".join(
        sorted(methods, key=lambda method: (_ORDER.index(method) if method in _ORDER else len(_ORDER), method))
    )
