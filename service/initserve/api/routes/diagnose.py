"""``POST /v1/diagnose``: predicted vs measured signal propagation, per scheme (JSON).

Thin: validate, bound (413 before any work), take a generation slot (503 when none), run the engine's
diagnosis in a worker thread, and stop it between layers when the client goes away.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, Request
from starlette.responses import JSONResponse

from initserve.api.diagnose_models import DIAGNOSE_EXAMPLES, DiagnoseRequestBody
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.openapi import problems
from initserve.api.problems import ProblemError
from initserve.api.security import ApiKey
from initserve.api.serving import acquire_slot, json_safe
from initserve.api.settings import Settings
from initserve.engine import Kernel, SpecError
from initserve.engine.diagnose import Cancelled, LimitExceeded, diagnose, parse_diagnose
from initserve.engine.diagnose.request import DiagnoseRequest

router = APIRouter(prefix="/v1", tags=["diagnose"], dependencies=[ApiKey], route_class=UniqueKeysRoute)

DISCONNECT_POLL_SECONDS = 0.1
_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The diagnosis.", "content": {"application/json": {"schema": {"type": "object"}}}}
}


def _problem(exc: SpecError) -> ProblemError:
    errors = [(("body", *error.loc), error.msg) for error in exc.errors]
    detail = "; ".join(error.render() for error in exc.errors[:5])
    if isinstance(exc, LimitExceeded):
        return ProblemError(413, "too-large", detail, errors=errors)
    return ProblemError(422, "invalid-spec", detail, errors=errors)


def _run(request: DiagnoseRequest, stop: threading.Event, kernel: Kernel, threads: int | None) -> dict[str, Any]:
    def check() -> None:
        if stop.is_set():
            raise Cancelled

    return diagnose(request, check=check, kernel=kernel, threads=threads)


@router.post("/diagnose", responses={**_RESPONSE, **problems(400, 401, 413, 422, 503)})
async def diagnose_route(
    request: Request, body: Annotated[DiagnoseRequestBody, Body(openapi_examples=DIAGNOSE_EXAMPLES)]
) -> JSONResponse:
    """Per scheme and layer: predicted (mean field) and measured pre-activation std, mean, dead and
    saturated units, a symmetric-log histogram, gradient std, effective rank; overall χ₁, depth scale,
    Jacobian spectrum and a verdict. See docs/diagnose.md."""
    settings: Settings = request.app.state.settings
    try:
        parsed = parse_diagnose(body.engine_mapping(), settings.diagnose_limits)
    except SpecError as exc:
        raise _problem(exc) from exc
    slot = acquire_slot(request)
    stop = threading.Event()
    result: dict[str, Any] = {}
    try:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while not await request.is_disconnected():
                    await anyio.sleep(DISCONNECT_POLL_SECONDS)
                stop.set()

            group.start_soon(watch)
            try:
                result = await anyio.to_thread.run_sync(
                    partial(_run, parsed, stop, request.app.state.kernel, settings.generation_threads),
                    limiter=request.app.state.cpu_limiter,
                    abandon_on_cancel=False,
                )
            except Cancelled:
                stop.set()
            group.cancel_scope.cancel()
    finally:
        stop.set()
        slot.release()
    if not result:  # the client went away: nobody reads this
        return JSONResponse({}, status_code=499)
    return JSONResponse(json_safe(result))
