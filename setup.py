"""The compiled kernel: setuptools builds ``initserve.engine._native`` from every C file in
service/initserve/engine/native/. Project metadata lives in pyproject.toml; this file only adds the
extension, because the flags depend on the compiler.

The flags are part of the determinism contract (docs/determinism.md, "The native kernel"):
floating-point contraction off (no fused multiply-add), no -ffast-math or any of its parts that
change results, so the kernel rounds exactly like the numpy engine. The extension is optional: where
no C compiler exists the install still succeeds and the engine runs its numpy kernel.
``INITSERVE_NATIVE_CFLAGS`` appends flags (e.g. ``-march=native``); they cannot turn contraction back
on, because ours come last.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = Path("service/initserve/engine/native")

# gcc/clang: C99, optimised (vectorised where lanes are independent elements), IEEE semantics kept.
UNIX_FLAGS = [
    "-std=c99",
    "-O3",
    "-fno-fast-math",
    "-ffp-contract=off",
    "-fno-unsafe-math-optimizations",
    "-fno-math-errno",  # sqrt need not set errno (its value is IEEE either way): lets it vectorise
]
# MSVC: /fp:precise keeps IEEE semantics; /fp:contract is off unless asked for.
MSVC_FLAGS = ["/O2", "/fp:precise"]


class BuildNative(build_ext):
    """build_ext with the compiler-specific determinism flags (appended after any user flags)."""

    def build_extensions(self) -> None:
        extra = shlex.split(os.environ.get("INITSERVE_NATIVE_CFLAGS", ""))
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else UNIX_FLAGS
        for extension in self.extensions:
            extension.extra_compile_args = [*extra, *flags]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "initserve.engine._native",
            sources=sorted(str(path) for path in NATIVE.glob("*.c")),
            depends=sorted(str(path) for path in NATIVE.glob("*.h")),
            optional=True,  # no compiler: the install succeeds and the numpy kernel runs
        )
    ],
    cmdclass={"build_ext": BuildNative},
)
