"""The arithmetic of derive actions: fixed-order, exact IEEE operations only, so results are bitwise.

Every function takes source tensors already widened (exactly) to float64 — or float32 where a framework's
arithmetic is reproduced (``channel_adapt``) — and returns the values before the one final rounding to
the target dtype. No reduction is left to a library whose order may vary: sums over rows are explicit
trees of elementwise vector adds (:func:`row_sum`). Formulas: docs/pretrained.md.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .dtypes import bfloat16_bits_to_float64

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
ROW_BLOCK = 1024  # rows per block of the row sums (part of the definition: it fixes the summation order)

_FLOAT_VIEWS = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}


def widen(raw: bytes | memoryview, dtype: str, shape: tuple[int, ...]) -> F64:
    """Exact float64 values of a float tensor stored as safetensors ``dtype`` (F16, BF16, F32, F64)."""
    if dtype == "BF16":
        return bfloat16_bits_to_float64(np.frombuffer(raw, dtype="<u2")).reshape(shape)
    return np.frombuffer(raw, dtype=_FLOAT_VIEWS[dtype]).astype(np.float64).reshape(shape)


def native(raw: bytes | memoryview, dtype: str, shape: tuple[int, ...]) -> npt.NDArray[np.floating]:
    """The tensor as a numpy float array without widening F16/F32/F64 (a view); BF16 becomes float32
    (exact). Row sums widen a block at a time, so a large embedding is never held in float64 whole."""
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=_FLOAT_VIEWS[dtype]).reshape(shape)


def as_float32(raw: bytes | memoryview, dtype: str, shape: tuple[int, ...]) -> F32:
    """float32 values of an F16/BF16/F32 tensor (exact widening), as torch's ``Tensor.float()``."""
    return widen(raw, dtype, shape).astype(np.float32)


def tree_sum(block: F64) -> F64:
    """Σ of the rows of a (n ≥ 1, D) float64 block by a fixed pairwise tree, one vector add per level.

    Each level adds the second half of the rows to the first half element by element — row i += row
    i + ⌊n/2⌋ for i < ⌊n/2⌋ — and, when n is odd, moves the last row to position ⌊n/2⌋; the next level
    sees the first ⌈n/2⌉ rows; until one row is left. Every addition is an elementwise IEEE operation
    whose operands the tree fixes, so the result is the same at any SIMD width (numpy vectorises
    elementwise adds; it does not reorder them). ``block`` is overwritten.
    """
    count = block.shape[0]
    while count > 1:
        half = count // 2
        np.add(block[:half], block[half : 2 * half], out=block[:half])
        if count % 2:
            block[half] = block[count - 1]
        count -= half
    summed: F64 = block[0].copy()
    return summed


def row_sum(rows: npt.NDArray[np.floating], *, center: F64 | None = None) -> F64:
    """Σ_i rows[i] (or Σ_i (rows[i] − center)² with ``center``) in float64, in a fixed order.

    ``rows`` is (V, D). Rows are taken in consecutive blocks of :data:`ROW_BLOCK` (the last may be
    shorter); each block is widened to float64 (exactly), centred and squared if asked (elementwise),
    and summed by :func:`tree_sum`; the block sums are added left to right. A few dozen vector
    operations per block instead of one per row, in one reused block of memory."""
    count, width = rows.shape
    acc = np.zeros(width, dtype=np.float64)
    buffer = np.empty((min(ROW_BLOCK, count), width), dtype=np.float64)
    for first in range(0, count, ROW_BLOCK):
        block = buffer[: min(ROW_BLOCK, count - first)]
        np.copyto(block, rows[first : first + block.shape[0]], casting="safe")
        if center is not None:
            np.subtract(block, center, out=block)
            np.multiply(block, block, out=block)
        np.add(acc, tree_sum(block), out=acc)
    return acc


def mean_rows(source: npt.NDArray[np.floating], new_rows: int, noise: float, z: F64 | None) -> F64:
    """New rows = μ + noise·σ⊙z: μ the column mean of the V source rows, σ their population std.

    ``source`` is (V, D) (float64 or narrower; widened exactly), ``z`` is (new_rows, D) standard normal
    (unused when noise is 0). μ = (Σ_i s_i)/V; σ = √((Σ_i (s_i − μ)²)/V); both sums as :func:`row_sum`.
    """
    count = source.shape[0]
    mu = row_sum(source) / float(count)
    if noise == 0.0 or z is None:
        return np.broadcast_to(mu, (new_rows, mu.shape[0])).copy()
    sigma = np.sqrt(row_sum(source, center=mu) / float(count))
    scale = noise * sigma
    return mu + scale * z  # (1, D) + (1, D)·(n, D): two rounded operations per element


def channel_adapt(
    weight: npt.NDArray[np.floating], in_chans: int, base_chans: int, mode: str
) -> npt.NDArray[np.floating]:
    """timm's ``adapt_input_conv`` on an (O, I, *k) float32 weight, in float32 as timm computes it.

    ``mode="sum"`` (timm's choice for in_chans = 1): Σ over the input channels, left to right in float32
    ((w₀ + w₁) + w₂) + …, keeping dim 1; when I > base_chans (a space-to-depth stem, I = base·g) the
    sum runs within each of the g groups of base_chans channels. ``mode="repeat"`` (timm's choice for
    in_chans ≠ 1): channel c takes source channel c mod base_chans, times the float32 rounding of
    base_chans / in_chans. Raises ValueError for a combination timm does not define.
    """
    out_ch, channels = weight.shape[0], weight.shape[1]
    kernel = weight.shape[2:]
    if mode == "sum":
        groups = channels // base_chans if channels > base_chans else 1
        width = base_chans if channels > base_chans else channels
        if groups * width != channels:
            raise ValueError(f"{channels} input channels are not a multiple of base_chans={base_chans}")
        grouped = weight.reshape(out_ch, groups, width, *kernel)
        acc = grouped[:, :, 0].copy()
        for index in range(1, width):
            np.add(acc, grouped[:, :, index], out=acc)
        return acc
    if channels != base_chans:
        raise ValueError(f"repeat needs the weight's {channels} input channels to equal base_chans={base_chans}")
    repeats = math.ceil(in_chans / base_chans)
    tiled = np.tile(weight, (1, repeats) + (1,) * len(kernel))[:, :in_chans]
    # torch multiplies a float32 tensor by a Python float as float32: the scale is rounded first.
    scale = weight.dtype.type(base_chans / float(in_chans))
    result: npt.NDArray[np.floating] = tiled * scale
    return result


def shrink_perturb(source: F64, shrink: float, noise: float, epsilon: F64) -> F64:
    """λθ + σε (Ash & Adams 2020): two products and a sum, each rounded in float64."""
    result: F64 = source * shrink + epsilon * noise
    return result


def soup(sources: list[F64], weights: list[float]) -> F64:
    """Σ_k c_k·θ_k with c_k = w_k / Σ_j w_j (Σ in listed order), accumulated in listed order."""
    total = 0.0
    for weight in weights:
        total += weight
    acc = sources[0] * (weights[0] / total)
    for source, weight in zip(sources[1:], weights[1:], strict=True):
        acc = acc + source * (weight / total)
    return acc
