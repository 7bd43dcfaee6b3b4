"""Both implementations of algorithm 1 run every generating engine test.

``each_kernel`` (used by the generating test modules through ``pytestmark``) runs a test once per
kernel, with that kernel as what the engine's ``kernel=None`` resolves to — the same entry point a
caller without an explicit kernel takes, so every ``generate`` / ``iter_result_chunks`` /
``compute_stats`` / ``SafetensorsFile`` call inside the test uses it. ``kernel`` gives tests that pass
one explicitly the same two kernels. The native kernel is skipped, with the reason, where the
extension is not built — unless ``INITSERVE_REQUIRE_NATIVE=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest
from initserve.engine import Kernel, parse_spec, resolve_kernel
from initserve.engine.kernels import native_unavailable_reason

# the module (the package's `generate` attribute is the function of the same name)
generate_module = importlib.import_module("initserve.engine.generate")

KERNELS = ("numpy", "native")
_PROBE = parse_spec({"shape": [2], "scheme": "normal"})


def load(name: str) -> Kernel:
    """The kernel called ``name``; skips (or fails under INITSERVE_REQUIRE_NATIVE=1) if it is not built."""
    if name == "native":
        reason = native_unavailable_reason()
        if reason is not None:
            if os.environ.get("INITSERVE_REQUIRE_NATIVE") == "1":
                pytest.fail(f"INITSERVE_REQUIRE_NATIVE=1 but {reason}")
            pytest.skip(reason)
    return resolve_kernel(name)


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Kernel:
    return load(request.param)


@pytest.fixture(params=KERNELS)
def each_kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    chosen = load(request.param)
    monkeypatch.setattr(generate_module, "default_kernel", lambda: chosen)
    # The engine really resolves kernel=None to the chosen one (else this fixture proves nothing).
    assert generate_module.ResultWriter.__init__.__globals__["default_kernel"]() is chosen
    assert generate_module.ResultWriter(_PROBE).kernel is chosen
    yield chosen
