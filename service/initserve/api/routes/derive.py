"""``POST /v1/derive`` and ``GET|HEAD /v1/derived/{token}``: a model derived from stored checkpoints.

The answer is a safetensors file computed tensor by tensor as it streams (only the tensors a range
overlaps are computed). Its stateless URL is ``/v1/derived/d.<token>`` (:mod:`..derive_tokens`): the request
names its sources by content digest, so the URL determines the bytes on every replica, like a tensor URL.
Derived files are read access (the read rule); they need the checkpoints to be in this service's store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Path, Request
from starlette.responses import Response

from initserve.api.checkpoint_access import checkpoints, store_problem
from initserve.api.derive_tokens import InvalidDeriveToken, decode_token, encode_token
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.limits import GenerationLimiter
from initserve.api.openapi import SAFETENSORS_BODY, problems
from initserve.api.problems import PROBLEM_MEDIA_TYPE, ProblemError, field_path, repeated_keys_problem
from initserve.api.security import ApiKey
from initserve.api.settings import Settings
from initserve.api.stored_files import immutable_headers, not_modified, serve_file
from initserve.engine.derive import DERIVE_ALGORITHM, DerivedFile, plan_derive
from initserve.engine.derive_rules import parse_derive
from initserve.engine.errors import SpecError, SpecTooLarge
from initserve.engine.kernels import Kernel
from initserve.engine.strict_json import DuplicateKeyError
from initserve.store import Checkpoints, StoreError

router = APIRouter(prefix="/v1", tags=["derive"], dependencies=[ApiKey], route_class=UniqueKeysRoute)
_STORE_FAULT: dict[int | str, dict[str, Any]] = {
    500: {
        "description": "A stored object failed verification.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}
DERIVED_PATH = "/v1/derived/"

EXAMPLE = {
    "source": "0" * 64,
    "target": {
        "seed": 7,
        "tensors": {
            "bert.embeddings.word_embeddings.weight": {"shape": [30622, 768], "dtype": "float32"},
            "classifier.weight": {"shape": [5, 768], "dtype": "float32"},
            "classifier.bias": {"shape": [5], "dtype": "float32"},
        },
    },
    "rules": [
        {"match": "*word_embeddings.weight", "action": "mean_rows", "noise": 3.1623e-5},
        {"match": "classifier.weight", "action": "reinit", "scheme": "normal", "params": {"std": 0.02}},
        {"match": "classifier.bias", "action": "reinit", "scheme": "zeros"},
        {"match": "*", "action": "copy"},
    ],
}


def _spec_problem(exc: SpecError, prefix: tuple[str, ...]) -> ProblemError:
    errors = [((*prefix, *e.loc), e.msg) for e in exc.errors]
    detail = "; ".join(
        msg if msg.startswith(field_path(loc)) else f"{field_path(loc)}: {msg}" for loc, msg in errors[:5]
    )
    if isinstance(exc, SpecTooLarge):
        return ProblemError(413, "too-large", detail, errors=errors)
    return ProblemError(422, "invalid-spec", detail, errors=errors)


def _plan(store: Checkpoints, body: dict[str, Any], settings: Settings, prefix: tuple[str, ...]) -> DerivedFile:
    """Validate, load the manifests, plan (blocking: reads manifests from the store)."""
    try:
        request = parse_derive(body)
    except SpecError as exc:
        raise _spec_problem(exc, prefix) from exc
    manifests = {}
    for digest in request.checkpoints():
        manifest = store.manifest(digest)
        if manifest is None:
            loc = (*prefix, "source") if digest == request.source else (*prefix, "rules")
            msg = f"no checkpoint {digest} in the store: upload it with POST /v1/checkpoints"
            raise ProblemError(422, "invalid-spec", msg, errors=[(loc, msg)])
        manifests[digest] = store.derive_view(manifest)
    try:
        return plan_derive(request, manifests, max_bytes=settings.max_bytes, measure=store.measure)
    except SpecError as exc:
        raise _spec_problem(exc, prefix) from exc


class DerivedSource:
    """The :class:`ByteSource` the streaming response reads: tensors computed from verified store reads."""

    def __init__(self, file: DerivedFile, store: Checkpoints) -> None:
        self.file, self.store = file, store
        self.total_length = file.total_length

    def iter_bytes(
        self, start: int = 0, stop: int | None = None, *, kernel: Kernel | None = None, threads: int | None = None
    ) -> Iterator[memoryview]:
        return self.file.iter_bytes_with(self.store.tensor_bytes, start, stop, kernel=kernel)


async def _serve(request: Request, body: dict[str, Any], prefix: tuple[str, ...], *, conditional: bool) -> Response:
    settings: Settings = request.app.state.settings
    store = await checkpoints(request)
    try:
        file = await anyio.to_thread.run_sync(_plan, store, body, settings, prefix)
    except (StoreError, OSError) as exc:
        raise store_problem(exc) from exc
    token = encode_token(file.canonical_json)
    location = DERIVED_PATH + token if len(token) <= settings.max_token_length else None
    headers = immutable_headers(file.digest, location, {"X-Initserve-Algorithm": str(DERIVE_ALGORITHM)})
    request.state.etag = headers["ETag"]
    if conditional:
        cached = not_modified(request, headers)
        if cached is not None:
            return cached
    slot = None
    if request.method != "HEAD":
        limiter: GenerationLimiter = request.app.state.limiter
        slot = limiter.try_acquire()
    return serve_file(request, DerivedSource(file, store), file.digest, headers, ranges_allowed=conditional, slot=slot)


@router.post(
    "/derive",
    response_class=Response,
    responses={
        200: {"description": "The derived model.", "content": SAFETENSORS_BODY},
        **problems(400, 401, 413, 422, 503),
        **_STORE_FAULT,
    },
)
async def derive(
    request: Request, body: Annotated[dict[str, Any], Body(openapi_examples={"bert": {"value": EXAMPLE}})]
) -> Response:
    """Derive a model from stored checkpoints by ordered rules (docs/pretrained.md); streamed safetensors."""
    return await _serve(request, body, ("body",), conditional=False)


async def derived(
    request: Request, token: Annotated[str, Path(description="`d.` + base64url of the canonical derive request.")]
) -> Response:
    """The derived file a token denotes; honours If-None-Match, Range and If-Range."""
    settings: Settings = request.app.state.settings
    try:
        body = decode_token(token, settings.max_token_length)
    except InvalidDeriveToken as exc:
        raise ProblemError(400, "invalid-token", str(exc), errors=[(("path", "token"), str(exc))]) from exc
    except DuplicateKeyError as exc:
        raise repeated_keys_problem(exc, ("path", "token")) from exc
    return await _serve(request, body, ("path", "token"), conditional=True)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The derived model.", "content": SAFETENSORS_BODY},
    206: {"description": "One range, or several as multipart/byteranges."},
    304: {"description": "Not modified."},
    **problems(400, 401, 413, 416, 422, 503),
    **_STORE_FAULT,
}
for _method, _name in (("GET", "get_derived"), ("HEAD", "head_derived")):
    router.add_api_route(
        "/derived/{token}", derived, methods=[_method], name=_name, response_class=Response, responses=_RESPONSES
    )
