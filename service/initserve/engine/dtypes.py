"""Output dtypes and the one rounding rule used to reach them.

Every value is generated in float64 and rounded once, to nearest with ties to even, to the output
type. float32 and float16 use numpy's casts (IEEE round-to-nearest-even straight from float64 — no
double rounding through float32). numpy has no bfloat16, so it is rounded here from the float64 bits
and stored as its raw uint16 pattern, which is also what safetensors stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DType:
    name: str
    safetensors: str  # safetensors dtype code
    storage: np.dtype[np.generic]  # numpy dtype of the stored bits (little-endian)
    itemsize: int
    max_finite: float
    # Round-to-nearest-even sends |x| ≥ overflow to ±inf: the midpoint between max_finite and the next
    # power of two (a tie goes to the even neighbour, which is the infinity). Anything below it rounds
    # to a finite value, e.g. 65510 → 65504 in float16, whose overflow is 65520.
    overflow: float


DTYPES: dict[str, DType] = {
    "float32": DType(
        "float32", "F32", np.dtype("<f4"), 4, float(np.finfo(np.float32).max), (2.0 - 2.0**-24) * 2.0**127
    ),
    # Every finite binary64 value is already a float64: nothing overflows.
    "float64": DType("float64", "F64", np.dtype("<f8"), 8, float(np.finfo(np.float64).max), math.inf),
    "float16": DType("float16", "F16", np.dtype("<f2"), 2, float(np.finfo(np.float16).max), 65520.0),
    # bfloat16 keeps float32's exponent range: max = (2 - 2**-7) * 2**127.
    "bfloat16": DType("bfloat16", "BF16", np.dtype("<u2"), 2, (2.0 - 2.0**-7) * 2.0**127, (2.0 - 2.0**-8) * 2.0**127),
}

_BF16_DROPPED_BITS = 45  # float64 keeps 52 fraction bits, bfloat16 keeps 7
_BF16_SUBNORMAL_LIMIT = 2.0**-126  # below this bfloat16 is subnormal, with a fixed quantum of 2**-133
_BF16_SUBNORMAL_MAGIC = 2.0**-81  # adding it rounds (RNE) to multiples of 2**-81 / 2**52 = 2**-133


def cast_into(values: npt.NDArray[np.float64], out: npt.NDArray[np.generic], dtype: DType) -> None:
    """Round float64 ``values`` to ``dtype`` (nearest, ties to even) and store the bits in ``out``."""
    if dtype.name == "bfloat16":
        out[...] = float64_to_bfloat16_bits(values)
    else:
        out[...] = values  # numpy assignment casts with round-to-nearest-even


def float64_to_bfloat16_bits(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint16]:
    """Round float64 to bfloat16 (nearest, ties to even), returning the 16-bit patterns.

    Normal range: add ``2**44 - 1 + lsb`` to the float64 bit pattern (lsb = lowest kept fraction bit),
    clear the 45 dropped bits — an integer rendering of round-half-even that also carries into the
    exponent. The result is exactly representable in float32, whose upper 16 bits are the bfloat16.
    Subnormal range (|x| < 2**-126): ``(x + M) - M`` with ``M = ±2**-81`` rounds to the bfloat16
    quantum 2**-133 by IEEE addition. Values beyond the bfloat16 range become ±inf (callers validate
    magnitudes beforehand, so this does not happen for accepted specs).
    """
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    lsb = (bits >> np.uint64(_BF16_DROPPED_BITS)) & np.uint64(1)
    rounded = (bits + (np.uint64((1 << (_BF16_DROPPED_BITS - 1)) - 1) + lsb)) & ~np.uint64(
        (1 << _BF16_DROPPED_BITS) - 1
    )
    result = rounded.view(np.float64)
    tiny = np.abs(values) < _BF16_SUBNORMAL_LIMIT
    if tiny.any():
        small = values[tiny]
        magic = np.where(small < 0, -_BF16_SUBNORMAL_MAGIC, _BF16_SUBNORMAL_MAGIC)
        result = result.copy()
        # copysign keeps the sign of values that round to zero (-0.0 stays -0.0).
        result[tiny] = np.copysign((small + magic) - magic, small)
    with np.errstate(over="ignore"):
        as32 = result.astype(np.float32)
    return (as32.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def bfloat16_bits_to_float64(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float64]:
    """Exact widening of bfloat16 bit patterns to float64."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def to_float64(stored: npt.NDArray[np.generic], dtype: DType) -> npt.NDArray[np.float64]:
    """Exact widening of stored values (any output dtype) to float64."""
    if dtype.name == "bfloat16":
        return bfloat16_bits_to_float64(stored.view(np.uint16))
    return stored.astype(np.float64)
