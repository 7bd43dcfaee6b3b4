"""A second implementation of the generation algorithm, written from docs/determinism.md alone.

Scalar pure Python: its own Philox4x64-10, its own key derivation, uniform mapping, logarithm,
AS 241 quantile and casts — no numpy. If the engine and this file agree bit for bit, the document
is precise enough to reimplement the algorithm in another language.
"""

from __future__ import annotations

import hashlib
import math
import struct

MASK64 = (1 << 64) - 1
PHILOX_M0, PHILOX_M1 = 0xD2E7470EE14C6C93, 0xCA5A826395121157
PHILOX_W0, PHILOX_W1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B


def philox4x64_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(10):
        if round_index:
            k0, k1 = (k0 + PHILOX_W0) & MASK64, (k1 + PHILOX_W1) & MASK64
        product0, product1 = PHILOX_M0 * c0, PHILOX_M1 * c2
        hi0, lo0 = product0 >> 64, product0 & MASK64
        hi1, lo1 = product1 >> 64, product1 & MASK64
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def key_words(seed: int, name: str) -> tuple[int, int]:
    digest = hashlib.sha256(b"initserve/v1\x00" + seed.to_bytes(8, "little") + name.encode()).digest()
    return int.from_bytes(digest[0:8], "little"), int.from_bytes(digest[8:16], "little")


def element_word(key: tuple[int, int], index: int, stream: int = 0) -> int:
    block = philox4x64_10((index // 4, stream, 0, 0), key)
    return block[index % 4]


def uniform_01(word: int) -> float:
    return (word >> 11) * 2.0**-53


def uniform_open(word: int) -> float:
    return ((word >> 11) | 1) * 2.0**-53


LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10


def log_ops(x: float) -> float:
    mantissa, exponent = math.frexp(x)
    if mantissa < 0.70710678118654752440:
        mantissa, exponent = mantissa * 2.0, exponent - 1
    s = (mantissa - 1.0) / (mantissa + 1.0)
    z = s * s
    poly = 1.0 / 23
    for k in range(10, 0, -1):
        poly = poly * z + 1.0 / (2 * k + 1)
    poly = poly * z + 1.0
    e = float(exponent)
    return e * LN2_HI + (e * LN2_LO + 2.0 * (s * poly))


A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)


def horner(c: tuple[float, ...], r: float) -> float:
    acc = c[7] * r
    for k in range(6, 0, -1):
        acc = (acc + c[k]) * r
    return acc + c[0]


def quantile(p: float) -> float:
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return (q * horner(A, r)) / horner(B, r)
    r = math.sqrt(-log_ops(p if q < 0 else 1.0 - p))
    near = r <= 5.0
    z = horner(C, r - 1.6) / horner(D, r - 1.6) if near else horner(E, r - 5.0) / horner(F, r - 5.0)
    return -z if q < 0 else z


def truncated_normal(word: int, mean: float, std: float, low: float, high: float, p_low: float, p_high: float) -> float:
    """``p_low``/``p_high``: Φ(α), Φ(β) of the (possibly mirrored) interval, from the document."""
    alpha, beta = (low - mean) / std, (high - mean) / std
    mirrored = alpha >= 0.0
    if mirrored:
        alpha, beta = -beta, -alpha
    u = uniform_open(word)
    finite = not (math.isinf(alpha) and math.isinf(beta))
    p = u
    if finite:
        p = min(max((p_high - p_low) * u + p_low, 2.0**-1074), 1.0 - 2.0**-53)
    z = quantile(p)
    if finite:
        z = min(max(z, alpha), beta)
    if mirrored:
        z = -z
    x = std * z + mean
    return min(max(x, low), high) if finite else x


def bits_float32(x: float) -> int:
    return int.from_bytes(struct.pack("<f", x), "little")


def bits_float16(x: float) -> int:
    return int.from_bytes(struct.pack("<e", x), "little")


def bits_float64(x: float) -> int:
    return int.from_bytes(struct.pack("<d", x), "little")


def bits_bfloat16(x: float) -> int:
    """Round-to-nearest-even of the exact double to 8 significant bits, by integer arithmetic."""
    if x == 0.0:
        return 0x8000 if math.copysign(1.0, x) < 0 else 0
    sign = 0x8000 if x < 0 else 0
    _, exponent = math.frexp(abs(x))  # |x| = m·2^exponent, m in [0.5, 1)
    quantum_exponent = max(exponent - 8, -133)  # 8 significant bits; subnormal quantum 2^-133
    scaled = abs(x) / 2.0**quantum_exponent  # exact: a power-of-two division
    whole = math.floor(scaled)
    fraction = scaled - whole
    if fraction > 0.5 or (fraction == 0.5 and whole % 2 == 1):
        whole += 1
    value = whole * 2.0**quantum_exponent
    return sign | (bits_float32(value) >> 16)


CASTS = {"float32": bits_float32, "float64": bits_float64, "float16": bits_float16, "bfloat16": bits_bfloat16}


# --- structured schemes (docs/determinism.md "Structured schemes") ----------------------------------
def hadamard_sign(r: int, c: int) -> float:
    return -1.0 if bin(r & c).count("1") % 2 else 1.0


def word_sign(key: tuple[int, int], index: int, stream: int) -> float:
    return -1.0 if element_word(key, index, stream) >> 63 else 1.0


def signed_hadamard(key: tuple[int, int], rows: int, cols: int, gain: float, r: int, c: int) -> float:
    scale = gain / math.sqrt(max(rows, cols))
    return hadamard_sign(r, c) * word_sign(key, r, 2) * word_sign(key, c, 3) * scale


def zero_matrix(out: int, inp: int, constant: str, o: int, i: int) -> float:
    if out <= inp:
        return 1.0 if o == i else 0.0
    m = (out - 1).bit_length()
    c = math.sqrt(2.0 ** (-(m - 1) if constant == "paper" else -m))
    return hadamard_sign(o, i) * c


COS_TAYLOR = [(-1) ** k / math.factorial(2 * k) for k in range(11, -1, -1)]
SIN_TAYLOR = [(-1) ** k / math.factorial(2 * k + 1) for k in range(10, -1, -1)]


def cos_pi_ratio(t: int, d: int) -> float:
    """cos(π·t/d): integer reduction to a ∈ [0, d/2], y = a·fl(π/(2d)), Taylor polynomials in y²."""
    u = t % (2 * d)
    if u > d:
        u = 2 * d - u
    sign = 1.0
    if 2 * u > d:
        u, sign = d - u, -1.0
    sine = 4 * u > d
    a = d - 2 * u if sine else 2 * u
    y = float(a) * (math.pi / (2 * d))
    z = y * y
    coefficients = SIN_TAYLOR if sine else COS_TAYLOR
    acc = coefficients[0]
    for coefficient in coefficients[1:]:
        acc = acc * z + coefficient
    value = acc * y if sine else acc
    return -value if sign < 0 else value


def dct_element(rows: int, cols: int, gain: float, r: int, c: int) -> float:
    n = max(rows, cols)
    k, j = (r, c) if rows <= cols else (c, r)
    alpha = gain * math.sqrt(1.0 / n) if k == 0 else gain * math.sqrt(2.0 / n)
    return cos_pi_ratio((2 * j + 1) * k, 2 * n) * alpha


STFT_WINDOW_COEFFICIENTS = {"hann": [0.5, 0.5], "hamming": [0.54, 1.0 - 0.54], "blackman": [0.42, 0.5, 0.08]}


def stft_window(name: str, length: int, periodic: bool) -> list[float]:
    """docs/determinism.md §7.1 STFT: w[n] = a₀, then − fl(a₁·c₁), then + fl(a₂·c₂); c_k = cos(π·2kn/D)."""
    if name in ("boxcar", "none") or length == 1:
        return [1.0] * length
    span = length if periodic else length - 1
    values = []
    for n in range(length):
        w = STFT_WINDOW_COEFFICIENTS[name][0]
        for k, a in enumerate(STFT_WINDOW_COEFFICIENTS[name][1:], start=1):
            term = a * cos_pi_ratio(2 * k * n, span)
            w = w - term if k % 2 else w + term
        values.append(w)
    return values


def stft_element(frames: int, bins: int, params: dict[str, object], t: int, f: int) -> float:
    """Element (t, f) of the STFT kernel: trig, then × w[t], then ÷ s (each one rounding)."""
    side, name = params.get("side", "real"), str(params.get("window", "hann"))
    scaling, periodic = params.get("scaling", "density"), bool(params.get("periodic", False))
    h = bins - 1
    x = (t * f) % (2 * h)
    value = cos_pi_ratio(x, h) if side == "real" else cos_pi_ratio(2 * x + h, 2 * h)
    if name == "none":
        return value
    w = stft_window(name, frames, periodic)
    value = value * w[t]
    if scaling == "density":
        value = value / math.sqrt(math.fsum(v * v for v in w))
    elif scaling == "spectrum":
        value = value / math.fsum(abs(v) for v in w)
    return value


# --- orthogonal, algorithm 2 (docs/determinism.md §7.1): blocked Householder, every sum sequential --
PANEL = 32


def seq_sum(products: list[float]) -> float:
    """s = p₀; s = s + pᵢ for i = 1, 2, …"""
    total = products[0]
    for value in products[1:]:
        total = total + value
    return total


def haar_q(a: list[list[float]]) -> list[list[float]]:
    """Q·diag(sign R_jj) of the (m, n) matrix ``a`` (m ≥ n), following the document step by step."""
    m, n = len(a), len(a[0])
    a = [row[:] for row in a]
    taus = [0.0] * n
    panels: list[tuple[int, list[list[float]], list[list[float]]]] = []
    for j0 in range(0, n, PANEL):
        b = min(PANEL, n - j0)
        for t in range(b):  # the panel, one reflector at a time
            j = j0 + t
            alpha = a[j][j]
            sigma = seq_sum([a[i][j] * a[i][j] for i in range(j + 1, m)]) if j + 1 < m else 0.0
            if sigma == 0.0:
                tau = 0.0
                for i in range(j + 1, m):
                    a[i][j] = 0.0
            else:
                norm = math.sqrt(alpha * alpha + sigma)
                beta = -norm if alpha >= 0.0 else norm
                tau = (beta - alpha) / beta
                d = alpha - beta
                for i in range(j + 1, m):
                    a[i][j] = a[i][j] / d
                a[j][j] = beta
            taus[j] = tau
            v = [1.0 if i == j else a[i][j] for i in range(j, m)]
            for k in range(j + 1, j0 + b):
                w = seq_sum([v[i - j] * a[i][k] for i in range(j, m)])
                tw = tau * w
                for i in range(j, m):
                    a[i][k] = a[i][k] - v[i - j] * tw
        rows = m - j0
        big_v = [
            [0.0 if r < col else 1.0 if r == col else a[j0 + r][j0 + col] for col in range(b)] for r in range(rows)
        ]
        t_matrix = [[0.0] * b for _ in range(b)]
        for t in range(b):
            t_matrix[t][t] = taus[j0 + t]
            if t == 0:
                continue
            y = [seq_sum([big_v[r][col] * big_v[r][t] for r in range(rows)]) for col in range(t)]
            for col in range(t):
                z = seq_sum([t_matrix[col][p] * y[p] for p in range(t)])
                t_matrix[col][t] = -(taus[j0 + t] * z)
        if j0 + b < n:
            _apply_block(big_v, t_matrix, a, j0, j0 + b, transpose=True)
        panels.append((j0, big_v, t_matrix))
    q = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(m)]
    for j0, big_v, t_matrix in reversed(panels):
        _apply_block(big_v, t_matrix, q, j0, j0, transpose=False)
    signs = [-1.0 if a[j][j] < 0.0 else 1.0 for j in range(n)]
    return [[q[i][j] * signs[j] for j in range(n)] for i in range(m)]


def _apply_block(
    v: list[list[float]], t_matrix: list[list[float]], c: list[list[float]], r0: int, k0: int, *, transpose: bool
) -> None:
    """C = c[r0:, k0:] ← C − V·(T'·(Vᵀ·C)), T' = Tᵀ (factorization) or T (forming Q)."""
    rows, b, cols = len(v), len(t_matrix), len(c[0]) - k0
    w = [[seq_sum([v[r][col] * c[r0 + r][k0 + k] for r in range(rows)]) for k in range(cols)] for col in range(b)]

    def t_prime(row: int, col: int) -> float:
        return t_matrix[col][row] if transpose else t_matrix[row][col]

    w2 = [[seq_sum([t_prime(col, p) * w[p][k] for p in range(b)]) for k in range(cols)] for col in range(b)]
    for r in range(rows):
        for k in range(cols):
            c[r0 + r][k0 + k] = c[r0 + r][k0 + k] - seq_sum([v[r][col] * w2[col][k] for col in range(b)])


def orthogonal(normals: list[float], rows: int, cols: int, gain: float) -> list[float]:
    """Algorithm-2 orthogonal values in C order from the (rows, cols) standard normals (C order)."""
    a = [normals[r * cols : (r + 1) * cols] for r in range(rows)]
    wide = rows < cols
    if wide:
        a = [list(column) for column in zip(*a, strict=True)]
    q = haar_q(a)
    if wide:
        q = [list(column) for column in zip(*q, strict=True)]
    return [value * gain for row in q for value in row]
