"""``/v1/checkpoints``: upload a safetensors checkpoint, read its manifest and its tensors.

``POST`` streams the body into the store (constant memory; limit ``INITSERVE_MAX_CHECKPOINT_BYTES``,
refused with 413 before anything is kept when the ``Content-Length`` or the file's own header exceeds
it) and answers the manifest: 201 when the checkpoint is new, 200 when the store already had it. Tensor
bytes already in the store are not stored again. Writing needs a key with write permission whenever keys
are configured (:mod:`initserve.api.write_access`); reading follows the read rule of every other route.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from initserve.api.checkpoint_access import check_digest, checkpoints, store_problem
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.openapi import SAFETENSORS_BODY, problems
from initserve.api.problems import PROBLEM_MEDIA_TYPE, ProblemError
from initserve.api.security import ApiKey
from initserve.api.settings import Settings
from initserve.api.stored_files import immutable_headers, not_modified, serve_file
from initserve.api.write_access import WriteKey
from initserve.engine.errors import SpecError, SpecTooLarge
from initserve.engine.kernels import Kernel
from initserve.engine.safetensors import encode_header
from initserve.store import BlobCorrupt, Checkpoints, Ingest, StoreError, manifest_of
from initserve.store.checkpoints import entry_nbytes

router = APIRouter(prefix="/v1", tags=["checkpoints"], route_class=UniqueKeysRoute)
STREAMED_UPLOADS = ("/v1/checkpoints",)
FEED_BYTES = 1 << 20  # body bytes handed to the store per worker-thread step

_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_EXTRA: dict[int | str, dict[str, Any]] = {
    403: {"description": "The key may read but not write.", **_PROBLEM},
    500: {"description": "A stored object failed verification.", **_PROBLEM},
    503: {"description": "The checkpoint store is unavailable.", **_PROBLEM},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such checkpoint or tensor.", **_PROBLEM}}
DigestPath = Annotated[str, Path(description="Checkpoint digest: 64 lowercase hex characters.")]


def _ingest_problem(exc: SpecError) -> ProblemError:
    errors = [(("body", *e.loc[1:]) if e.loc[:1] == ("body",) else ("body", *e.loc), e.msg) for e in exc.errors]
    detail = "; ".join(msg for _, msg in errors[:5])
    close = {"Connection": "close"}  # the rest of the body is not read: the connection cannot be reused
    if isinstance(exc, SpecTooLarge):
        return ProblemError(413, "too-large", f"checkpoint: {detail}", errors=errors, headers=close)
    return ProblemError(
        422, "invalid-checkpoint", f"not a valid safetensors file: {detail}", errors=errors, headers=close
    )


@router.post(
    "/checkpoints",
    dependencies=[WriteKey],
    status_code=201,
    responses={200: {"description": "The store already held this checkpoint."}, **problems(401, 413, 422), **_EXTRA},
    openapi_extra={"requestBody": {"required": True, "content": SAFETENSORS_BODY}},
)
async def upload_checkpoint(request: Request) -> JSONResponse:
    """Store a safetensors file's tensors (deduplicated by content) and answer its manifest."""
    settings: Settings = request.app.state.settings
    limit = settings.max_checkpoint_bytes
    declared_text = request.headers.get("content-length")
    declared = int(declared_text) if declared_text and declared_text.isdigit() else None
    if declared is not None and declared > limit:
        raise _ingest_problem(SpecTooLarge(("body",), declared, limit))
    store = await checkpoints(request)
    ingest = Ingest(store.store, limit, declared)
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= FEED_BYTES:
                block, pending = bytes(pending), bytearray()
                await anyio.to_thread.run_sync(ingest.feed, block)
        if pending:
            await anyio.to_thread.run_sync(ingest.feed, bytes(pending))
        result = ingest.finish()
        manifest = manifest_of(result)
        created = await anyio.to_thread.run_sync(store.keep, manifest)
    except SpecError as exc:
        raise _ingest_problem(exc) from exc
    except (StoreError, OSError) as exc:
        ingest.abort()
        raise store_problem(exc) from exc
    except ClientDisconnect:
        ingest.abort()
        raise
    body = {**manifest, "stored": {"new_tensors": result.new_blobs, "new_bytes": result.new_bytes}}
    location = f"/v1/checkpoints/{manifest['digest']}"
    return JSONResponse(body, status_code=201 if created else 200, headers={"Location": location})


async def _manifest(request: Request, digest: str) -> tuple[Checkpoints, dict[str, Any]]:
    check_digest(digest, ("path", "digest"))
    store = await checkpoints(request)
    try:
        manifest = await anyio.to_thread.run_sync(store.manifest, digest)
    except (StoreError, OSError) as exc:
        raise store_problem(exc) from exc
    if manifest is None:
        msg = f"no checkpoint {digest} in the store"
        raise ProblemError(404, "not-found", msg, errors=[(("path", "digest"), msg)])
    return store, manifest


@router.get("/checkpoints/{digest}", dependencies=[ApiKey], responses={**problems(401, 422), **_NOT_FOUND, **_EXTRA})
async def get_checkpoint(request: Request, digest: DigestPath) -> Response:
    """The manifest: per tensor its digest, dtype, shape and size. Immutable: the digest is its content."""
    headers = immutable_headers(digest, None)
    del headers["Accept-Ranges"]
    cached = not_modified(request, headers)
    if cached is not None:
        return cached
    _, manifest = await _manifest(request, digest)
    return Response(json.dumps(manifest, sort_keys=True), media_type="application/json", headers=headers)


class StoredTensorFile:
    """A one-tensor safetensors file whose data comes from the store: header made here, bytes streamed."""

    def __init__(self, store: Checkpoints, name: str, entry: dict[str, Any]) -> None:
        self.store, self.entry = store, entry
        header: dict[str, Any] = {
            "__metadata__": {"initserve.tensor_digest": entry["digest"]},
            name: {"dtype": entry["dtype"], "shape": entry["shape"], "data_offsets": [0, entry_nbytes(entry)]},
        }
        self.header = encode_header(header)
        self.total_length = len(self.header) + entry_nbytes(entry)

    def iter_bytes(
        self, start: int = 0, stop: int | None = None, *, kernel: Kernel | None = None, threads: int | None = None
    ) -> Iterator[memoryview]:
        stop = self.total_length if stop is None else min(stop, self.total_length)
        head = len(self.header)
        if start < head:
            yield memoryview(self.header)[start : min(stop, head)]
        if stop > head:
            for chunk in self.store.tensor_stream(self.entry, max(start, head) - head, stop - head):
                yield memoryview(chunk)


def tensor_etag(name: str, tensor_digest: str) -> str:
    """The file holds the name and the tensor: its identity is both."""
    return hashlib.sha256(name.encode("utf-8") + b"\x00" + tensor_digest.encode("ascii")).hexdigest()


async def get_tensor(request: Request, digest: DigestPath, name: str) -> Response:
    """One tensor of the checkpoint as a one-tensor safetensors file (ETag, Range, immutable caching)."""
    store, manifest = await _manifest(request, digest)
    entry = manifest["tensors"].get(name)
    if entry is None:
        msg = f"checkpoint {digest} has no tensor {name!r}"
        raise ProblemError(404, "not-found", msg, errors=[(("path", "name"), msg)])
    headers = immutable_headers(
        tensor_etag(name, entry["digest"]), None, {"X-Initserve-Tensor-Digest": entry["digest"]}
    )
    request.state.etag = headers["ETag"]
    cached = not_modified(request, headers)
    if cached is not None:
        return cached
    verify = getattr(store.store, "verify", None)
    if verify is not None and request.method == "GET":
        try:  # a local blob is checked before the status line goes out (once per process and file)
            await anyio.to_thread.run_sync(verify, entry["digest"])
        except (BlobCorrupt, StoreError, OSError) as exc:
            raise store_problem(exc) from exc
    return serve_file(request, StoredTensorFile(store, name, entry), entry["digest"], headers, ranges_allowed=True)


_TENSOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A one-tensor safetensors file.", "content": SAFETENSORS_BODY},
    206: {"description": "One range, or several as multipart/byteranges."},
    304: {"description": "Not modified."},
    **_NOT_FOUND,
    **problems(401, 416, 422),
    **_EXTRA,
}
for _method, _name in (("GET", "get_checkpoint_tensor"), ("HEAD", "head_checkpoint_tensor")):
    router.add_api_route(
        "/checkpoints/{digest}/tensors/{name:path}",
        get_tensor,
        methods=[_method],
        name=_name,
        response_class=Response,
        dependencies=[ApiKey],
        responses=_TENSOR_RESPONSES,
    )
