"""The real jax and keras 3 (on its jax backend, CPU only) for the parity tests, or a skip.

Both are optional (the ``dev`` extra installs them): a module calling :func:`import_keras_on_jax` at
import time is skipped as a whole when either is missing or keras is bound to another backend.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def import_keras_on_jax() -> tuple[ModuleType, ModuleType]:
    """``(jax, keras)``; skips the calling test module when they are not usable here."""
    # keras reads its backend, and jax its platforms, at their first import
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax = pytest.importorskip("jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras runs on the {keras.backend.backend()!r} backend here, not jax", allow_module_level=True)
    return jax, keras
