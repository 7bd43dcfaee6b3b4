"""Liveness, readiness and metrics: cheap, never touching the engine's generators."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.limits import GenerationLimiter
from initserve.api.metrics import Metrics
from initserve.api.models import Health, Readiness
from initserve.api.openapi import problems
from initserve.api.security import api_key_if
from initserve.engine import ALGORITHM_VERSION

router = APIRouter(tags=["health"], route_class=UniqueKeysRoute)


_health_auth = Depends(api_key_if("protect_health"))
_metrics_auth = Depends(api_key_if("protect_metrics"))


@router.get("/healthz", responses=problems(401), dependencies=[_health_auth])
async def healthz(request: Request) -> Health:
    """Liveness: the process answers; names the generation kernel it runs (native or numpy)."""
    return Health(status="ok", kernel=request.app.state.kernel.name)


@router.get("/readyz", responses=problems(401), dependencies=[_health_auth])
async def readyz(request: Request) -> Readiness:
    """Readiness: started and serving; reports generation slots in use."""
    limiter: GenerationLimiter = request.app.state.limiter
    return Readiness(
        status="ready",
        algorithm=ALGORITHM_VERSION,
        generations_in_flight=limiter.in_flight,
        generation_capacity=limiter.capacity,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problems(401)},
    dependencies=[_metrics_auth],
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    collected: Metrics = request.app.state.metrics
    body, content_type = collected.exposition()
    return Response(body, media_type=content_type)
