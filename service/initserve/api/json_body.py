"""Request bodies parsed with unique keys: every route's ``request.json()`` refuses a repeated key.

FastAPI reads a JSON body with ``Request.json()`` (the standard library's ``json.loads``, where the
last of two equal keys silently wins). Routes of the :class:`UniqueKeysRoute` class hand their
handler a :class:`UniqueKeysRequest`, whose ``json()`` is :func:`~initserve.engine.strict_json.loads_unique`;
the :class:`~initserve.engine.strict_json.DuplicateKeyError` it raises reaches the problem handler
(problems.py) as the cause of FastAPI's body-parsing error and is answered 422 naming each key and
the object that repeats it. Every router of the service uses this route class.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from initserve.engine.strict_json import loads_unique


class UniqueKeysRequest(Request):
    """A request whose JSON body may not repeat a key in any object."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_unique(await self.body())
        return self._json


class UniqueKeysRoute(APIRoute):
    """An ``APIRoute`` whose handler parses JSON bodies with :class:`UniqueKeysRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def unique_keys_handler(request: Request) -> Response:
            return await handler(UniqueKeysRequest(request.scope, request.receive))

        return unique_keys_handler
