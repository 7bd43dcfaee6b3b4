"""STFT kernels (keras.initializers.STFT): the windowed DFT basis as a conv kernel, from exact operations.

A kernel of frame length T and n_freq = F frequency bins (F = fft_length // 2 + 1, so the DFT length is
N = 2(F − 1)) holds, for t < T and f < F,

    real: w[t]·cos(2π·t·f/N) / s        imag: w[t]·(−sin(2π·t·f/N)) / s

— the real or imaginary part of the DFT factor e^{−2πi·t·f/N} — with w a scipy window and s its L2
norm ("density"), L1 norm ("spectrum") or 1. keras lays it out as (T, 1, F) (its STFTSpectrogram
layer folds channels into the batch); torch's Conv1d weight for the same filter bank is (F, 1, T).

Every value is made with exactly rounded IEEE operations in a fixed order (docs/determinism.md §6.5),
the cosines by :func:`~initserve.engine.trig.cos_pi_ratio`; element (t, f) needs only t, f and the
window's scale, so any slice is computed on its own, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from .samplers import Moments
from .trig import cos_pi_ratio

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

# scipy.signal.windows' general_cosine coefficients a_k: w[n] = Σ_k (−1)^k·a_k·cos(2πkn/(L − 1)).
WINDOW_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "hann": (0.5, 0.5),
    "hamming": (0.54, 1.0 - 0.54),  # scipy's general_hamming(0.54): 1 − α is rounded once, as there
    "blackman": (0.42, 0.5, 0.08),
}
WINDOWS = ("hann", "hamming", "blackman", "boxcar", "none")
SCALINGS = ("density", "spectrum", "none")
STFT_MAX_FRAME = 1 << 22  # the window is held whole (32 MiB of float64) and summed once
STFT_MAX_FREQ = (1 << 30) + 1  # N = 2(F − 1) ≤ 2^31: far inside cos_pi_ratio's 2^40


def window(name: str, length: int, periodic: bool) -> F64:
    """scipy.signal.get_window(name, length, fftbins=periodic) for the windows in WINDOWS, from exact ops.

    Symmetric: L = length points; periodic: the first ``length`` of L = length + 1. With D = L − 1,
    c_k(n) = cos_pi_ratio(2kn, D) = cos(2πkn/D), and w[n] = fl(a₀ − fl(a₁·c₁)) (hann, hamming) or
    fl(fl(a₀ − fl(a₁·c₁)) + fl(a₂·c₂)) (blackman); boxcar and "none" are 1. A length of 1 is [1.0]
    whatever the window (scipy's guard).
    """
    if name in ("boxcar", "none") or length == 1:
        return np.ones(length)
    coefficients = WINDOW_COEFFICIENTS[name]
    span = length if periodic else length - 1
    n = np.arange(length, dtype=np.int64)
    values = np.full(length, coefficients[0])
    for k, a in enumerate(coefficients[1:], start=1):
        term = cos_pi_ratio(2 * k * n, span)
        term *= a
        if k % 2:
            values -= term
        else:
            values += term
    return values


@dataclass(frozen=True)
class STFTKernel:
    """Element (t, f) of an STFT kernel (module docstring) over the flat index of its 3-D tensor.

    ``layout`` keras: shape (frame_length, 1, n_freq), element i is (t, f) = divmod(i, n_freq); torch:
    (n_freq, 1, frame_length), (f, t) = divmod(i, frame_length).
    """

    frame_length: int
    n_freq: int
    side: str  # "real" | "imag"
    window_name: str  # one of WINDOWS
    scaling: str  # one of SCALINGS
    periodic: bool
    layout: str
    uses_words = False

    # The (frame, frequency) reading of the shape: the layout-ambiguity check (spec._law) compares these
    # between the keras and torch readings, which differ unless frame_length = n_freq.
    @property
    def rows(self) -> int:
        return self.frame_length

    @property
    def cols(self) -> int:
        return self.n_freq

    @cached_property
    def window(self) -> F64:
        return window(self.window_name, self.frame_length, self.periodic)

    @cached_property
    def scale(self) -> float:
        """s: √(Σ w²) (density) or Σ |w| (spectrum), each sum correctly rounded (math.fsum); 1 without a
        window or a scaling (keras scales only a window)."""
        if self.window_name == "none" or self.scaling == "none":
            return 1.0
        w = self.window
        if self.scaling == "density":
            return math.sqrt(math.fsum((w * w).tolist()))
        return math.fsum(np.abs(w).tolist())

    def at(self, t: I64, f: I64) -> F64:
        half = self.n_freq - 1  # N/2: cos(2π·t·f/N) = cos(π·x/half), x = t·f (< 2^62, exact in int64)
        x = np.mod(t * f, 2 * half)
        # imag: cos(πx/half + π/2) = −sin(πx/half), as the cosine of (2x + half)/(2·half) half-turns
        value = cos_pi_ratio(x, half) if self.side == "real" else cos_pi_ratio(2 * x + half, 2 * half)
        if self.window_name != "none":
            value *= self.window[t]
            if self.scaling != "none":
                value /= self.scale
        return value

    def values(self, words: U64 | None, start: int, count: int) -> F64:
        index = np.arange(start, start + count, dtype=np.int64)
        if self.layout == "keras":
            t, f = np.divmod(index, self.n_freq)
        else:
            f, t = np.divmod(index, self.frame_length)
        return self.at(t, f)

    def moments(self) -> Moments:
        """From closed forms of Σ_f and Σ_f of squares per frame index t (float64, not bitwise): with
        h = n_freq − 1, Σ_f cos(πtf/h) = h + 1 (t ≡ 0 mod 2h), 1 (t even), 0 (t odd); Σ_f cos² = h + 1
        (t ≡ 0 mod h) else (h + 2)/2; Σ_f −sin(πtf/h) = −cot(πt/(2h)) (t odd) else 0; Σ_f sin² = 0
        (t ≡ 0 mod h) else h/2."""
        h = self.n_freq - 1
        t = np.arange(self.frame_length, dtype=np.int64)
        if self.side == "real":
            sums = np.where(t % (2 * h) == 0, h + 1.0, np.where(t % 2 == 0, 1.0, 0.0))
            squares = np.where(t % h == 0, h + 1.0, (h + 2.0) / 2.0)
        else:
            odd = t % 2 == 1
            sums = np.zeros(self.frame_length)
            sums[odd] = -1.0 / np.tan(np.pi * t[odd] / (2.0 * h))
            squares = np.where(t % h == 0, 0.0, h / 2.0)
        w = self.window
        s = self.scale
        numel = self.frame_length * self.n_freq
        total = math.fsum((w * sums).tolist()) / s
        square_total = math.fsum((w * w * squares).tolist()) / (s * s)
        mean = total / numel
        std = math.sqrt(max(square_total / numel - mean * mean, 0.0))
        peak = self.max_abs()
        return Moments(mean, std, -peak, peak)

    def max_abs(self) -> float:
        return float(np.abs(self.window).max()) / self.scale
