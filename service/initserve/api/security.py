"""Optional API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

When ``INITSERVE_API_KEYS`` is empty the service is open. Otherwise every protected route
needs one of the keys; keys are compared as SHA-256 digests with
:func:`secrets.compare_digest` against *every* configured key, so neither the position of a
mismatch nor which key matched shows in the timing. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from initserve.api.problems import ProblemError

_bearer = HTTPBearer(auto_error=False, description="An API key from INITSERVE_API_KEYS.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from INITSERVE_API_KEYS.")

CHALLENGE = 'Bearer realm="initserve"'


def key_matches(presented: str, configured: tuple[bytes, ...]) -> bool:
    """Constant-time membership test of ``presented`` among ``configured`` keys."""
    probe = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found = False
    for key in configured:
        found |= secrets.compare_digest(probe, hashlib.sha256(key).digest())
    return found


def key_required(detail: str) -> ProblemError:
    """401 with the Bearer challenge, for a request that presents no key (``detail`` says which one)."""
    return ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": CHALLENGE})


def key_invalid() -> ProblemError:
    """401 for a presented key that is not one of the configured keys (RFC 6750 ``invalid_token``)."""
    challenge = CHALLENGE + ', error="invalid_token"'
    return ProblemError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": challenge})


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents, read as the FastAPI security dependencies below read it:
    ``Authorization: Bearer <key>`` (scheme case-insensitive, key stripped) first, else ``X-API-Key``."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            return credentials
    return x_api_key or None


def raw_key_allowed(authorization: bytes, x_api_key: bytes, configured: tuple[bytes, ...]) -> bool:
    """:func:`require_api_key`'s decision on raw ASGI header values (latin-1), for the middlewares that
    answer before routing: True when keys are off or a configured key is presented."""
    if not configured:
        return True
    presented = presented_key(authorization.decode("latin-1"), x_api_key.decode("latin-1"))
    return presented is not None and key_matches(presented, configured)


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> None:
    """FastAPI dependency: pass when keys are off or a configured key is presented, else 401."""
    configured: tuple[bytes, ...] = request.app.state.settings.read_key_values
    if not configured:
        return
    presented = bearer.credentials if bearer is not None else header_key
    if presented is None:
        raise key_required("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if not key_matches(presented, configured):
        raise key_invalid()


ApiKey = Depends(require_api_key)


def api_key_if(setting: str) -> Callable[..., Awaitable[None]]:
    """A dependency that requires a key only when the boolean setting ``setting`` is on."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_header)],
    ) -> None:
        if getattr(request.app.state.settings, setting):
            await require_api_key(request, bearer, header_key)

    return dependency
