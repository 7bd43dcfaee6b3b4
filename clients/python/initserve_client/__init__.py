"""Python client for initserve: deterministic weight initializations into numpy and torch.

>>> from initserve_client import Client
>>> with Client() as client:                                    # doctest: +SKIP
...     w = client.tensor([256, 128], "kaiming_uniform", seed=42, name="fc.weight")

:class:`LocalClient` has the same methods and generates in-process with the engine the server runs
(bit-identical; numpy only); :func:`init_module` accepts either and fills sharded models rank by rank.

torch helpers (:func:`init_module`, :func:`to_torch`) import torch lazily: the package itself needs
only httpx and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._async_client import AsyncClient
from ._cache import Cache, CacheEntry
from ._client import Client
from ._config import DEFAULT_BASE_URL, default_cache_dir
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CacheError,
    CorruptedDownloadError,
    FieldError,
    InitserveError,
    IntegrityError,
    InvalidSpecError,
    MissingDependencyError,
    NotFoundError,
    OfflineError,
    RangeNotSatisfiableError,
    RateLimitedError,
    RetriesExhaustedError,
    SafetensorsFormatError,
    ServiceUnavailableError,
    TooLargeError,
    TransportError,
)
from ._local import LocalClient
from ._policies import InitRule, PatternPolicy, Policy, SchemePolicy, TorchDefaultPolicy
from ._recipes import (
    DeepNetPolicy,
    DepthScaledPolicy,
    FixupPolicy,
    MuPPolicy,
    ReZeroPolicy,
    TFixupPolicy,
    deepnet_constants,
    gpt2_policy,
    torchtitan_policy,
)
from ._retry import RetryPolicy
from ._specs import NameRequiredError, tensor_spec

if TYPE_CHECKING:
    from ._torch import PlannedParameter, ainit_module, init_module, plan_init, to_torch

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Cache",
    "CacheEntry",
    "CacheError",
    "Client",
    "CorruptedDownloadError",
    "DeepNetPolicy",
    "DepthScaledPolicy",
    "FieldError",
    "FixupPolicy",
    "InitRule",
    "InitserveError",
    "IntegrityError",
    "InvalidSpecError",
    "LocalClient",
    "MissingDependencyError",
    "MuPPolicy",
    "NameRequiredError",
    "NotFoundError",
    "OfflineError",
    "PatternPolicy",
    "PlannedParameter",
    "Policy",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "ReZeroPolicy",
    "RetriesExhaustedError",
    "RetryPolicy",
    "SafetensorsFormatError",
    "SchemePolicy",
    "ServiceUnavailableError",
    "TFixupPolicy",
    "TooLargeError",
    "TorchDefaultPolicy",
    "TransportError",
    "ainit_module",
    "deepnet_constants",
    "default_cache_dir",
    "gpt2_policy",
    "init_module",
    "plan_init",
    "tensor_spec",
    "to_torch",
    "torchtitan_policy",
]

_LAZY = {"init_module", "ainit_module", "plan_init", "PlannedParameter", "to_torch"}


def __getattr__(name: str) -> Any:
    # torch is optional and heavy: import it only when a torch helper is asked for.
    if name in _LAZY:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
