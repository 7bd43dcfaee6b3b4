"""Retry decisions, pure: the sync and async clients ask the same policy and only sleep differently.

A small policy object rather than tenacity: the decision needs the *response* (status and
``Retry-After``) of a request the two clients send with different I/O, and the download loop must
resume a broken stream at a byte offset, which a decorator around a call cannot express.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

__all__ = [
    "COMPUTED",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "is_local_host",
    "is_retryable_exception",
    "parse_retry_after",
    "refused_locally",
]

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

# Errors where the request may not have reached the server or the connection broke: safe to
# repeat because every initserve request is idempotent (POST /v1/init is a pure function of its body).
_RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


# Request extension marking an answer the server computes whole before its first byte (stats, diagnose).
COMPUTED = "initserve.computed"


def is_retryable_exception(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE_EXCEPTIONS) and not refused_locally(exc) and not _computation_timed_out(exc)


def _computation_timed_out(exc: BaseException) -> bool:
    """No answer within ``compute_timeout`` to a request computed whole: a retry would only start the
    same computation again (the server stops the abandoned one)."""
    if not isinstance(exc, httpx.ReadTimeout):
        return False
    try:
        return bool(exc.request.extensions.get(COMPUTED))
    except RuntimeError:  # an exception raised without its request
        return False


def is_local_host(host: str) -> bool:
    """Loopback names and addresses: a refusal there means nothing listens, not a passing fault."""
    return host.lower() in _LOCAL_HOSTS or host.startswith("127.")


def refused_locally(exc: BaseException) -> bool:
    """A connection to a loopback address was refused: no server is listening there, and retrying for
    seconds will not start one. (A refusal by a remote host can be a replica restarting: retried.)"""
    if not isinstance(exc, httpx.ConnectError):
        return False
    try:
        host = exc.request.url.host
    except RuntimeError:  # an exception raised without its request
        return False
    cause: BaseException | None = exc
    refused = False
    while cause is not None and not refused:
        refused = isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower()
        cause = cause.__cause__ or cause.__context__
    return refused and is_local_host(host)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; ``None`` if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():  # str.isdigit is also true for "²" or "٣": only ASCII digits are delta-seconds
        return float(text) if text.isascii() else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, overridden by the server's ``Retry-After``.

    Attempt ``k`` (1-based) that failed waits ``min(max_backoff, base · 2^(k-1)) · U(0.5, 1)`` before the
    next ("equal jitter": never less than half the step, so retries spread without collapsing to 0).
    With a ``Retry-After`` of ``r`` seconds the wait is ``r + U(0, min(1, r/10))``: never earlier than
    told, slightly spread so a fleet of clients does not return in lock-step. A ``Retry-After``
    above ``max_retry_after`` gives up at once: waiting that long is the caller's decision.
    """

    attempts: int = 5
    base: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    retry_on_status: frozenset[int] = RETRYABLE_STATUS
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        step = min(self.max_backoff, self.base * 2.0 ** (attempt - 1))
        return step * (0.5 + 0.5 * self.rng())

    def delay_after_status(self, attempt: int, status: int, retry_after: str | None) -> float | None:
        """Seconds to wait before the next attempt after a response, or ``None`` to stop here."""
        if status not in self.retry_on_status or attempt >= self.attempts:
            return None
        told = parse_retry_after(retry_after)
        if told is None:
            return self.backoff(attempt)
        if told > self.max_retry_after:
            return None
        return told + min(1.0, told / 10.0) * self.rng()

    def delay_after_exception(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before the next attempt after a transport error, or ``None`` to give up."""
        if not is_retryable_exception(exc) or attempt >= self.attempts:
            return None
        return self.backoff(attempt)
