"""RFC 9457 problem details: the one shape every error response of the service takes.

A problem body is ``{"type": "urn:initserve:problem:<slug>", "title", "status", "detail",
"instance", "errors": [{"loc": [...], "msg": "..."}]}`` served as ``application/problem+json``.
Routes raise :class:`ProblemError`; the handlers installed by :func:`install_problem_handlers`
turn it, pydantic validation errors, framework HTTP errors and anything unexpected into such
bodies. Nothing internal (tracebacks, exception text) ever reaches a client.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from initserve.api.methods import allowed_methods
from initserve.engine.strict_json import DuplicateKeyError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:initserve:problem:"

logger = logging.getLogger("initserve.api")

Loc = tuple[str | int, ...]

TITLES: dict[str, str] = {
    "malformed-json": "Malformed JSON",
    "invalid-spec": "Invalid spec",
    "invalid-token": "Invalid tensor token",
    "unauthorized": "Unauthorized",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "not-acceptable": "Not acceptable",
    "too-large": "Too large",
    "range-not-satisfiable": "Range not satisfiable",
    "headers-too-large": "Request header fields too large",
    "uri-too-long": "URI too long",
    "request-timeout": "Request timeout",
    "unsupported-media-type": "Unsupported media type",
    "rate-limited": "Too many requests",
    "saturated": "Service saturated",
    "internal-error": "Internal error",
    "bad-request": "Bad request",
}

_SLUG_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "too-large",
    415: "unsupported-media-type",
    416: "range-not-satisfiable",
    422: "invalid-spec",
    429: "rate-limited",
    503: "saturated",
}


class FieldProblem(BaseModel):
    """One offending field: where it is (``loc``, from the request root) and which rule it broke."""

    loc: list[str | int] = Field(examples=[["body", "shape", 1]])
    msg: str = Field(examples=["shape[1] must be ≥ 0, got -3"])


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(examples=["urn:initserve:problem:invalid-spec"])
    title: str = Field(examples=["Invalid spec"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["shape[1] must be ≥ 0, got -3"])
    instance: str | None = Field(None, examples=["/v1/init"])
    errors: list[FieldProblem] = Field(default_factory=list)


class ProblemError(Exception):
    """Raised anywhere in the service to answer with a problem body."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: Sequence[tuple[Loc, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = [(tuple(loc), msg) for loc, msg in errors]
        self.headers = dict(headers or {})


MAX_LISTED_ERRORS = 50  # entries of a problem's ``errors``: enough to fix a request, bounded whatever it held


def errors_detail(errors: Sequence[tuple[Loc, str]]) -> str:
    """A problem's ``detail`` for its ``errors``: the first five messages, and "…" when there are more."""
    return "; ".join(msg for _, msg in errors[:5]) + ("; …" if len(errors) > 5 else "")


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[tuple[Loc, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build the ``application/problem+json`` response for one problem; ``errors`` beyond
    :data:`MAX_LISTED_ERRORS` are counted in ``detail``, not listed (a 1 MiB body of 60,000 unknown keys
    was answered with 5 MiB of errors)."""
    if len(errors) > MAX_LISTED_ERRORS:
        detail += f" ({len(errors):,} errors; the first {MAX_LISTED_ERRORS} are listed)"
        errors = errors[:MAX_LISTED_ERRORS]
    body = Problem(
        type=TYPE_PREFIX + slug,
        title=TITLES.get(slug, slug.replace("-", " ").capitalize()),
        status=status,
        detail=detail,
        instance=instance,
        errors=[FieldProblem(loc=list(loc), msg=msg) for loc, msg in errors],
    )
    return ProblemResponse(
        body.model_dump(), status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


class ProblemResponse(JSONResponse):
    """JSON that survives any string a client sent: a lone surrogate (``"\\ud800"`` is valid JSON, and
    ends up in ``loc`` or in a message) is written as its JSON escape instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def field_path(loc: Loc) -> str:
    """``("body", "shape", 1)`` → ``"shape[1]"``; ``("body", "params", "std")`` → ``"params.std"``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _short(value: Any, limit: int = 60) -> str:
    """The value the caller sent, as the JSON it was (``null``, ``"2"``, ``{"a": 1}``), never a Python
    repr (``None``, ``'2'``, ``{'a': 1}``); cut to ``limit`` characters. Encoded piece by piece and
    stopped at the limit, so a 1 MiB object costs what its first 60 characters cost."""
    if isinstance(value, bool):
        return "a boolean"
    text = ""
    try:
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(value):  # lazy for arrays and objects
            text += piece
            if len(text) > limit:
                break
    except (TypeError, ValueError):  # not from a JSON body (bytes of a malformed one, say)
        text = repr(value)[: limit + 1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.cache
def _param_names() -> frozenset[str]:
    """Every parameter name of every scheme: a top-level key among them belongs under ``params``."""
    from initserve.engine import CATALOG

    return frozenset(param.name for scheme in CATALOG.values() for param in scheme.params)


def describe_validation_error(error: Mapping[str, Any]) -> tuple[Loc, str]:
    """Turn one pydantic error into ``(loc, "<field> <rule>, got <value>")``.

    The message always starts with the field path so that it stands alone in a log line.
    """
    loc: Loc = tuple(error.get("loc", ()))
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    shown = _short(error.get("input"))  # once: every rule below shows the same value
    path = field_path(loc)
    rules = {
        "missing": "is required",
        "extra_forbidden": "is not a known field (unknown keys are rejected)",
        "greater_than_equal": f"must be ≥ {ctx.get('ge')}, got {shown}",
        "greater_than": f"must be > {ctx.get('gt')}, got {shown}",
        "less_than_equal": f"must be ≤ {ctx.get('le')}, got {shown}",
        "less_than": f"must be < {ctx.get('lt')}, got {shown}",
        "int_type": f"must be an integer, got {shown}",
        "float_type": f"must be a number, got {shown}",
        "finite_number": f"must be a finite number, got {shown}",
        "string_type": f"must be a string, got {shown}",
        "list_type": f"must be an array, got {shown}",
        "tuple_type": f"must be an array, got {shown}",
        "dict_type": f"must be an object, got {shown}",
        "model_type": f"must be an object, got {shown}",
        "model_attributes_type": f"must be a JSON object, got {shown}",
        "literal_error": f"must be one of {ctx.get('expected')}, got {shown}",
        "too_long": f"must have at most {ctx.get('max_length')} items",
        "too_short": f"must have at least {ctx.get('min_length')} items",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "string_too_short": f"must be at least {ctx.get('min_length')} characters",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}, got {shown}",
    }
    if kind == "extra_forbidden" and isinstance(loc[-1] if loc else None, str) and str(loc[-1]) in _param_names():
        rules[kind] += f'; scheme parameters go under `params`, e.g. {{"params": {{"{loc[-1]}": {shown}}}}}'
    rule = rules.get(kind)
    if rule is None:
        msg = str(error.get("msg", "is invalid"))
        rule = msg[:1].lower() + msg[1:]
    return loc, f"{path} {rule}"


def repeated_keys_problem(exc: DuplicateKeyError, root: Loc) -> ProblemError:
    """The 422 for JSON that repeats a key, one error per repeated key at ``(*root, *object path, key)``:
    ``params.std: key 'std' appears twice in body.params; …`` (``root`` ``("body",)`` or ``("path", "token")``)."""
    errors = []
    for repeat in exc.repeats:
        loc = (*root, *repeat.key_loc)
        errors.append((loc, f"{field_path(loc)}: {repeat.rule(str(root[-1]))}"))
    shown = errors[:5]
    detail = "; ".join(msg for _, msg in shown)
    if exc.total > len(shown):
        detail += f"; and {exc.total - len(shown)} more repeated key(s)"
    return ProblemError(422, "invalid-spec", detail, errors=errors)


def problem_of(exc: ProblemError, path: str) -> JSONResponse:
    """The problem+json response for ``exc`` raised while serving ``path``."""
    return problem_response(exc.status, exc.slug, exc.detail, instance=path, errors=exc.errors, headers=exc.headers)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_of(exc, request.url.path)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    malformed = [e for e in raw if e.get("type") == "json_invalid"]
    sent_type = request.scope.get("state", {}).get("sent_content_type")
    if malformed:
        ctx = malformed[0].get("ctx") or {}
        pos = malformed[0].get("loc", ("body", 0))[-1]
        msg = f"body is not valid JSON: {ctx.get('error', 'decode error')} at character {pos}"
        if sent_type is not None:
            msg += f" (it came with Content-Type {sent_type}; this API takes a JSON body)"
        return problem_response(400, "malformed-json", msg, instance=request.url.path, errors=[(("body",), msg)])
    not_json = [e for e in raw if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes)]
    if not_json:
        media = request.headers.get("content-type", "none")
        msg = (
            f"body must be JSON sent with Content-Type: application/json; it came as {media} "
            "(with curl: -H 'Content-Type: application/json' --data '{...}')"
        )
        return problem_response(
            415, "unsupported-media-type", msg, instance=request.url.path, errors=[(("header", "content-type"), msg)]
        )
    # Described up to the listed bound (problem_response counts the rest): 60,000 unknown keys cost no more.
    errors = [describe_validation_error(e) for e in raw[:MAX_LISTED_ERRORS]]
    errors += [(tuple(e.get("loc", ())), "") for e in raw[MAX_LISTED_ERRORS:]]
    return problem_response(422, "invalid-spec", errors_detail(errors), instance=request.url.path, errors=errors)


# FastAPI answers a body that json.loads rejects with anything but JSONDecodeError (bytes that are not
# UTF-8, an integer over 4,300 digits, nesting past the recursion limit, a repeated key) with this
# plain 400; the cause is kept in __cause__.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _body_parse_problem(request: Request, cause: BaseException | None) -> JSONResponse:
    if isinstance(cause, DuplicateKeyError):  # raised by UniqueKeysRequest.json() (api/json_body.py)
        return problem_of(repeated_keys_problem(cause, ("body",)), request.url.path)
    if isinstance(cause, UnicodeDecodeError):
        reason = f"body is not UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "body is nested too deeply"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        reason = "body holds an integer of more than 4,300 digits"
    else:
        reason = "body cannot be parsed"
    msg = f"body is not valid JSON: {reason}"
    return problem_response(400, "malformed-json", msg, instance=request.url.path, errors=[(("body",), msg)])


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        return _body_parse_problem(request, exc.__cause__)
    slug = _SLUG_BY_STATUS.get(exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error")
    detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(slug, "error")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request.app, request.scope) or headers.get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
    return problem_response(exc.status_code, slug, detail, instance=request.url.path, headers=headers)


async def _on_unexpected(request: Request, _exc: Exception) -> JSONResponse:
    # Log the traceback for operators; tell the client only that it was our fault.
    request_id = request.scope.get("state", {}).get("request_id", "")
    logger.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
    detail = "internal error" + (f"; request id {request_id}" if request_id else "")
    return problem_response(500, "internal-error", detail, instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error the app can raise to a problem+json response."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
