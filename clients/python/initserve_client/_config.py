"""Client configuration: explicit arguments win, then ``INITSERVE_*`` environment variables, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import platformdirs

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_COMPUTE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "ClientConfig",
    "default_cache_dir",
    "resolve_config",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# Generation streams: the first byte comes quickly, so a read timeout bounds a stalled server,
# not a large tensor.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Answers the server computes whole before sending a byte (?format=stats, /v1/diagnose): the read
# waits for the whole computation — seconds to minutes on a busy machine — not for a stalled stream.
DEFAULT_COMPUTE_TIMEOUT = 1800.0
# Below this size a progress bar is noise.
DEFAULT_PROGRESS_THRESHOLD = 64 << 20
# Ranges only pay off for large bodies; below this a single stream is used.
DEFAULT_PARALLEL_THRESHOLD = 64 << 20

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``INITSERVE_CACHE_DIR`` or the platform's user cache dir (``~/.cache/initserve`` on Linux)."""
    env = os.environ if env is None else env
    configured = env.get("INITSERVE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("initserve", appauthor=False))


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to know that does not change per call."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    compute_timeout: httpx.Timeout  # the timeout of requests answered only once computed (stats, diagnose)
    cache_dir: Path | None  # None: caching disabled
    offline: bool
    retries: int  # total attempts per request, ≥ 1
    progress: bool | None  # None: automatic (terminal attached and body above the threshold)
    parallel: int  # byte-range connections per large download, ≥ 1
    lock_timeout: float
    progress_threshold: int = DEFAULT_PROGRESS_THRESHOLD
    parallel_threshold: int = DEFAULT_PARALLEL_THRESHOLD
    # Where base_url and offline came from, for messages that name the setting actually used.
    base_url_source: str = "the default"
    offline_source: str = "off"


def resolve_config(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | httpx.Timeout | None = None,
    compute_timeout: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    offline: bool | None = None,
    retries: int = 5,
    progress: bool | None = None,
    parallel: int = 1,
    lock_timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Merge arguments with the environment. Raises ``ValueError`` naming the bad setting."""
    env = os.environ if env is None else env
    url = (base_url or env.get("INITSERVE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if base_url:
        url_source = "base_url="
    elif env.get("INITSERVE_URL"):
        url_source = "INITSERVE_URL"
    else:
        url_source = f"the default, {DEFAULT_BASE_URL}; set INITSERVE_URL or base_url= for another"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    if retries < 1:
        raise ValueError(f"retries is the total number of attempts and must be ≥ 1, got {retries}")
    if parallel < 1:
        raise ValueError(f"parallel must be ≥ 1, got {parallel}")
    if timeout is None:
        env_timeout = env.get("INITSERVE_TIMEOUT")
        if env_timeout:
            try:
                seconds = float(env_timeout)
            except ValueError:
                raise ValueError(f"INITSERVE_TIMEOUT must be a number of seconds, got {env_timeout!r}") from None
            resolved_timeout = httpx.Timeout(seconds)
        else:
            resolved_timeout = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        resolved_timeout = timeout
    else:
        resolved_timeout = httpx.Timeout(timeout)
    seconds_read = resolved_timeout.read
    if seconds_read is not None and not seconds_read > 0:  # -1 or NaN would fail every read at once
        raise ValueError(f"timeout must be a number of seconds > 0, got {seconds_read!r}")
    if compute_timeout is None:
        env_compute = env.get("INITSERVE_COMPUTE_TIMEOUT")
        try:
            compute_timeout = float(env_compute) if env_compute else DEFAULT_COMPUTE_TIMEOUT
        except ValueError:
            raise ValueError(f"INITSERVE_COMPUTE_TIMEOUT must be a number of seconds, got {env_compute!r}") from None
    if not compute_timeout > 0:  # also refuses NaN
        raise ValueError(f"compute_timeout must be a number of seconds > 0, got {compute_timeout!r}")
    # Connecting and sending are as quick as for any request; only the wait for the answer is longer.
    resolved_compute = httpx.Timeout(
        compute_timeout, connect=resolved_timeout.connect, write=resolved_timeout.write, pool=resolved_timeout.pool
    )
    if offline is None:
        offline = bool(_env_bool(env, "INITSERVE_OFFLINE"))
        offline_source = f"INITSERVE_OFFLINE={env.get('INITSERVE_OFFLINE')}" if offline else "off"
    else:
        offline_source = "offline=True" if offline else "off"
    if progress is None and _env_bool(env, "INITSERVE_PROGRESS") is False:
        progress = False
    resolved_cache: Path | None = None
    if cache:
        resolved_cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(env)
    return ClientConfig(
        base_url=url,
        api_key=api_key if api_key is not None else (env.get("INITSERVE_API_KEY") or None),
        timeout=resolved_timeout,
        compute_timeout=resolved_compute,
        cache_dir=resolved_cache,
        offline=offline,
        retries=retries,
        progress=progress,
        parallel=parallel,
        lock_timeout=lock_timeout,
        base_url_source=url_source,
        offline_source=offline_source,
    )
