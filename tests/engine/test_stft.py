"""The stft scheme (keras.initializers.STFT) on its own: windows equal scipy's, values equal the DFT
formula to float64 rounding, layouts, slices, the scalar reference of docs/determinism.md, moments, and
every refusal naming its field. Parity with the installed keras: test_stft_keras_parity.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.signal
from initserve.engine import CATALOG, SpecError, catalog, compute_stats, generate, parse_spec
from initserve.engine.samplers import is_elementwise
from initserve.engine.stft import WINDOWS, window

from . import reference as ref
from .golden_tool import SPECS

F64 = npt.NDArray[np.float64]
SCIPY_WINDOWS = ("hann", "hamming", "blackman", "boxcar")
LENGTHS = (1, 2, 3, 16, 31, 64, 400)
SUPPORTED = "hann, hamming, blackman, boxcar, none"


def stft(shape: list[int], layout: str = "keras", dtype: str = "float64", **params: Any) -> npt.NDArray[Any]:
    body = {"shape": shape, "scheme": "stft", "layout": layout, "dtype": dtype, "params": params}
    return generate(parse_spec(body))


def formula(frames: int, bins: int, side: str, name: str, scaling: str, periodic: bool) -> F64:
    """The keras formula in plain float64 numpy: scipy's window, numpy's cos/sin of 2π·t·f/N."""
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    f = np.arange(bins, dtype=np.float64)[None, None, :]
    theta = 2.0 * np.pi * t * f / (2.0 * (bins - 1))
    value = np.cos(theta) if side == "real" else -np.sin(theta)
    if name == "none":
        return value
    w = scipy.signal.get_window(name, frames, fftbins=periodic).reshape(frames, 1, 1)
    scale = {"density": np.sqrt(np.sum(w * w)), "spectrum": np.sum(np.abs(w)), "none": 1.0}[scaling]
    result: F64 = value * w / scale
    return result


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("name", SCIPY_WINDOWS)
def test_windows_are_scipys_to_float64_rounding(name: str, periodic: bool) -> None:
    for length in LENGTHS:
        theirs = scipy.signal.get_window(name, length, fftbins=periodic)
        ours = window(name, length, periodic)
        # |w| ≤ 1, a sum of ≤ 3 terms: both sides are within a few 2^-53 of the exact window.
        assert np.max(np.abs(ours - theirs), initial=0.0) <= 2.0**-50, (name, length, periodic)


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("scaling", ["density", "spectrum", "none"])
@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("side", ["real", "imag"])
def test_values_are_the_dft_formula(side: str, name: str, scaling: str, periodic: bool) -> None:
    for frames, bins in ((16, 9), (31, 17), (64, 33), (400, 201)):
        if name == "hann" and not periodic and frames < 3 and scaling != "none":
            continue
        expected = formula(frames, bins, side, name, scaling, periodic)
        params = {"side": side, "window": name, "scaling": scaling, "periodic": periodic}
        ours = stft([frames, 1, bins], **params)
        # The formula's angle θ (up to 2π·200) takes four roundings (≤ 2·2^-52 relative, so ≤ 2|θ|·2^-52
        # absolute); its cos, window and scale add a few ulp; ours is within a few ulp of exact (§6.4).
        theta = 2.0 * np.pi * np.arange(frames)[:, None, None] * np.arange(bins)[None, None, :] / (2 * (bins - 1))
        peak = np.abs(expected).max()
        float64_error = peak * (2.0 * theta + 4.0) * 2.0**-52
        assert np.all(np.abs(ours - expected) <= float64_error)
        # In float32 ours is that float64 value rounded once: one float32 ulp from the formula's rounding
        # (plus the float64 discrepancy, which matters only for values near 0, e.g. cos(π/2)).
        ours32 = stft([frames, 1, bins], dtype="float32", **params).astype(np.float64)
        expected32 = expected.astype(np.float32)
        ulp32 = np.spacing(np.abs(expected32)).astype(np.float64)
        assert np.all(np.abs(ours32 - expected32) <= ulp32 + float64_error)


def test_torch_layout_is_the_keras_kernel_with_frame_and_frequency_axes_swapped() -> None:
    params = {"side": "imag", "window": "hamming", "periodic": True}
    keras_kernel = stft([20, 1, 11], **params)
    torch_kernel = stft([11, 1, 20], layout="torch", **params)
    assert np.array_equal(torch_kernel, np.transpose(keras_kernel, (2, 1, 0)))


@pytest.mark.parametrize(
    ("shape", "layout", "slice_"),
    [
        ([64, 1, 33], "keras", [[10, 30]]),
        ([64, 1, 33], "keras", [[0, 64], [0, 1], [5, 7]]),
        ([33, 1, 400], "torch", [[32, 33], [0, 1], [399, 400]]),
        ([400, 1, 201], "keras", [[123, 124]]),
    ],
)
def test_a_slice_is_the_slice_of_the_whole_bit_for_bit(shape: list[int], layout: str, slice_: list[list[int]]) -> None:
    body = {"shape": shape, "scheme": "stft", "layout": layout, "params": {"window": "blackman", "side": "imag"}}
    whole = generate(parse_spec(body))
    part = generate(parse_spec({**body, "slice": slice_}))
    index = tuple(slice(a, b) for a, b in slice_)
    assert part.tobytes() == np.ascontiguousarray(whole[index]).tobytes()


def test_is_deterministic_elementwise_and_spelled_as_keras() -> None:
    base = {"shape": [16, 1, 9], "scheme": "stft", "layout": "keras"}
    first = generate(parse_spec(base))
    assert np.array_equal(first, generate(parse_spec({**base, "seed": 99, "name": "frontend.real"})))
    assert np.array_equal(first, generate(parse_spec({**base, "scheme": "STFT"})))
    assert parse_spec({**base, "scheme": "STFT"}).scheme == "stft"
    assert is_elementwise(parse_spec(base).built.sampler)
    described = {entry["name"]: entry for entry in catalog()}["stft"]
    assert described["random_access"] is True and described["reproducibility"] == "bitwise"
    assert described["family"] == "keras" and "STFT" in described["aliases"]
    assert CATALOG["stft"].equivalents["keras"] is not None


STFT_GOLDEN = [body for body in SPECS if body["scheme"] == "stft"]


@pytest.mark.parametrize("body", STFT_GOLDEN, ids=[str(i) for i in range(len(STFT_GOLDEN))])
def test_scalar_reference_reproduces_the_stft_golden_bits(body: dict[str, Any]) -> None:
    shape, layout = body["shape"], body["layout"]
    frames, bins = (shape[0], shape[2]) if layout == "keras" else (shape[2], shape[0])
    cast = ref.CASTS[body.get("dtype", "float32")]
    expected = []
    for index in np.ndindex(*shape):
        t, f = (index[0], index[2]) if layout == "keras" else (index[2], index[0])
        expected.append(cast(ref.stft_element(frames, bins, body.get("params", {}), t, f)))
    data = generate(parse_spec({**body, "slice": None} if "slice" in body else body)).reshape(-1)
    assert [int(bits) for bits in data.view(f"<u{data.itemsize}")] == expected
    assert len(STFT_GOLDEN) >= 5


@pytest.mark.parametrize("side", ["real", "imag"])
@pytest.mark.parametrize(
    ("frames", "bins", "name"), [(16, 9, "hann"), (31, 2, "hamming"), (400, 201, "none"), (5, 3, "boxcar")]
)
def test_expected_moments_are_those_of_the_values(side: str, frames: int, bins: int, name: str) -> None:
    spec = parse_spec(
        {
            "shape": [frames, 1, bins],
            "scheme": "stft",
            "layout": "keras",
            "dtype": "float64",
            "params": {"side": side, "window": name},
        }
    )
    values = generate(spec).astype(np.float64)
    moments = spec.built.sampler.moments()
    assert moments.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
    assert moments.std == pytest.approx(values.std(), rel=1e-9)
    assert moments.low is not None and moments.high is not None
    assert moments.low <= values.min() and values.max() <= moments.high
    if side == "real":  # frequency 0 is w[t]/s itself: the bound max|w|/s is reached
        assert values.max() == pytest.approx(moments.high, rel=1e-12)
    stats = compute_stats(spec)
    assert stats["expected"]["std"] == pytest.approx(values.std(), rel=1e-9)


def _refusal(body: dict[str, Any]) -> list[tuple[Any, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec({"scheme": "stft", "layout": "keras", **body})
    return [(error.loc, error.msg) for error in caught.value.errors]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"shape": [16, 2, 9]}, ("shape", 1), "shape[1] (in_channels) must be 1"),
        ({"shape": [16, 1, 1]}, ("shape", 2), "must be ≥ 2"),
        ({"shape": [1, 1, 16], "layout": "torch"}, ("shape", 0), "must be ≥ 2"),
        ({"shape": [16, 9]}, ("shape",), "exactly 3 dimensions"),
        ({"shape": [16, 1, 9], "params": {"window": "kaiser"}}, ("params", "window"), SUPPORTED),
        ({"shape": [16, 1, 9], "params": {"window": [1.0] * 16}}, ("params", "window"), SUPPORTED),
        ({"shape": [16, 1, 9], "params": {"scaling": "l2"}}, ("params", "scaling"), "density, spectrum, none"),
        ({"shape": [16, 1, 9], "params": {"side": "complex"}}, ("params", "side"), "real, imag"),
        ({"shape": [16, 1, 9], "params": {"periodic": "yes"}}, ("params", "periodic"), "must be true or false"),
        ({"shape": [16, 1, 9], "params": {"periodic": 1}}, ("params", "periodic"), "must be true or false"),
        ({"shape": [2, 1, 9]}, ("params", "scaling"), "all zeros"),
        ({"shape": [16, 1, 9], "layout": None}, ("layout",), "frame_length 16, n_freq 9; layout 'torch'"),
    ],
)
def test_refusals_name_the_field_and_the_rule(body: dict[str, Any], loc: tuple[Any, ...], words: str) -> None:
    if body.get("layout", "keras") is None:
        with pytest.raises(SpecError) as caught:
            parse_spec({"scheme": "stft", "shape": body["shape"]})
        errors = [(error.loc, error.msg) for error in caught.value.errors]
    else:
        errors = _refusal(body)
    assert any(got == loc and words in msg for got, msg in errors), errors


def test_json_null_is_keras_none_for_window_and_scaling() -> None:
    base = {"shape": [16, 1, 9], "scheme": "stft", "layout": "keras"}
    by_null = parse_spec({**base, "params": {"window": None, "scaling": None}})
    by_name = parse_spec({**base, "params": {"window": "none", "scaling": "none"}})
    assert by_null.canonical_json() == by_name.canonical_json()
    assert '"scaling":"none"' in by_null.canonical_json() and '"window":"none"' in by_null.canonical_json()
    assert generate(by_null).tobytes() == generate(by_name).tobytes()
    with pytest.raises(SpecError, match="must be true or false, got null"):
        parse_spec({**base, "params": {"periodic": None}})


def test_a_zero_window_is_fine_without_scaling_and_periodic_hann_of_two_is_not_zero() -> None:
    assert not np.any(stft([2, 1, 5], window="hann", scaling="none"))
    assert np.any(stft([2, 1, 5], window="hann", periodic=True))
    square = parse_spec({"shape": [9, 1, 9], "scheme": "stft"})  # frame = n_freq: both readings agree
    assert square.layout == "torch"
