"""One router per resource; :data:`ROUTERS` is what the app includes."""

from __future__ import annotations

from initserve.api.routes import bundle, checkpoints, derive, diagnose, health, init, resolve, schemes, tensors, ui

ROUTERS = (
    init.router,
    bundle.router,
    resolve.router,
    tensors.router,
    schemes.router,
    diagnose.router,
    ui.router,
    health.router,
    checkpoints.router,
    derive.router,
)
