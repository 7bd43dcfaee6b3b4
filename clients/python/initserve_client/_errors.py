"""Typed exceptions. API errors carry the server's RFC 9457 problem details (field ``loc`` and rule).

The mapping from a response to an exception is pure (:func:`error_from_response`), so the sync and
async clients raise exactly the same errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CacheError",
    "CorruptedDownloadError",
    "FieldError",
    "InitserveError",
    "IntegrityError",
    "InvalidSpecError",
    "MissingDependencyError",
    "NotFoundError",
    "OfflineError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "RetriesExhaustedError",
    "SafetensorsFormatError",
    "ServiceUnavailableError",
    "TooLargeError",
    "TransportError",
    "error_from_response",
    "format_loc",
]


class InitserveError(Exception):
    """Base class of every error raised by :mod:`initserve_client`."""


class MissingDependencyError(InitserveError, ImportError):
    """An optional dependency is needed for this call; the message names the extra to install."""


class SafetensorsFormatError(InitserveError, ValueError):
    """A safetensors buffer is malformed (the message names the offending field)."""


class IntegrityError(InitserveError):
    """Downloaded or cached bytes do not match their expected size or sha256."""


class CorruptedDownloadError(IntegrityError):
    """The bytes received do not match the server's authoritative digest (changed in transit)."""


class CacheError(InitserveError):
    """The disk cache could not be used (permissions, lock timeout with no way forward, ...)."""


class OfflineError(InitserveError):
    """Offline mode is on and the requested tensor is not in the cache."""


class TransportError(InitserveError):
    """The server could not be reached or the connection broke (after retries, if any)."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a problem's ``errors`` list: where (``loc``) and which rule (``msg``)."""

    loc: tuple[str | int, ...]
    msg: str

    def __str__(self) -> str:
        where = format_loc(self.loc)
        # The server's rules usually name the field already ("shape[1] must be ≥ 0"): don't say it twice.
        return f"{where}: {self.msg}" if where and not self.msg.startswith(where) else self.msg


def format_loc(loc: Sequence[str | int]) -> str:
    """``("body", "shape", 1)`` → ``"shape[1]"``; the leading ``body`` says nothing to a caller."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class APIError(InitserveError):
    """The server answered with an error status. ``problem`` is its problem+json body (or a stand-in)."""

    def __init__(self, status: int, problem: Mapping[str, Any], *, method: str = "", url: str = "") -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.method = method
        self.url = url
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        self.errors: list[FieldError] = _field_errors(problem.get("errors"))
        super().__init__(self._message())

    @property
    def slug(self) -> str:
        """The last part of the problem type, e.g. ``invalid-spec``."""
        return self.type.rsplit(":", 1)[-1]

    def _message(self) -> str:
        head = f"{self.status} {self.slug}" if self.type != "about:blank" else f"{self.status} {self.title}"
        where = f" ({self.method} {self.url})" if self.method else ""
        body = "; ".join(str(e) for e in self.errors) if self.errors else (self.detail or self.title)
        return f"{head}{where}: {body}"


class BadRequestError(APIError):
    """400: malformed JSON or an invalid tensor token."""


class AuthenticationError(APIError):
    """401: the server needs an API key (``api_key=`` or ``INITSERVE_API_KEY``) or rejected it."""


class NotFoundError(APIError):
    """404: unknown route or scheme."""


class TooLargeError(APIError):
    """413: the tensor, bundle or request body exceeds the server's limits."""


class RangeNotSatisfiableError(APIError):
    """416: a byte range outside the file."""


class InvalidSpecError(APIError, ValueError):
    """422: the spec is invalid; ``errors`` names each field and the rule it breaks."""


class _RetryableAPIError(APIError):
    @property
    def retry_after(self) -> str | None:
        value = self.problem.get("_retry_after")
        return None if value is None else str(value)


class RateLimitedError(_RetryableAPIError):
    """429: too many requests; the server's ``Retry-After`` is in :attr:`retry_after`."""


class ServiceUnavailableError(_RetryableAPIError):
    """503: the server is saturated; the server's ``Retry-After`` is in :attr:`retry_after`."""


class RetriesExhaustedError(InitserveError):
    """Every attempt failed with a retryable error; ``last_error`` is the final one."""

    def __init__(self, what: str, attempts: int, last_error: BaseException) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"{what} failed after {attempts} attempt(s); last error: {_describe(last_error)}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: TooLargeError,
    416: RangeNotSatisfiableError,
    422: InvalidSpecError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def _field_errors(raw: object) -> list[FieldError]:
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        loc_raw = item.get("loc", ())
        loc = tuple(p if isinstance(p, int) else str(p) for p in loc_raw) if isinstance(loc_raw, list) else ()
        out.append(FieldError(loc=loc, msg=str(item.get("msg", ""))))
    return out


def error_from_response(
    status: int,
    content_type: str,
    body: bytes,
    *,
    retry_after: str | None = None,
    method: str = "",
    url: str = "",
) -> APIError:
    """Build the typed error for an error response. Non-problem bodies (a proxy's HTML page) are summarised."""
    problem: dict[str, Any] = {}
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            problem = parsed
    if not problem:
        snippet = body[:200].decode("utf-8", "replace").strip()
        problem = {"title": f"HTTP {status}", "detail": snippet or f"HTTP {status} with an empty body"}
    if retry_after is not None:
        problem["_retry_after"] = retry_after
    cls = _BY_STATUS.get(status, APIError)
    return cls(status, problem, method=method, url=url)
