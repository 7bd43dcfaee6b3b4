"""``GET|HEAD /v1/tensors/{token}``: the cacheable, stateless address of every generated file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from initserve.api.http_cache import IMMUTABLE
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.negotiation import wanted_format
from initserve.api.openapi import ANY_STATS_BODY, SAFETENSORS_BODY, problems
from initserve.api.problems import ProblemError, repeated_keys_problem
from initserve.api.routes.init import FormatQuery
from initserve.api.security import ApiKey
from initserve.api.serving import serve_target
from initserve.api.targets import build_target
from initserve.api.tokens import InvalidToken, decode_token
from initserve.engine import IMPLICIT_ALGORITHM
from initserve.engine.strict_json import DuplicateKeyError

router = APIRouter(prefix="/v1", tags=["tensors"], dependencies=[ApiKey], route_class=UniqueKeysRoute)

_CACHE_HEADERS = {
    "ETag": {"description": "Strong ETag of the representation.", "schema": {"type": "string"}},
    "Cache-Control": {"description": IMMUTABLE, "schema": {"type": "string"}},
}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole file.",
        "content": {**SAFETENSORS_BODY, **ANY_STATS_BODY},
        "headers": _CACHE_HEADERS,
    },
    206: {
        "description": "One range, or several as multipart/byteranges.",
        "content": {**SAFETENSORS_BODY, "multipart/byteranges": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "Not modified: the If-None-Match ETag matches."},
    **problems(400, 401, 413, 416, 422, 503),
}


async def tensor(
    request: Request,
    token: Annotated[str, Path(description="`t.` or `b.` + base64url of the canonical spec (no padding).")],
    format: FormatQuery = None,
) -> Response:
    """The file a spec or bundle token denotes; honours If-None-Match, Range and If-Range."""
    settings = request.app.state.settings
    try:
        kind, mapping = decode_token(token, settings.max_token_length)
    except InvalidToken as exc:
        raise ProblemError(400, "invalid-token", str(exc), errors=[(("path", "token"), str(exc))]) from exc
    except DuplicateKeyError as exc:
        raise repeated_keys_problem(exc, ("path", "token")) from exc
    # A token is a canonical form: one that names no algorithm is algorithm 1 (URLs made before
    # versions were selectable keep their bytes and ETags).
    target = build_target(kind, mapping, settings, ("path", "token"), default_algorithm=IMPLICIT_ALGORITHM)
    wanted = wanted_format(format, request.headers.get("accept"))
    return await serve_target(request, target, conditional=True, stats=wanted == "stats", digest=wanted == "digest")


# GET and HEAD as two operations: one shared operation id would be ambiguous for generated clients.
router.add_api_route(
    "/tensors/{token}", tensor, methods=["GET"], name="get_tensor", response_class=Response, responses=_RESPONSES
)
router.add_api_route(
    "/tensors/{token}", tensor, methods=["HEAD"], name="head_tensor", response_class=Response, responses=_RESPONSES
)
