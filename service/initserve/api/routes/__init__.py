"""One router per resource; :data:`ROUTERS` is what the app includes."""

from __future__ import annotations

from initserve.api.routes import bundle, checkpoints, derive, health, init, resolve, schemes, tensors

ROUTERS = (
    init.router,
    bundle.router,
    resolve.router,
    tensors.router,
    schemes.router,
    health.router,
    checkpoints.router,
    derive.router,
)
