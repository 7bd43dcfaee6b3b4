"""The initserve engine: spec → tensor, statistics and safetensors bytes. Pure: numpy and its own C kernel.

Determinism contract (docs/determinism.md): the bytes depend only on the canonical spec and the
algorithm version — never on numpy version, SIMD level, thread count, block size or slicing.
"""

from .algorithms import ALGORITHM_VERSION, IMPLICIT_ALGORITHM, SUPPORTED_ALGORITHMS
from .catalog import CATALOG, catalog, scheme_info
from .dtypes import DTYPES
from .errors import FieldError, SpecError, SpecTooLarge, format_loc
from .generate import generate, iter_result_chunks
from .kernels import KERNEL_CHOICES, Kernel, KernelUnavailable, default_kernel, resolve_kernel
from .safetensors import SafetensorsFile
from .spec import (
    DEFAULT_MAX_BYTES,
    BundleSpec,
    Spec,
    check_size,
    parse_bundle,
    parse_spec,
    parse_within,
)
from .stats import compute_stats

__all__ = [
    "ALGORITHM_VERSION",
    "CATALOG",
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "IMPLICIT_ALGORITHM",
    "KERNEL_CHOICES",
    "SUPPORTED_ALGORITHMS",
    "BundleSpec",
    "FieldError",
    "Kernel",
    "KernelUnavailable",
    "SafetensorsFile",
    "Spec",
    "SpecError",
    "SpecTooLarge",
    "catalog",
    "check_size",
    "compute_stats",
    "default_kernel",
    "format_loc",
    "generate",
    "iter_result_chunks",
    "parse_bundle",
    "parse_spec",
    "parse_within",
    "resolve_kernel",
    "scheme_info",
]
