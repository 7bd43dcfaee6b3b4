"""OpenAPI plumbing: problem+json error responses and binary bodies, declared once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from initserve.api.models import MAX_DIM, MAX_SEED, BundleStats, FileDigest, ResolveBundle, Stats
from initserve.api.problems import PROBLEM_MEDIA_TYPE, TITLES, FieldProblem, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    413: "too-large",
    416: "range-not-satisfiable",
    422: "invalid-spec",
    503: "saturated",
}

SAFETENSORS_BODY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_DIGEST_REF = {"$ref": "#/components/schemas/FileDigest"}
# application/json is the statistics (?format=stats or Accept) or the digest (?format=digest).
STATS_BODY = {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Stats"}, _DIGEST_REF]}}}
BUNDLE_STATS_BODY = {
    "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/BundleStats"}, _DIGEST_REF]}}
}
ANY_STATS_BODY = {
    "application/json": {
        "schema": {
            "oneOf": [
                {"$ref": "#/components/schemas/Stats"},
                {"$ref": "#/components/schemas/BundleStats"},
                _DIGEST_REF,
            ]
        }
    }
}
# pydantic writes integer bounds as floats (9.223372036854776e+18); the schema should say the exact ints.
_EXACT_INTS = {float(value): value for value in (MAX_DIM, MAX_SEED)}
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error statuses, each an ``application/problem+json`` body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": TITLES[_SLUGS[status]],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
        }
        if status == 503:
            entry["headers"] = RETRY_AFTER
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}}
        out[status] = entry
    return out


def install_openapi(app: FastAPI) -> None:
    """Generate the schema once, adding the problem models that responses reference by ``$ref``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, FieldProblem, ResolveBundle, Stats, BundleStats, FileDigest):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in model_schema.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components.setdefault(model.__name__, model_schema)
            _exact_integer_bounds(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _exact_integer_bounds(node: Any) -> None:
    """Integral float bounds become ints, restoring the exact value where rounding lost it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = _EXACT_INTS.get(value, int(value))
            else:
                _exact_integer_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _exact_integer_bounds(item)
