"""``POST /v1/resolve``: the URL, size and ETag of a tensor or bundle, without generating it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from initserve.api.json_body import UniqueKeysRoute
from initserve.api.models import RESOLVE_EXAMPLES, InitSpec, ResolveBundle, Resolved
from initserve.api.openapi import problems
from initserve.api.security import ApiKey
from initserve.api.targets import build_target

router = APIRouter(prefix="/v1", tags=["resolve"], dependencies=[ApiKey], route_class=UniqueKeysRoute)

_BODY_SCHEMA = {"oneOf": [{"$ref": "#/components/schemas/InitSpec"}, {"$ref": "#/components/schemas/ResolveBundle"}]}


def _validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/resolve",
    response_model=Resolved,
    responses=problems(400, 401, 413, 422),
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def resolve(
    request: Request, body: Annotated[dict[str, Any], Body(openapi_examples=RESOLVE_EXAMPLES)]
) -> Resolved:
    """Resolve a spec (or `{"bundle": ...}`) to its tensor URL, ETag and size; generates nothing."""
    settings = request.app.state.settings
    if "bundle" in body:
        bundle: ResolveBundle = _validate(ResolveBundle, body)
        target = build_target("b", bundle.bundle.engine_mapping(), settings, ("body", "bundle"))
    else:
        spec: InitSpec = _validate(InitSpec, body)
        target = build_target("t", spec.engine_mapping(), settings, ("body",))
    return Resolved.model_validate(target.resolved())
