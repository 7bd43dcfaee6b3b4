"""One router per resource; :data:`ROUTERS` is what the app includes."""

from __future__ import annotations

from initserve.api.routes import bundle, health, init, resolve, schemes, tensors

ROUTERS = (init.router, bundle.router, resolve.router, tensors.router, schemes.router, health.router)
