"""Pre-trained initialisation on :class:`~initserve_client.AsyncClient`: the methods of
:mod:`._checkpoints`, awaitable; files are read in a worker thread, one chunk at a time."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checkpoints import CheckpointFlows, arrays_of, torch_tensors_of
from ._flow import Flow
from ._safetensors import SafetensorsFile

if TYPE_CHECKING:
    import torch

__all__ = ["AsyncCheckpointMethods"]


class AsyncCheckpointMethods(CheckpointFlows):
    """Mixed into :class:`~initserve_client.AsyncClient`."""

    if TYPE_CHECKING:  # provided by AsyncClient

        async def _drive(self, flow: Flow) -> Any: ...

    async def upload_checkpoint(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`Client.upload_checkpoint <initserve_client.Client.upload_checkpoint>`, awaitable."""
        manifest: dict[str, Any] = await self._drive(self._upload_flow(source))
        return manifest

    async def checkpoint(self, digest: str) -> dict[str, Any]:
        manifest: dict[str, Any] = await self._drive(self._checkpoint_flow(digest))
        return manifest

    async def checkpoint_tensor(self, digest: str, name: str) -> np.ndarray[Any, Any]:
        tensor: np.ndarray[Any, Any] = await self._drive(self._checkpoint_tensor_flow(digest, name))
        return tensor

    async def derive_file(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> SafetensorsFile:
        file: SafetensorsFile = await self._drive(self._derive_flow(source, tensors, rules, seed, layout))
        return file

    async def derive(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, np.ndarray[Any, Any]]:
        return arrays_of(await self.derive_file(source, tensors, rules, seed=seed, layout=layout), tensors)

    async def derive_torch(
        self,
        source: str,
        tensors: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        seed: int = 0,
        layout: str = "torch",
    ) -> dict[str, torch.Tensor]:
        return torch_tensors_of(await self.derive_file(source, tensors, rules, seed=seed, layout=layout), tensors)
