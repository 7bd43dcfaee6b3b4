"""``POST /v1/init``: one tensor as a safetensors file, or its statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.models import INIT_EXAMPLES, InitSpec
from initserve.api.negotiation import Format, wanted_format
from initserve.api.openapi import SAFETENSORS_BODY, STATS_BODY, problems
from initserve.api.security import ApiKey
from initserve.api.serving import serve_target
from initserve.api.targets import build_target

router = APIRouter(prefix="/v1", tags=["init"], dependencies=[ApiKey], route_class=UniqueKeysRoute)

FormatQuery = Annotated[
    Format | None,
    Query(
        description="`stats` for JSON statistics instead of the file, `digest` for the file's SHA-256 tree hash; "
        "default: by `Accept`, else the file."
    ),
]


@router.post(
    "/init",
    response_class=Response,
    responses={
        200: {
            "description": "The safetensors file (or JSON statistics).",
            "content": {**SAFETENSORS_BODY, **STATS_BODY},
        },
        **problems(400, 401, 413, 422, 503),
    },
)
async def init(
    request: Request,
    spec: Annotated[InitSpec, Body(openapi_examples=INIT_EXAMPLES)],
    format: FormatQuery = None,
) -> Response:
    """Generate one tensor: a streamed safetensors file holding it under `name`, or its statistics."""
    target = build_target("t", spec.engine_mapping(), request.app.state.settings, ("body",))
    wanted = wanted_format(format, request.headers.get("accept"))
    return await serve_target(request, target, conditional=False, stats=wanted == "stats", digest=wanted == "digest")
