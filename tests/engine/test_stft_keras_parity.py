"""Parity of the stft scheme with the real keras.initializers.STFT (keras 3, jax backend).

keras computes the kernel in float32: the angle θ = fl(fl(−2t·fl(f/N))·fl(π)) carries up to
~3.5·2⁻²⁴·|θ| of rounding (three roundings and float32's π, 0.47·2⁻²⁴ off), then float32 cos/sin
(≤ 2 ulp), the float32 window, product, a float32 sum for the scale and a quotient. Ours is the exact
value to a few float64 ulp, rounded once to float32. So, with peak = max|kernel| and u = 2⁻²⁴,

    |ours − keras| ≤ peak·u·(4·|θ| + 6 + log₂ T)

— a few float32 ulps of the peak where θ is small (measured ≤ 3.4 ulp for θ < 1), plus keras' own angle
rounding, which grows with θ (at T = 400, θ reaches 2π·200 and keras is ~10⁻⁴ off the exact kernel).
Measured: the largest error is 0.72 of this bound over the grid below. The same bound refuses a
symmetric window where keras uses a periodic one, so it can see a wrong window.

Skipped cleanly when jax or keras is not installed (they are in the ``dev`` extra).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from initserve.engine import SpecError, generate, parse_spec

from .keras_on_jax import import_keras_on_jax

jax, keras = import_keras_on_jax()

F64 = npt.NDArray[np.float64]
U = 2.0**-24
# (frame_length, n_freq): fft_length = frame_length, and a longer fft_length (512) for 400 and 64.
SHAPES = [(16, 9), (31, 16), (64, 33), (64, 257), (400, 201), (400, 257)]
WINDOWS = ["hann", "hamming", "blackman", "boxcar", None]
SCALINGS = ["density", "spectrum", None]


def ours(frames: int, bins: int, side: str, window: str | None, scaling: str | None, periodic: bool) -> F64:
    params = {"side": side, "window": window or "none", "scaling": scaling or "none", "periodic": periodic}
    spec = parse_spec({"shape": [frames, 1, bins], "scheme": "STFT", "layout": "keras", "params": params})
    values = generate(spec)
    assert values.dtype == np.float32
    return values.astype(np.float64)


def theirs(frames: int, bins: int, side: str, window: str | None, scaling: str | None, periodic: bool) -> F64:
    kernel = np.asarray(keras.initializers.STFT(side, window, scaling, periodic)((frames, 1, bins)))
    assert kernel.dtype == np.float32
    return kernel.astype(np.float64)


def tolerance(frames: int, bins: int, peak: float) -> F64:
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    f = np.arange(bins, dtype=np.float64)[None, None, :]
    theta = 2.0 * np.pi * t * f / (2.0 * (bins - 1))
    result: F64 = peak * U * (4.0 * theta + 6.0 + math.log2(frames))
    return result


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("side", ["real", "imag"])
def test_values_equal_keras_to_its_float32_rounding(side: str, window: str | None, scaling: str | None) -> None:
    for frames, bins in SHAPES:
        for periodic in (False, True):
            mine = ours(frames, bins, side, window, scaling, periodic)
            keras_kernel = theirs(frames, bins, side, window, scaling, periodic)
            assert mine.shape == keras_kernel.shape
            peak = float(np.abs(mine).max())
            assert peak == pytest.approx(float(np.abs(keras_kernel).max()), rel=1e-6)
            error = np.abs(mine - keras_kernel)
            assert np.all(error <= tolerance(frames, bins, peak)), (frames, bins, periodic, float(error.max()))


def test_the_tolerance_sees_a_wrong_window_form() -> None:
    """Symmetric vs periodic hann differ by far more than the bound: the comparison is not vacuous."""
    for frames, bins in ((16, 9), (64, 33), (400, 201)):
        mine = ours(frames, bins, "real", "hann", "density", False)
        keras_kernel = theirs(frames, bins, "real", "hann", "density", True)
        assert np.any(np.abs(mine - keras_kernel) > tolerance(frames, bins, float(np.abs(mine).max())))


def test_keras_returns_one_input_channel_whatever_it_is_asked_so_more_are_refused() -> None:
    """keras' quirk: STFT()((T, C, F)) is (T, 1, F) for any C; we refuse C ≠ 1 rather than change the shape."""
    assert np.asarray(keras.initializers.STFT()((16, 2, 9))).shape == (16, 1, 9)
    with pytest.raises(SpecError) as caught:
        parse_spec({"shape": [16, 2, 9], "scheme": "STFT", "layout": "keras"})
    assert [error.loc for error in caught.value.errors] == [("shape", 1)]


def test_defaults_are_keras_defaults() -> None:
    default: Any = keras.initializers.STFT()
    assert (default.side, default.window, default.scaling, default.periodic) == ("real", "hann", "density", False)
    body = {"shape": [16, 1, 9], "scheme": "STFT", "layout": "keras"}
    assert dict(parse_spec(body).params) == {"periodic": False, "scaling": "density", "side": "real", "window": "hann"}


def test_every_keras_initializer_is_spelled_in_the_catalog() -> None:
    """docs/schemes.md's opening claim: every class of keras.initializers (under one of its names) is a
    catalog name, an alias, a refused near miss with its equivalent, or named in an equivalents column."""
    import inspect

    from initserve.engine.catalog import ALIASES, CATALOG, NEAR_MISSES

    spelled = " ".join(str(text) for scheme in CATALOG.values() for text in scheme.equivalents.values() if text)
    names: dict[type, list[str]] = {}
    for name, value in vars(keras.initializers).items():
        base = keras.initializers.Initializer
        if inspect.isclass(value) and issubclass(value, base) and value is not base:
            names.setdefault(value, []).append(name)
    assert len(names) >= 15
    missing = [
        spellings
        for spellings in names.values()
        if not any(n in CATALOG or n in ALIASES or n in NEAR_MISSES or f"{n}(" in spelled for n in spellings)
    ]
    assert missing == []
