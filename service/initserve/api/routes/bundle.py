"""``POST /v1/bundle``: many named tensors in one safetensors file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.models import BUNDLE_EXAMPLES, BundleRequest
from initserve.api.negotiation import wanted_format
from initserve.api.openapi import BUNDLE_STATS_BODY, SAFETENSORS_BODY, problems
from initserve.api.routes.init import FormatQuery
from initserve.api.security import ApiKey
from initserve.api.serving import serve_target
from initserve.api.targets import build_target

router = APIRouter(prefix="/v1", tags=["bundle"], dependencies=[ApiKey], route_class=UniqueKeysRoute)


@router.post(
    "/bundle",
    response_class=Response,
    responses={
        200: {
            "description": "The safetensors file (or per-tensor statistics).",
            "content": {**SAFETENSORS_BODY, **BUNDLE_STATS_BODY},
        },
        **problems(400, 401, 413, 422, 503),
    },
)
async def bundle(
    request: Request,
    body: Annotated[BundleRequest, Body(openapi_examples=BUNDLE_EXAMPLES)],
    format: FormatQuery = None,
) -> Response:
    """Generate a bundle; each tensor equals `/v1/init` of its spec with the bundle's seed and its name."""
    target = build_target("b", body.engine_mapping(), request.app.state.settings, ("body",))
    wanted = wanted_format(format, request.headers.get("accept"))
    return await serve_target(request, target, conditional=False, stats=wanted == "stats", digest=wanted == "digest")
