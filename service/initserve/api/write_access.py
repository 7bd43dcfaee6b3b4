"""Write permission: who may add to the checkpoint store (``POST /v1/checkpoints``).

The rule: with no key configured at all (neither ``INITSERVE_API_KEYS`` nor ``INITSERVE_WRITE_API_KEYS``)
the service is open and anyone may write — it binds to loopback by default. With any key configured, a
write needs a key from ``INITSERVE_WRITE_API_KEYS``: none or an unknown key → 401, a read-only key → 403.
Keys are matched as :mod:`initserve.api.security` matches them (constant time, never logged).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from initserve.api.problems import ProblemError
from initserve.api.security import _bearer, _header, key_invalid, key_matches, key_required
from initserve.api.settings import Settings


async def require_write_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> None:
    """FastAPI dependency implementing the rule in the module docstring."""
    settings: Settings = request.app.state.settings
    writers = settings.write_key_values
    if not writers and not settings.api_key_values:
        return
    presented = bearer.credentials if bearer is not None else header_key
    if presented is None:
        raise key_required("writing needs an API key with write permission: send 'Authorization: Bearer <key>'")
    if key_matches(presented, writers):
        return
    if key_matches(presented, settings.api_key_values):
        raise ProblemError(
            403,
            "forbidden",
            "this API key may read but not write; writes need a key from INITSERVE_WRITE_API_KEYS",
        )
    raise key_invalid()


WriteKey = Depends(require_write_key)
