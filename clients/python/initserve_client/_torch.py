"""torch integration: exact-dtype conversion and :func:`init_module`. Needs the ``torch`` extra."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InitserveError, MissingDependencyError
from ._policies import InitRule, Policy, as_policy, plan_module

if TYPE_CHECKING:
    import torch

    from ._async_client import AsyncClient
    from ._client import Client

__all__ = ["ainit_module", "init_module", "to_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("this needs torch: pip install 'initserve[torch]'") from None
    return torch


def to_torch(array: np.ndarray[Any, Any], st_dtype: str, *, device: str | torch.device | None = None) -> torch.Tensor:
    """numpy → torch sharing memory. BF16/F8 arrive as raw unsigned bits and are reinterpreted with
    ``Tensor.view(dtype)`` (torch cannot read ml_dtypes arrays); no value is converted or copied.
    Moving to ``device`` copies, as it must; so does a read-only source array."""
    th = _torch()
    if not array.flags.writeable:
        # torch tensors are writable by contract; a read-only source (a bytes buffer) must be copied.
        array = array.copy()
    special = {"BF16": th.bfloat16, "F8_E4M3": th.float8_e4m3fn, "F8_E5M2": th.float8_e5m2}
    tensor: torch.Tensor = th.from_numpy(array)
    if st_dtype in special:
        tensor = tensor.view(special[st_dtype])
    return tensor if device is None else tensor.to(device)


def _apply(
    params: Mapping[str, torch.Tensor],
    plan: Mapping[str, tuple[dict[str, Any], InitRule]],
    values: Mapping[str, torch.Tensor],
) -> None:
    th = _torch()
    with th.no_grad():
        for name, (_, rule) in plan.items():
            param, value = params[name], values[name]
            if tuple(value.shape) != tuple(param.shape) or value.dtype != param.dtype:
                raise InitserveError(
                    f"{name}: server returned {value.dtype}{list(value.shape)}, "
                    f"parameter is {param.dtype}{list(param.shape)}"
                )
            param.copy_(value)
            if rule.zero_row is not None:
                param[rule.zero_row].zero_()


def init_module(
    module: torch.nn.Module,
    *,
    client: Client,
    seed: int,
    policy: Policy | str | Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """Fill ``module``'s parameters in place from one ``/v1/bundle`` request; returns ``module``.

    Each parameter is the tensor named by its parameter name (``"0.weight"``, ``"encoder.fc.bias"``):
    the same ``seed`` gives the same module on any machine, and adding a layer leaves every other
    parameter unchanged as long as the other names stay (name your layers rather than relying on
    ``Sequential`` indices if you plan to insert some). Buffers (BatchNorm running stats) are untouched.

    ``policy``: ``None``/``"torch"`` (each layer's torch default distribution), a scheme name (that
    scheme for every weight of ≥ 2 dims, zero biases), a ``{fnmatch pattern: spec}`` mapping, or a
    :class:`~initserve_client.Policy`.
    """
    plan = plan_module(module, as_policy(policy))
    if plan:
        values = client.bundle_torch({name: spec for name, (spec, _) in plan.items()}, seed=seed)
        _apply(dict(module.named_parameters()), plan, values)
    return module


async def ainit_module(
    module: torch.nn.Module,
    *,
    client: AsyncClient,
    seed: int,
    policy: Policy | str | Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """:func:`init_module` with an :class:`~initserve_client.AsyncClient`."""
    plan = plan_module(module, as_policy(policy))
    if plan:
        values = await client.bundle_torch({name: spec for name, (spec, _) in plan.items()}, seed=seed)
        _apply(dict(module.named_parameters()), plan, values)
    return module
