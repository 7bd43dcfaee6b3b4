"""The largest finite |x| of a float tensor and its count of non-finite values, from its raw bytes.

A checkpoint's manifest records both for every F16, BF16, F32 and F64 tensor (computed as the upload
streams in, a chunk at a time), so a derive request is checked against the target dtype's range before
any tensor is read (docs/pretrained.md, "Overflow"). The scan works on the bit patterns: clearing the
sign bit leaves |x|'s pattern, whose unsigned order is the order of |x|, and every pattern at or above
the all-ones exponent is an infinity or a NaN. No float arithmetic, so it is exact and the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# safetensors code -> (unsigned view, |x| mask, first non-finite pattern)
_LAYOUTS: dict[str, tuple[str, int, int]] = {
    "F16": ("<u2", 0x7FFF, 0x7C00),
    "BF16": ("<u2", 0x7FFF, 0x7F80),
    "F32": ("<u4", 0x7FFF_FFFF, 0x7F80_0000),
    "F64": ("<u8", 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
}
SCANNED = tuple(_LAYOUTS)  # the dtypes a manifest records magnitudes for


@dataclass(frozen=True)
class Magnitude:
    """``max_abs``: the largest finite |x| (0.0 when there is none); ``nonfinite``: how many are ±inf or NaN."""

    max_abs: float
    nonfinite: int


def _pattern_value(dtype: str, pattern: int) -> float:
    """The float whose |x| bit pattern (sign cleared) is ``pattern``."""
    if dtype == "BF16":
        return float(np.array([pattern << 16], dtype="<u4").view("<f4")[0])
    view, _, _ = _LAYOUTS[dtype]
    float_view = {"<u2": "<f2", "<u4": "<f4", "<u8": "<f8"}[view]
    return float(np.array([pattern], dtype=view).view(float_view)[0])


class MagnitudeScan:
    """Accumulates :class:`Magnitude` over a tensor's bytes fed in arbitrary pieces (an element may be
    split between two pieces: its first bytes wait for the rest)."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self._view, mask, limit = _LAYOUTS[dtype]
        self._itemsize = np.dtype(self._view).itemsize
        self._mask = np.array(mask, dtype=self._view)
        self._limit = np.array(limit, dtype=self._view)
        self._carry = b""
        self._largest = 0
        self._nonfinite = 0

    def update(self, piece: bytes | memoryview) -> None:
        data = memoryview(piece).cast("B")
        if self._carry:
            need = self._itemsize - len(self._carry)
            self._carry += bytes(data[:need])
            data = data[need:]
            if len(self._carry) < self._itemsize:
                return
            self._scan(np.frombuffer(self._carry, dtype=self._view))
            self._carry = b""
        whole = data.nbytes - data.nbytes % self._itemsize
        if whole:
            self._scan(np.frombuffer(data[:whole], dtype=self._view))
        self._carry = bytes(data[whole:])

    def _scan(self, bits: npt.NDArray[np.unsignedinteger]) -> None:
        magnitude = np.bitwise_and(bits, self._mask)
        finite = magnitude < self._limit
        count = int(finite.size - np.count_nonzero(finite))
        self._nonfinite += count
        if count:
            magnitude = np.where(finite, magnitude, 0)
        if magnitude.size:
            self._largest = max(self._largest, int(magnitude.max()))

    def result(self) -> Magnitude:
        if self._carry:
            raise ValueError(f"{len(self._carry)} trailing bytes do not make a whole {self.dtype} element")
        return Magnitude(_pattern_value(self.dtype, self._largest), self._nonfinite)


def magnitude(dtype: str, data: bytes | memoryview) -> Magnitude:
    """:class:`Magnitude` of a whole tensor's raw little-endian bytes (``dtype`` one of :data:`SCANNED`)."""
    scan = MagnitudeScan(dtype)
    scan.update(data)
    return scan.result()
