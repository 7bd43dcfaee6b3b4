"""``GET /v1/schemes`` and ``/v1/schemes/{name}``: the scheme catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.openapi import problems
from initserve.api.problems import ProblemError
from initserve.api.security import ApiKey
from initserve.engine import catalog, scheme_info
from initserve.engine.catalog import unknown_scheme_message

router = APIRouter(prefix="/v1", tags=["schemes"], dependencies=[ApiKey], route_class=UniqueKeysRoute)


@router.get("/schemes", responses=problems(401))
async def list_schemes() -> list[dict[str, Any]]:
    """Every scheme: formula, parameters with types and defaults, framework equivalents, moments."""
    return catalog()


@router.get("/schemes/{name}", responses=problems(401, 404))
async def get_scheme(name: str) -> dict[str, Any]:
    """One scheme of the catalog; a framework alias (`HeNormal`, `kaiming_uniform_`) gives its scheme."""
    try:
        return scheme_info(name)
    except KeyError as exc:
        msg = unknown_scheme_message(name)
        raise ProblemError(404, "not-found", msg, errors=[(("path", "name"), msg)]) from exc
