"""Parse a safetensors buffer into numpy arrays without copying.

Format: ``u64 little-endian N`` | ``N`` bytes of JSON header | data. The header maps tensor names
to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data section) plus an
optional ``__metadata__`` string→string map. We check what the reference implementation checks:
known dtype, ``end - begin == numel · itemsize``, tensors tiling the data section without gaps or
overlap, and the buffer fully covered. Arrays are ``numpy.frombuffer`` views of the buffer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from initserve.engine.strict_json import DuplicateKeyError, loads_unique

from ._errors import MissingDependencyError, SafetensorsFormatError

__all__ = [
    "MAX_HEADER_SIZE",
    "SafetensorsFile",
    "TensorInfo",
    "numpy_dtype",
    "parse",
]

MAX_HEADER_SIZE = 100_000_000  # the reference implementation's limit

_PLAIN_DTYPES: dict[str, str] = {
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
}
# dtypes numpy lacks; ml_dtypes registers them. The raw-bits dtype lets torch read them without ml_dtypes.
_ML_DTYPES: dict[str, tuple[str, str]] = {
    "BF16": ("bfloat16", "<u2"),
    "F8_E4M3": ("float8_e4m3fn", "u1"),
    "F8_E5M2": ("float8_e5m2", "u1"),
}
_ITEMSIZE = {name: np.dtype(code).itemsize for name, code in _PLAIN_DTYPES.items()} | {
    name: np.dtype(raw).itemsize for name, (_, raw) in _ML_DTYPES.items()
}


def numpy_dtype(st_dtype: str, *, raw_bits: bool = False) -> np.dtype[Any]:
    """numpy dtype for a safetensors dtype name. With ``raw_bits``, BF16/F8 come back as unsigned ints."""
    if st_dtype in _PLAIN_DTYPES:
        return np.dtype(_PLAIN_DTYPES[st_dtype])
    if st_dtype in _ML_DTYPES:
        ml_name, raw = _ML_DTYPES[st_dtype]
        if raw_bits:
            return np.dtype(raw)
        try:
            import ml_dtypes
        except ImportError:
            raise MissingDependencyError(
                f"dtype {st_dtype} ({ml_name}) needs ml_dtypes for numpy: pip install 'initserve[bf16]' "
                "(or use Client.torch(), which needs no ml_dtypes)"
            ) from None
        ml_dtype: np.dtype[Any] = np.dtype(getattr(ml_dtypes, ml_name))
        return ml_dtype
    raise SafetensorsFormatError(f"unknown safetensors dtype {st_dtype!r}")


@dataclass(frozen=True)
class TensorInfo:
    """One header entry; ``begin``/``end`` are absolute offsets into the file buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsFile:
    """A parsed file: its header entries (in data order) and the buffer the arrays view."""

    buffer: memoryview
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]

    def array(self, name: str, *, raw_bits: bool = False) -> np.ndarray[Any, Any]:
        """Zero-copy view of one tensor (``raw_bits``: BF16/F8 as unsigned ints, for torch)."""
        try:
            info = self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in the file; it has {sorted(self.tensors)}") from None
        dtype = numpy_dtype(info.dtype, raw_bits=raw_bits)
        flat = np.frombuffer(self.buffer, dtype=dtype, count=info.numel, offset=info.begin)
        return flat.reshape(info.shape)

    def arrays(self, *, raw_bits: bool = False) -> dict[str, np.ndarray[Any, Any]]:
        return {name: self.array(name, raw_bits=raw_bits) for name in self.tensors}


def _int_list(value: object, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SafetensorsFormatError(f"{what} must be a list of integers, got {value!r}")
    return list(value)


def parse(buffer: bytes | bytearray | memoryview) -> SafetensorsFile:
    """Validate the header and return views into ``buffer`` (which must stay alive with the arrays)."""
    view = memoryview(buffer).cast("B")
    total = view.nbytes
    if total < 8:
        raise SafetensorsFormatError(f"file is {total} bytes; a safetensors file has at least 8")
    (header_size,) = struct.unpack("<Q", view[:8])
    if header_size > MAX_HEADER_SIZE:
        raise SafetensorsFormatError(f"header size {header_size} exceeds the limit {MAX_HEADER_SIZE}")
    if 8 + header_size > total:
        raise SafetensorsFormatError(f"header size {header_size} runs past the end of the {total}-byte file")
    try:
        header = loads_unique(bytes(view[8 : 8 + header_size]).decode("utf-8"))
    except DuplicateKeyError as exc:  # the format forbids it: two entries for one tensor name are ambiguous
        raise SafetensorsFormatError(f"header: {exc.describe('header')}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsFormatError(f"header is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:  # e.g. 10,000 nested arrays: the JSON parser's recursion limit
        raise SafetensorsFormatError("header is not valid safetensors JSON: nested too deeply") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header must be a JSON object")
    data_start = 8 + header_size
    metadata_raw = header.pop("__metadata__", {})
    if not isinstance(metadata_raw, dict) or not all(isinstance(v, str) for v in metadata_raw.values()):
        raise SafetensorsFormatError("__metadata__ must map strings to strings")

    infos: list[TensorInfo] = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise SafetensorsFormatError(f"tensor {name!r}: entry must be an object")
        st_dtype = entry.get("dtype")
        if not isinstance(st_dtype, str) or st_dtype not in _ITEMSIZE:
            raise SafetensorsFormatError(f"tensor {name!r}: unknown dtype {st_dtype!r}")
        shape = _int_list(entry.get("shape"), f"tensor {name!r}: shape")
        if any(d < 0 for d in shape):
            raise SafetensorsFormatError(f"tensor {name!r}: shape {shape} has a negative dimension")
        offsets = _int_list(entry.get("data_offsets"), f"tensor {name!r}: data_offsets")
        if len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
            raise SafetensorsFormatError(f"tensor {name!r}: data_offsets must be [begin, end] with 0 ≤ begin ≤ end")
        expected = math.prod(shape) * _ITEMSIZE[st_dtype]
        if offsets[1] - offsets[0] != expected:
            raise SafetensorsFormatError(
                f"tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes, "
                f"but shape {shape} of {st_dtype} needs {expected}"
            )
        infos.append(TensorInfo(name, st_dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1]))

    infos.sort(key=lambda info: (info.begin, info.end))
    cursor = data_start
    for info in infos:
        if info.begin != cursor:
            raise SafetensorsFormatError(
                f"tensor {info.name!r} starts at data offset {info.begin - data_start}, expected "
                f"{cursor - data_start}: tensors must tile the data section without gaps or overlap"
            )
        cursor = info.end
    if cursor != total:
        raise SafetensorsFormatError(
            f"data section is {total - data_start} bytes but the tensors cover {cursor - data_start}"
        )
    return SafetensorsFile(view, {info.name: info for info in infos}, dict(metadata_raw))
