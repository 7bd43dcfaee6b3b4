"""A CPU torch tensor's memory as a numpy array, without ``Tensor.numpy()``'s lasting side effect.

``Tensor.numpy()`` marks the tensor's storage non-resizable for good. A parameter that went through it
can no longer be freed and re-allocated with ``untyped_storage().resize_()`` — what FSDP2 does with the
parameters it unshards, and what parameter offloading does — although nothing about it changed. The
view here reads the tensor's address, shape and strides instead (``__array_interface__``) and keeps
the tensor alive for as long as the array lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["tensor_as_numpy"]


class _TensorMemory:
    def __init__(self, tensor: Any, dtype: np.dtype[Any]) -> None:
        self.tensor = tensor  # the array's base: the tensor outlives every view of it
        itemsize = tensor.element_size()
        self.__array_interface__ = {
            "version": 3,
            "data": (tensor.data_ptr(), False),
            "shape": tuple(tensor.shape),
            "strides": tuple(stride * itemsize for stride in tensor.stride()),
            "typestr": dtype.str,
        }


def tensor_as_numpy(tensor: Any) -> np.ndarray[Any, Any]:
    """A writable numpy view of CPU ``tensor`` (its strides kept; bfloat16 as its uint16 bit patterns).

    Raises ``TypeError`` for a dtype numpy has no equivalent of (as ``Tensor.numpy()`` does)."""
    import torch

    if tensor.device.type != "cpu":
        raise TypeError(f"expected a CPU tensor, got one on {tensor.device}")
    tensor = tensor.detach()
    dtype = np.dtype(np.uint16) if tensor.dtype == torch.bfloat16 else _numpy_dtype(tensor.dtype)
    return np.asarray(_TensorMemory(tensor, dtype))


def _numpy_dtype(dtype: Any) -> np.dtype[Any]:
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype  # TypeError for a dtype numpy lacks
