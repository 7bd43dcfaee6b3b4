"""The service's checkpoint store, opened on first use, and the HTTP problems its failures become."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio.to_thread
import platformdirs
from fastapi import Request
from pydantic import SecretStr

from initserve.api.problems import ProblemError
from initserve.api.settings import Settings
from initserve.engine.checkpoint import is_digest
from initserve.store import BlobCorrupt, Checkpoints, StoreError, open_store

_lock = threading.Lock()


def default_store_dir() -> Path:
    return Path(platformdirs.user_data_dir("initserve")) / "checkpoints"


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _open(request: Request) -> Checkpoints:
    state = request.app.state
    with _lock:
        existing: Checkpoints | None = getattr(state, "checkpoints", None)
        if existing is None:
            settings: Settings = state.settings
            store = open_store(
                settings.store or "",
                default_dir=default_store_dir(),
                endpoint_url=settings.store_endpoint_url or None,
                region=settings.store_region or None,
                access_key_id=_secret(settings.store_access_key_id),
                secret_access_key=_secret(settings.store_secret_access_key),
            )
            existing = state.checkpoints = Checkpoints(store)
        return existing


async def checkpoints(request: Request) -> Checkpoints:
    """The store (opening it may touch the disk or the network, so it happens in a worker thread)."""
    existing: Checkpoints | None = getattr(request.app.state, "checkpoints", None)
    if existing is not None:
        return existing
    try:
        return await anyio.to_thread.run_sync(_open, request)
    except (StoreError, OSError, ValueError) as exc:
        raise store_problem(exc) from exc


def store_problem(exc: Exception) -> ProblemError:
    """A store failure as a problem: corruption is 500 ``storage-corrupt``, anything else 503."""
    if isinstance(exc, BlobCorrupt):
        return ProblemError(
            500,
            "storage-corrupt",
            f"{exc}; it was set aside — upload the checkpoint again to restore it",
        )
    return ProblemError(
        503,
        "store-unavailable",
        f"the checkpoint store is unavailable: {type(exc).__name__}",
        headers={"Retry-After": "5"},
    )


def check_digest(value: str, loc: tuple[str | int, ...]) -> str:
    if not is_digest(value):
        msg = f"{loc[-1]} must be a digest of 64 lowercase hex characters, got {value[:80]!r}"
        raise ProblemError(422, "invalid-spec", msg, errors=[(loc, msg)])
    return value
