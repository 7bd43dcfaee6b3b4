"""The two implementations of algorithm 1: the compiled kernel and the numpy reference.

Both compute every element with the operation sequence of docs/determinism.md and agree byte for
byte (the tests run every engine test against both). The caller chooses one explicitly —
:func:`resolve_kernel` turns a choice (``auto`` | ``native`` | ``numpy``) into a :class:`Kernel`
once, e.g. from the service's settings — and passes it to ``generate``, ``iter_result_chunks``,
``SafetensorsFile.iter_bytes`` and ``compute_stats``; nothing here reads the environment and there
is no module-level switch. Functions given ``kernel=None`` use :func:`default_kernel` (the native
kernel when it is built, else numpy), which depends only on what is installed.

``native`` (``initserve.engine._native``, C99, built by setup.py) handles the Constant, Uniform and
(truncated) normal samplers and the raw words; index-based samplers (eye, dirac) have no random
bits to speed up and run their numpy code under either kernel.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Literal, Protocol, cast

import numpy as np
import numpy.typing as npt

from .dtypes import DType, cast_into
from .householder import NativeQr
from .layout import RunLayout
from .rng import STREAM_VALUES, WordStream
from .samplers import Constant, ElementwiseSampler, TruncatedNormal, Uniform

Array = npt.NDArray[np.generic]
F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
KernelName = Literal["native", "numpy"]
KernelChoice = Literal["auto", "native", "numpy"]
KERNEL_CHOICES: tuple[KernelChoice, ...] = ("auto", "native", "numpy")
# Result elements start .. start+len(out)-1 into ``out`` (storage dtype); see Kernel.prepare.
Filler = Callable[[int, Array], None]

SUBCHUNK = 1 << 16  # numpy kernel: elements per inner step (per-call overhead vs temporaries in L2)
SHORT_RUN = 256  # numpy kernel: runs shorter than this are read from a covering range ...
COVER_GAP = 1024  # ... when it wastes at most this many elements per run (≈ the cost of one numpy call)
_MASK64 = (1 << 64) - 1


class KernelUnavailable(RuntimeError):
    """``native`` was asked for but the compiled extension could not be imported."""


class Kernel(Protocol):
    """One implementation of algorithm 1."""

    @property
    def name(self) -> KernelName: ...

    def prepare(self, sampler: ElementwiseSampler, key: int, dtype: DType, layout: RunLayout) -> Filler:
        """A function filling result elements (the slice ``layout`` describes) into a caller buffer.
        It may run on several threads at once; the native one releases the GIL while it works."""
        ...

    def words(self, key: int, start: int, count: int, stream: int) -> U64:
        """The raw 64-bit words of elements start .. start+count-1 of ``stream``."""
        ...

    @property
    def qr(self) -> NativeQr | None:
        """The compiled primitives of orthogonal's QR (algorithm 2), or None: the numpy ones run."""
        ...


# --- numpy -----------------------------------------------------------------------------------------
def fill_full_range(sampler: ElementwiseSampler, key: int, dtype: DType, start: int, out: Array) -> None:
    """numpy: elements ``start .. start+len(out)`` of the *full* flat tensor into ``out`` (storage dtype)."""
    count = out.shape[0]
    words = WordStream(key, start) if sampler.uses_words else None
    for offset in range(0, count, SUBCHUNK):
        n = min(SUBCHUNK, count - offset)
        chunk_words = words.next(n) if words is not None else None
        cast_into(sampler.values(chunk_words, start + offset, n), out[offset : offset + n], dtype)


def gather_covering(sampler: ElementwiseSampler, key: int, dtype: DType, index: I64, out: Array) -> None:
    """numpy: ``out[j]`` = element ``index[j]`` of the full flat tensor (``index`` increasing), read
    from the covering range window by window: a window of at most SUBCHUNK elements starts at the
    next wanted index, so memory is one window however far apart the indices are (a covering range
    of one-element runs COVER_GAP apart is ~1,000× the result) and gaps wider than a window are
    skipped, not generated."""
    window = np.empty(min(SUBCHUNK, int(index[-1] - index[0]) + 1), dtype=dtype.storage)
    position, count = 0, index.shape[0]
    while position < count:
        first = int(index[position])
        size = min(window.shape[0], int(index[-1]) + 1 - first)
        end = position + int(np.searchsorted(index[position:], first + size))
        fill_full_range(sampler, key, dtype, first, window[:size])
        np.take(window, index[position:end] - first, out=out[position:end])
        position = end


@dataclass(frozen=True)
class NumpyKernel:
    """The reference implementation: numpy's Philox raw words and the transforms of samplers.py."""

    name: KernelName = "numpy"

    def prepare(self, sampler: ElementwiseSampler, key: int, dtype: DType, layout: RunLayout) -> Filler:
        def fill_runs(start: int, out: Array) -> None:
            position = 0
            for first, n in layout.runs_from(start, out.shape[0]):
                fill_full_range(sampler, key, dtype, first, out[position : position + n])
                position += n

        if not layout.extents or layout.run_length >= SHORT_RUN:
            return fill_runs

        def fill_short_runs(start: int, out: Array) -> None:
            """Short runs (a column of a tall matrix): one numpy call per run would cost ~10 µs per
            element, so each sub-chunk is read from the range of full indices that covers it when that
            range holds at most COVER_GAP unused elements per run (same element values, fewer calls)."""
            for offset in range(0, out.shape[0], SUBCHUNK):
                n = min(SUBCHUNK, out.shape[0] - offset)
                index = layout.full_indices(start + offset, n)
                span = int(index[-1] - index[0]) + 1
                if span <= n + (n // layout.run_length + 1) * COVER_GAP:
                    gather_covering(sampler, key, dtype, index, out[offset : offset + n])
                else:
                    fill_runs(start + offset, out[offset : offset + n])

        return fill_short_runs

    def words(self, key: int, start: int, count: int, stream: int) -> U64:
        return WordStream(key, start, stream).next(count)

    @property
    def qr(self) -> NativeQr | None:
        return None  # householder.py's numpy functions


# --- native ----------------------------------------------------------------------------------------
# Codes shared with native/algorithm1.h (enum is_kind, enum is_dtype).
_KIND_CONSTANT, _KIND_UNIFORM, _KIND_NORMAL, _KIND_WORDS = 0, 1, 2, 3
_DTYPE_CODES = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
_DTYPE_U64 = 4

ProgramArgs = tuple[
    int, int, int, int, int, float, float, float, float, float, float, float, float, float, float, float, bool, bool
]


def _program(kind: int, dtype: int, key: int, stream: int, **values: float | bool) -> ProgramArgs:
    """The argument tuple of ``_native.fill``'s program, in native/module.c's order."""
    names = ("value", "low", "width", "mean", "std", "lo", "hi", "alpha", "beta", "p_low", "p_width")
    scalars = tuple(float(values.get(name, 0.0)) for name in names)
    return (
        kind,
        dtype,
        key & _MASK64,
        key >> 64,
        stream,
        *scalars,
        bool(values.get("mirrored", False)),
        bool(values.get("truncated", False)),
    )  # type: ignore[return-value]


def native_program(sampler: ElementwiseSampler, key: int, dtype: DType) -> ProgramArgs | None:
    """The native program computing ``sampler``, or None where only numpy implements it. The scalars
    are the sampler's own attributes (computed once, in Python), so both kernels use the same doubles."""
    code = _DTYPE_CODES[dtype.name]
    kind = type(sampler)
    if kind is Constant:
        assert isinstance(sampler, Constant)
        return _program(_KIND_CONSTANT, code, key, STREAM_VALUES, value=sampler.value)
    if kind is Uniform:
        assert isinstance(sampler, Uniform)
        return _program(_KIND_UNIFORM, code, key, STREAM_VALUES, low=sampler.low, width=sampler.high - sampler.low)
    if kind is TruncatedNormal:
        assert isinstance(sampler, TruncatedNormal)
        return _program(
            _KIND_NORMAL,
            code,
            key,
            STREAM_VALUES,
            mean=sampler.mean,
            std=sampler.std,
            lo=sampler.low,
            hi=sampler.high,
            alpha=sampler.alpha,
            beta=sampler.beta,
            p_low=sampler.p_low,
            p_width=sampler.width,
            mirrored=sampler.mirrored,
            truncated=sampler.truncated,
        )
    return None


class NativeKernel:
    """Algorithm 1 in C (``initserve.engine._native``): writes into the caller's buffer, GIL released."""

    name: KernelName = "native"

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def prepare(self, sampler: ElementwiseSampler, key: int, dtype: DType, layout: RunLayout) -> Filler:
        program = native_program(sampler, key, dtype)
        if program is None:
            return NUMPY.prepare(sampler, key, dtype, layout)
        native_fill = self._module.fill
        shape = (layout.base, layout.run_length, layout.extents, layout.strides)

        def fill(start: int, out: Array) -> None:
            if out.shape[0]:
                native_fill(out, program, shape, start)

        return fill

    def words(self, key: int, start: int, count: int, stream: int) -> U64:
        out = np.empty(count, dtype=np.uint64)
        if count:
            program = _program(_KIND_WORDS, _DTYPE_U64, key, stream)
            self._module.fill(out, program, (start, 1, (), ()), 0)
        return out

    def build_info(self) -> dict[str, object]:
        info: dict[str, object] = self._module.build_info()
        return info

    @property
    def qr(self) -> NativeQr | None:
        return cast(NativeQr, self._module) if hasattr(self._module, "qr_haar") else None

    def __repr__(self) -> str:
        return "NativeKernel()"


NUMPY = NumpyKernel()


@cache
def _load_native() -> NativeKernel | str:
    """The native kernel, or why it is unavailable (import error text). Cached: the answer depends
    only on the installation."""
    if sys.byteorder != "little":  # the kernel stores native-endian values; files are little-endian
        return "the native kernel supports little-endian machines only"
    try:
        module = importlib.import_module("initserve.engine._native")
    except ImportError as error:
        return f"initserve.engine._native is not built ({error})"
    return NativeKernel(module)


def native_unavailable_reason() -> str | None:
    """None when the native kernel can be used, else the reason it cannot."""
    loaded = _load_native()
    return loaded if isinstance(loaded, str) else None


def resolve_kernel(choice: str) -> Kernel:
    """``auto``: native when built, else numpy; ``native``: native or KernelUnavailable; ``numpy``.

    Raises ValueError for any other choice.
    """
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {', '.join(KERNEL_CHOICES)}; got {choice!r}")
    if choice == "numpy":
        return NUMPY
    loaded = _load_native()
    if isinstance(loaded, NativeKernel):
        return loaded
    if choice == "native":
        raise KernelUnavailable(f"the native kernel was requested but {loaded}")
    return NUMPY


def default_kernel() -> Kernel:
    """What ``kernel=None`` means: the native kernel when built, else numpy."""
    return resolve_kernel("auto")
