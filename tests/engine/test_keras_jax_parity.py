"""Parity with the real keras.initializers (keras 3, jax backend) and jax.nn.initializers.

Our generator is not theirs, so the laws are compared, at three levels:

1. **Constants, exactly.** A framework initializer is its unit sampler (``jax.random.truncated_normal(key,
   -2, 2)``, ``normal``, ``uniform``; keras' ``keras.random.*`` with the same seed) times constants it
   computes from the shape (fans) and params. We draw that unit sample with the same key, fit
   ``theirs = α·unit + β`` (the residual must be rounding), and compare α, β with the ``expected``
   mean / std / low / high our statistics report for the same spec: the fan rule, the scale, the
   0.8796… correction and the ±2σ₀ cut are checked to float32 rounding, computed by the framework.
2. **Laws, from samples.** ~2.6·10⁵ values each (2-D dense, conv1d, conv2d and conv3d kernels in
   the framework's own (*k, in, out) layout, fans in ≠ out): the standard deviations agree within
   Z_MAX standard errors (from the sample size and kurtosis) — and the same test must reject our
   sample with its spread scaled by 1.02, so it can see a 2 % std error —, the means agree, a
   two-sample KS test does not reject, and both samples stay inside the support we report and reach
   its edge (truncated and uniform laws).
3. **Structure, exactly.** Orthogonal, delta orthogonal: the framework's flattened matrix and ours
   have orthonormal rows or columns in the same orientation, × the same gain; Identity, Zeros, Ones,
   Constant: bit for bit in float32.

Skipped cleanly when jax or keras is not installed (they are in the ``dev`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from initserve.engine import compute_stats, generate, parse_spec
from scipy import stats

from .keras_on_jax import import_keras_on_jax

jax, keras = import_keras_on_jax()

import jax.numpy as jnp  # noqa: E402  (after the skip: jax is optional)

jinit = jax.nn.initializers
kinit = keras.initializers

F64 = npt.NDArray[np.float64]
Sampler = Callable[[tuple[int, ...], int], F64]
Z_MAX = 5.0  # a two-sided z beyond 5 has probability 6e-7 under the null: no flaky failures
KS_ACCEPT = 1e-4
OUR_SEED = 1234
# Framework-layout kernels of ~2.6e5 elements with fan_in ≠ fan_out (and both ≠ the torch reading).
SHAPES = {
    "dense": (640, 400),
    "conv1d": (5, 200, 256),
    "conv2d": (3, 3, 160, 192),
    "conv3d": (3, 3, 3, 96, 100),
}
TRUNCATED_STD = float(stats.truncnorm.std(-2.0, 2.0))  # std of N(0, 1) cut at ±2: 0.8796…


def as_f64(values: Any) -> F64:
    return np.asarray(values, dtype=np.float64)


def ours(spec: Mapping[str, Any]) -> F64:
    return as_f64(generate(parse_spec(spec))).reshape(tuple(spec["shape"]))


def expected(spec: Mapping[str, Any]) -> dict[str, float]:
    report = compute_stats(parse_spec(spec))
    return {key: float(value) for key, value in report["expected"].items() if value is not None}


# --- the frameworks' samplers ---------------------------------------------------------------------------
def jax_sampler(init: Any) -> Sampler:
    return lambda shape, seed: as_f64(init(jax.random.key(seed), shape, jnp.float32))


def keras_sampler(make: Callable[[int], Any]) -> Sampler:
    return lambda shape, seed: as_f64(make(seed)(shape, dtype="float32"))


# The unit samplers the frameworks scale: same key or seed → the same unit draws.
JAX_UNIT: Mapping[str, Sampler] = {
    "truncated": lambda shape, seed: as_f64(jax.random.truncated_normal(jax.random.key(seed), -2.0, 2.0, shape)),
    "normal": lambda shape, seed: as_f64(jax.random.normal(jax.random.key(seed), shape)),
    "uniform": lambda shape, seed: as_f64(jax.random.uniform(jax.random.key(seed), shape)),
}
KERAS_UNIT: Mapping[str, Sampler] = {
    "truncated": lambda shape, seed: as_f64(keras.random.truncated_normal(shape, 0.0, 1.0, seed=seed)),
    "normal": lambda shape, seed: as_f64(keras.random.normal(shape, 0.0, 1.0, seed=seed)),
    "uniform": lambda shape, seed: as_f64(keras.random.uniform(shape, 0.0, 1.0, seed=seed)),
}


@dataclass(frozen=True)
class Case:
    """One framework call and the spec that claims to reproduce it (docs/schemes.md's equivalents)."""

    label: str
    framework: str  # "keras" | "jax"
    sample: Sampler
    scheme: str
    law: str  # "truncated" (cut at ±2σ₀), "normal" (untruncated), "uniform"
    params: Mapping[str, Any] = field(default_factory=dict)
    layout: str | None = "keras"
    # the framework's fans are not the layout's (jax in_axis/out_axis/batch_axis): explicit fans
    fans: Callable[[tuple[int, ...]], tuple[int, int]] | None = None
    shapes: tuple[str, ...] = ("conv2d",)
    # constants the user writes (RandomNormal's stddev): the unit fit is checked, not fan rules
    scaled: bool = True

    def spec(self, shape: tuple[int, ...]) -> dict[str, Any]:
        params = dict(self.params)
        if self.fans is not None:
            params["fan_in"], params["fan_out"] = self.fans(shape)
        body: dict[str, Any] = {"shape": list(shape), "scheme": self.scheme, "params": params, "seed": OUR_SEED}
        if self.layout is not None:
            body["layout"] = self.layout
        return body


def jax_axis_fans(
    in_axis: int | Sequence[int], out_axis: int | Sequence[int], batch_axis: Sequence[int] = ()
) -> Callable[[tuple[int, ...]], tuple[int, int]]:
    """docs/schemes.md's translation of jax's axes into explicit fans: fan = ∏(its axes) · receptive
    field, the receptive field being ∏shape / (∏in · ∏out · ∏batch)."""

    def size(shape: tuple[int, ...], axes: int | Sequence[int]) -> int:
        return math.prod(shape[a] for a in ([axes] if isinstance(axes, int) else axes))

    def fans(shape: tuple[int, ...]) -> tuple[int, int]:
        fan_in, fan_out, batch = size(shape, in_axis), size(shape, out_axis), size(shape, batch_axis)
        receptive = math.prod(shape) / (fan_in * fan_out * batch)
        return round(fan_in * receptive), round(fan_out * receptive)

    return fans


def axes_fans(in_axes: Sequence[int], out_axes: Sequence[int]) -> Callable[[tuple[int, ...]], tuple[int, int]]:
    """docs/schemes.md's translation of keras' input_axes/output_axes: fan = ∏ of those dims, no
    receptive field."""
    return lambda shape: (math.prod(shape[a] for a in in_axes), math.prod(shape[a] for a in out_axes))


ALL = tuple(SHAPES)


def keras_case(
    name: str, make: Callable[[int], Any], scheme: str, law: str, params: Mapping[str, Any] | None = None, **kw: Any
) -> Case:
    return Case(f"keras-{name}", "keras", keras_sampler(make), scheme, law, params or {}, **kw)


def jax_case(name: str, init: Any, scheme: str, law: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Case:
    return Case(f"jax-{name}", "jax", jax_sampler(init), scheme, law, params or {}, **kw)


def named_keras(name: str, scheme: str, law: str, **kw: Any) -> Case:
    return keras_case(name, lambda s: getattr(kinit, name)(seed=s), scheme, law, **kw)


def vs_keras(scale: float, mode: str, dist: str, **kw: Any) -> Callable[[int], Any]:
    return lambda s: kinit.VarianceScaling(scale, mode, dist, seed=s, **kw)


# keras' distribution names → ours (keras "normal" is its truncated normal)
OURS_OF_KERAS = {"truncated_normal": "truncated_normal", "normal": "truncated_normal", "untruncated_normal": "normal"}
LAW_OF = {"truncated_normal": "truncated", "normal": "normal", "uniform": "uniform"}
UNSCALED = {"layout": None, "scaled": False}

CASES: list[Case] = [
    # keras named initializers, and the torch-named schemes docs/schemes.md gives as their equivalents
    named_keras("GlorotUniform", "glorot_uniform", "uniform", shapes=ALL),
    named_keras("GlorotNormal", "glorot_normal", "truncated", shapes=ALL),
    named_keras("HeUniform", "he_uniform", "uniform", shapes=ALL),
    named_keras("HeNormal", "he_normal", "truncated", shapes=ALL),
    named_keras("LecunUniform", "lecun_uniform", "uniform", shapes=ALL),
    named_keras("LecunNormal", "lecun_normal", "truncated", shapes=ALL),
    named_keras("GlorotUniform", "xavier_uniform", "uniform"),
    named_keras("HeUniform", "kaiming_uniform", "uniform", params={"nonlinearity": "relu"}, shapes=("dense",)),
    keras_case(
        "VS(1,fan_avg,untruncated_normal)", vs_keras(1.0, "fan_avg", "untruncated_normal"), "xavier_normal", "normal"
    ),
    keras_case(
        "VS(2,fan_in,untruncated_normal)",
        vs_keras(2.0, "fan_in", "untruncated_normal"),
        "kaiming_normal",
        "normal",
        {"nonlinearity": "relu"},
        shapes=("conv1d",),
    ),
    keras_case(
        "VS(1,fan_in,uniform)",
        vs_keras(1.0, "fan_in", "uniform"),
        "kaiming_uniform",
        "uniform",
        {"nonlinearity": "linear"},
        shapes=("conv3d",),
    ),
    # keras VarianceScaling: every mode × distribution, scale ≠ 1
    *[
        keras_case(
            f"VS(0.7,{mode},{dist})",
            vs_keras(0.7, mode, dist),
            "variance_scaling",
            LAW_OF[OURS_OF_KERAS.get(dist, dist)],
            {"scale": 0.7, "mode": mode, "distribution": OURS_OF_KERAS.get(dist, dist)},
            shapes=ALL if dist == "truncated_normal" else ("conv2d",),
        )
        for mode in ("fan_in", "fan_out", "fan_avg")
        for dist in ("truncated_normal", "normal", "untruncated_normal", "uniform")
    ],
    keras_case(
        "VS(3,fan_out,untruncated_normal)",
        vs_keras(3.0, "fan_out", "untruncated_normal"),
        "variance_scaling",
        "normal",
        {"scale": 3.0, "mode": "fan_out", "distribution": "untruncated_normal"},
        shapes=("dense",),
    ),
    # keras input_axes/output_axes: explicit fans
    keras_case(
        "VS(input_axes=(0,2),output_axes=(3,))",
        vs_keras(2.0, "fan_avg", "uniform", input_axes=(0, 2), output_axes=(3,)),
        "variance_scaling",
        "uniform",
        {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"},
        fans=axes_fans((0, 2), (3,)),
        layout=None,
    ),
    # keras plain random initializers: the constants are the user's (keras' defaults written out)
    keras_case(
        "RandomNormal()",
        lambda s: kinit.RandomNormal(seed=s),
        "normal",
        "normal",
        {"std": 0.05},
        shapes=("dense",),
        **UNSCALED,
    ),
    keras_case(
        "RandomNormal(0.3,2)",
        lambda s: kinit.RandomNormal(0.3, 2.0, seed=s),
        "normal",
        "normal",
        {"mean": 0.3, "std": 2.0},
        **UNSCALED,
    ),
    keras_case(
        "RandomUniform()",
        lambda s: kinit.RandomUniform(seed=s),
        "uniform",
        "uniform",
        {"low": -0.05, "high": 0.05},
        shapes=("dense",),
        **UNSCALED,
    ),
    keras_case(
        "RandomUniform(-0.2,1.3)",
        lambda s: kinit.RandomUniform(-0.2, 1.3, seed=s),
        "uniform",
        "uniform",
        {"low": -0.2, "high": 1.3},
        shapes=("conv1d",),
        **UNSCALED,
    ),
    keras_case(
        "TruncatedNormal()",
        lambda s: kinit.TruncatedNormal(seed=s),
        "truncated_normal",
        "truncated",
        {"std": 0.05},
        shapes=("dense",),
        **UNSCALED,
    ),
    keras_case(
        "TruncatedNormal(0.5,1.5)",
        lambda s: kinit.TruncatedNormal(0.5, 1.5, seed=s),
        "truncated_normal",
        "truncated",
        {"mean": 0.5, "std": 1.5},
        shapes=("conv3d",),
        **UNSCALED,
    ),
    # jax named initializers (its xavier_*/kaiming_* are its glorot_*/he_*: truncated normals)
    jax_case("glorot_uniform", jinit.glorot_uniform(), "glorot_uniform", "uniform", shapes=ALL),
    jax_case("glorot_normal", jinit.glorot_normal(), "glorot_normal", "truncated", shapes=ALL),
    jax_case("he_uniform", jinit.he_uniform(), "he_uniform", "uniform", shapes=ALL),
    jax_case("he_normal", jinit.he_normal(), "he_normal", "truncated", shapes=ALL),
    jax_case("lecun_uniform", jinit.lecun_uniform(), "lecun_uniform", "uniform", shapes=ALL),
    jax_case("lecun_normal", jinit.lecun_normal(), "lecun_normal", "truncated", shapes=ALL),
    jax_case("xavier_uniform", jinit.xavier_uniform(), "glorot_uniform", "uniform", shapes=("conv1d",)),
    jax_case("xavier_normal", jinit.xavier_normal(), "glorot_normal", "truncated"),
    jax_case("kaiming_uniform", jinit.kaiming_uniform(), "he_uniform", "uniform", shapes=("conv3d",)),
    jax_case("kaiming_normal", jinit.kaiming_normal(), "he_normal", "truncated"),
    jax_case(
        "VS(2,fan_in,normal)",
        jinit.variance_scaling(2.0, "fan_in", "normal"),
        "kaiming_normal",
        "normal",
        {"nonlinearity": "relu"},
    ),
    # jax variance_scaling: every mode (fan_geo_avg too) × distribution ("normal" is untruncated)
    *[
        jax_case(
            f"VS(1.7,{mode},{dist})",
            jinit.variance_scaling(1.7, mode, dist),
            "variance_scaling",
            LAW_OF[dist],
            {"scale": 1.7, "mode": mode, "distribution": dist},
            shapes=ALL if dist == "truncated_normal" else ("conv2d",),
        )
        for mode in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
        for dist in ("truncated_normal", "normal", "uniform")
    ],
    # jax in_axis / out_axis / batch_axis: explicit fans (flax Embed: out_axis=0)
    jax_case(
        "VS(1,fan_in,normal,out_axis=0)",
        jinit.variance_scaling(1.0, "fan_in", "normal", out_axis=0),
        "variance_scaling",
        "normal",
        {"distribution": "normal"},
        fans=jax_axis_fans(-2, 0),
        shapes=("dense",),
    ),
    jax_case(
        "VS(2,fan_avg,truncated_normal,batch_axis=0)",
        jinit.variance_scaling(2.0, "fan_avg", "truncated_normal", batch_axis=0),
        "variance_scaling",
        "truncated",
        {"scale": 2.0, "mode": "fan_avg"},
        fans=jax_axis_fans(-2, -1, (0,)),
    ),
    jax_case(
        "VS(1,fan_geo_avg,uniform,in_axis=(0,1))",
        jinit.variance_scaling(1.0, "fan_geo_avg", "uniform", in_axis=(0, 1)),
        "variance_scaling",
        "uniform",
        {"mode": "fan_geo_avg", "distribution": "uniform"},
        fans=jax_axis_fans((0, 1), -1),
        shapes=("conv1d",),
    ),
    # jax plain random initializers
    jax_case("normal()", jinit.normal(), "normal", "normal", {"std": 0.01}, shapes=("dense",), **UNSCALED),
    jax_case("normal(3)", jinit.normal(3.0), "normal", "normal", {"std": 3.0}, **UNSCALED),
    jax_case(
        "uniform()", jinit.uniform(), "uniform", "uniform", {"low": 0.0, "high": 0.01}, shapes=("dense",), **UNSCALED
    ),
    jax_case(
        "uniform(2.5)",
        jinit.uniform(2.5),
        "uniform",
        "uniform",
        {"low": 0.0, "high": 2.5},
        shapes=("conv1d",),
        **UNSCALED,
    ),
    jax_case(
        "truncated_normal()",
        jinit.truncated_normal(),
        "truncated_normal",
        "truncated",
        {"std": 0.01, "low": -0.02, "high": 0.02},
        shapes=("dense",),
        **UNSCALED,
    ),
]
# The fast suite runs one case of every kind (keras and jax; uniform, truncated and untruncated laws;
# plain, variance-scaling and axes-given fans; every shape kind); `make test-slow` runs them all.
FAST = {
    "keras-HeNormal-conv2d",
    "keras-GlorotUniform-conv3d",
    "keras-VS(0.7,fan_out,untruncated_normal)-conv2d",
    "keras-VS(input_axes=(0,2),output_axes=(3,))-conv2d",
    "keras-RandomUniform(-0.2,1.3)-conv1d",
    "jax-lecun_normal-conv1d",
    "jax-VS(1.7,fan_geo_avg,uniform)-conv2d",
    "jax-VS(1.7,fan_avg,normal)-conv2d",
    "jax-VS(1,fan_in,normal,out_axis=0)-dense",
    "jax-truncated_normal()-dense",
}
# jax.nn.initializers.truncated_normal(stddev, lower, upper): bounds in units of stddev (not ±2 here)
ASYMMETRIC_TRUNCATED = (0.4, -1.0, 3.0)


def first_fast(values: Sequence[Any], ids: Callable[[Any], str] = str) -> list[Any]:
    """The first value runs in the fast suite, the others under ``slow`` (each jax/keras shape compiles)."""
    return [pytest.param(v, id=ids(v), marks=() if i == 0 else pytest.mark.slow) for i, v in enumerate(values)]


def dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


PARAMS = [
    pytest.param(
        case, kind, id=f"{case.label}-{kind}", marks=() if f"{case.label}-{kind}" in FAST else pytest.mark.slow
    )
    for case in CASES
    for kind in case.shapes
]
assert {p.id for p in PARAMS} >= FAST, FAST - {p.id for p in PARAMS}


# --- level 1: the constants -----------------------------------------------------------------------------
def unit_fit(theirs: F64, unit: F64) -> tuple[float, float]:
    """(α, β) of ``theirs = α·unit + β`` by least squares; the residual must be rounding only."""
    design = np.stack([unit.ravel(), np.ones(unit.size)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, theirs.ravel(), rcond=None)
    residual = np.abs(theirs.ravel() - (alpha * unit.ravel() + beta)).max()
    scale = np.abs(theirs).max()
    assert residual <= 1e-5 * scale, f"not an affine image of the unit sampler (residual {residual:.3g})"
    return float(alpha), float(beta)


def framework_constants(case: Case, theirs: F64, shape: tuple[int, ...], seed: int) -> dict[str, float]:
    """mean, std, low, high of the framework's law, from α and β of its unit sample."""
    unit = (JAX_UNIT if case.framework == "jax" else KERAS_UNIT)[case.law](shape, seed)
    alpha, beta = unit_fit(theirs, unit)
    if case.law == "uniform":
        return {"mean": beta + alpha / 2, "std": alpha / math.sqrt(12.0), "low": beta, "high": beta + alpha}
    if case.law == "normal":
        return {"mean": beta, "std": alpha}
    return {"mean": beta, "std": TRUNCATED_STD * alpha, "low": beta - 2 * alpha, "high": beta + 2 * alpha}


# --- level 2: the laws -------------------------------------------------------------------------------
def kurtosis(x: F64) -> float:
    centred = x - x.mean()
    return float(np.mean(centred**4) / np.mean(centred**2) ** 2)


def std_z(mine: F64, theirs: F64) -> float:
    """z of log(std ours / std theirs); SE² of a log std is (κ − 1)/(4n) for each sample."""
    se = math.sqrt((kurtosis(mine) - 1) / (4 * mine.size) + (kurtosis(theirs) - 1) / (4 * theirs.size))
    return math.log(float(mine.std()) / float(theirs.std())) / se


def assert_same_law(mine: F64, theirs: F64, law: str, support: Mapping[str, float], label: str) -> None:
    mine, theirs = mine.ravel(), theirs.ravel()
    z = std_z(mine, theirs)
    assert abs(z) < Z_MAX, f"{label}: std {mine.std():.6g} (ours) vs {theirs.std():.6g} (z = {z:.2f})"
    centre = float(np.median(theirs))
    for factor in (1.02, 1 / 1.02):  # power: a 2 % spread error is seen
        wrong = std_z(centre + factor * (mine - centre), theirs)
        assert abs(wrong) > Z_MAX, f"{label}: a 2 % std error is not seen (z = {wrong:.2f}); enlarge the sample"
    se_mean = math.sqrt(mine.var() / mine.size + theirs.var() / theirs.size)
    z_mean = (mine.mean() - theirs.mean()) / se_mean
    assert abs(z_mean) < Z_MAX, f"{label}: mean {mine.mean():.6g} vs {theirs.mean():.6g} (z = {z_mean:.2f})"
    p = float(stats.ks_2samp(mine, theirs, method="asymp").pvalue)
    assert p > KS_ACCEPT, f"{label}: KS rejects (p = {p:.3g})"
    if law in ("truncated", "uniform"):
        low, high = support["low"], support["high"]
        slack = 1e-6 * max(abs(low), abs(high))  # float32 rounding of the bound itself
        reach = 0.001 * (high - low)  # ~2.6e5 draws come this close to each edge
        for who, values in (("ours", mine), ("theirs", theirs)):
            assert low - slack <= values.min() <= low + reach, f"{label}: {who} min {values.min()!r} vs {low!r}"
            assert high - reach <= values.max() <= high + slack, f"{label}: {who} max {values.max()!r} vs {high!r}"
    else:  # untruncated: the tails reach past where a ±2σ₀ cut (2.27σ) would stop them
        for who, values in (("ours", mine), ("theirs", theirs)):
            assert np.abs(values - values.mean()).max() > 4 * values.std(), f"{label}: {who} has no normal tails"


@pytest.mark.parametrize(("case", "shape_kind"), PARAMS)
def test_random_scheme_has_the_frameworks_constants_and_law(case: Case, shape_kind: str) -> None:
    shape = SHAPES[shape_kind]
    spec = case.spec(shape)
    theirs = case.sample(shape, 7)
    want = framework_constants(case, theirs, shape, 7)
    got = expected(spec)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=2e-6, abs=1e-7 * want["std"]), (
            f"{case.label} on {shape}: our expected {key} {got[key]!r}, the framework's {value!r}"
        )
    assert_same_law(ours(spec), theirs, case.law, got, f"{case.label} {shape}")


def test_jax_truncated_normal_bounds_are_in_units_of_stddev() -> None:
    """jax truncated_normal(stddev, lower, upper) ≡ {std, low: lower·std, high: upper·std}."""
    stddev, lower, upper = ASYMMETRIC_TRUNCATED
    shape = SHAPES["dense"]
    theirs = jax_sampler(jinit.truncated_normal(stddev, lower=lower, upper=upper))(shape, 3)
    unit = as_f64(jax.random.truncated_normal(jax.random.key(3), lower, upper, shape))
    alpha, beta = unit_fit(theirs, unit)
    assert beta == pytest.approx(0.0, abs=1e-9) and alpha == pytest.approx(stddev, rel=1e-6)
    spec = {
        "shape": list(shape),
        "scheme": "truncated_normal",
        "seed": OUR_SEED,
        "params": {"std": stddev, "low": lower * stddev, "high": upper * stddev},
    }
    support = {"low": lower * alpha, "high": upper * alpha}
    got = expected(spec)
    assert (got["low"], got["high"]) == pytest.approx((support["low"], support["high"]), rel=1e-6)
    assert_same_law(ours(spec), theirs, "truncated", support, "jax truncated_normal(0.4, -1, 3)")


@pytest.mark.parametrize("shape", [(200000,), (50, 4000)], ids=["rank1", "dense"])
@pytest.mark.parametrize("name", first_fast(["GlorotNormal", "HeUniform", "LecunNormal"]))
def test_keras_fans_of_small_ranks(name: str, shape: tuple[int, ...]) -> None:
    """keras reads a vector (n,) as fans (n, n) (and a scalar as (1, 1)); so does every layout here."""
    make = getattr(kinit, name)
    law = "uniform" if "Uniform" in name else "truncated"
    case = Case(name, "keras", keras_sampler(lambda s: make(seed=s)), name, law, layout=None)
    theirs = case.sample(shape, 11)
    want = framework_constants(case, theirs, shape, 11)
    for layout in ("keras", "torch"):
        if len(shape) > 1 and layout == "torch":
            continue
        got = expected({**case.spec(shape), "layout": layout})
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=2e-6, abs=1e-9), (name, shape, layout, key)
    scalar = expected({"shape": [], "scheme": name})
    one = as_f64(make(seed=1)((), dtype="float32"))
    assert abs(float(one)) <= scalar["high"] * (1 + 1e-6)


# --- level 3: structure ------------------------------------------------------------------------------
ORTHOGONAL_SHAPES = [(3, 3, 16, 32), (64, 48), (48, 64), (40, 40), (5, 24, 32), (3, 3, 2, 4, 48), (2, 2, 40, 8)]


def orthonormality(matrix: F64, gain: float) -> float:
    """max |WᵀW − gain²·I| (tall) or |WWᵀ − gain²·I| (wide), in units of gain²."""
    rows, cols = matrix.shape
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    return float(np.abs(gram / gain**2 - np.eye(min(rows, cols))).max())


@pytest.mark.parametrize("gain", first_fast([2.5, 1.0]))
@pytest.mark.parametrize("shape", first_fast(ORTHOGONAL_SHAPES, dims))
def test_orthogonal_flattens_and_scales_as_keras_and_jax(shape: tuple[int, ...], gain: float) -> None:
    """keras Orthogonal(gain) and jax orthogonal(scale): (∏shape[:-1], shape[-1]) has orthonormal
    columns (tall) or rows (wide) × gain — ours with layout keras too; Frobenius² = gain²·min."""
    flat = (math.prod(shape[:-1]), shape[-1])
    samples = {
        "keras": as_f64(kinit.Orthogonal(gain, seed=3)(shape, dtype="float32")),
        "jax": jax_sampler(jinit.orthogonal(gain))(shape, 3),
        "ours": ours({"shape": list(shape), "scheme": "orthogonal", "params": {"gain": gain}, "layout": "keras"}),
    }
    for who, values in samples.items():
        assert values.shape == shape, who
        assert orthonormality(values.reshape(flat), gain) < 1e-5, (who, shape)
    # the other flattening is not orthonormal (so the check above tells the layouts apart)
    if len(shape) > 2:
        torch_flat = samples["ours"].reshape(shape[0], -1)
        assert orthonormality(torch_flat, gain) > 0.1


@pytest.mark.parametrize("shape", first_fast([(24, 8, 3, 3), (32, 16, 3), (12, 20)], dims))
def test_jax_orthogonal_column_axis_0_is_layout_torch(shape: tuple[int, ...]) -> None:
    """jax orthogonal(column_axis=0) makes the slices along axis 0 orthonormal: torch's flattening."""
    theirs = jax_sampler(jinit.orthogonal(1.5, column_axis=0))(shape, 5)
    mine = ours({"shape": list(shape), "scheme": "orthogonal", "params": {"gain": 1.5}, "layout": "torch"})
    for who, values in (("jax", theirs), ("ours", mine)):
        assert orthonormality(values.reshape(shape[0], -1), 1.5) < 1e-5, who


@pytest.mark.parametrize(
    "shape", first_fast([(4, 4, 6, 6), (3, 16, 32), (4, 12, 12), (3, 5, 8, 24), (3, 2, 3, 4, 9)], dims)
)
def test_delta_orthogonal_matches_jax(shape: tuple[int, ...]) -> None:
    """jax delta_orthogonal(scale): zero except the tap (k−1)//2 of every spatial axis, which holds an
    (in, out) matrix with orthonormal rows × scale; ours with layout keras (centre=jax, the default)."""
    scale = 1.3
    theirs = jax_sampler(jinit.delta_orthogonal(scale))(shape, 2)
    mine = ours({"shape": list(shape), "scheme": "delta_orthogonal", "params": {"gain": scale}, "layout": "keras"})
    centre = tuple((k - 1) // 2 for k in shape[:-2])
    for who, values in (("jax", theirs), ("ours", mine)):
        taps = np.argwhere(np.abs(values).reshape(-1, *shape[-2:]).sum(axis=(1, 2)) > 0).ravel().tolist()
        assert taps == [int(np.ravel_multi_index(centre, shape[:-2]))], (who, taps)
        assert orthonormality(values[centre], scale) < 1e-5, who
        assert values[centre].shape[0] <= values[centre].shape[1]  # in ≤ out: the rows are orthonormal


@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_identity_is_bit_identical_to_keras(shape: tuple[int, int], gain: float) -> None:
    theirs = np.asarray(kinit.Identity(gain)(shape, dtype="float32"))
    mine = generate(parse_spec({"shape": list(shape), "scheme": "Identity", "params": {"gain": gain}}))
    assert mine.tobytes() == theirs.tobytes()


CONSTANTS = [
    ("zeros", {}, lambda: kinit.Zeros(), lambda: jinit.zeros),
    ("ones", {}, lambda: kinit.Ones(), lambda: jinit.ones),
    ("constant", {"value": 0.1}, lambda: kinit.Constant(0.1), lambda: jinit.constant(0.1)),
    ("constant", {"value": -2.5}, lambda: kinit.Constant(-2.5), lambda: jinit.constant(-2.5)),
    ("constant", {"value": 1 / 3}, lambda: kinit.Constant(1 / 3), lambda: jinit.constant(1 / 3)),
]


@pytest.mark.parametrize(
    ("scheme", "params", "keras_init", "jax_init"), CONSTANTS, ids=[f"{c[0]}{list(c[1].values())}" for c in CONSTANTS]
)
def test_constant_schemes_are_bit_identical(
    scheme: str, params: dict[str, Any], keras_init: Any, jax_init: Any
) -> None:
    shape = (3, 4, 5)
    mine = generate(parse_spec({"shape": list(shape), "scheme": scheme, "params": params})).tobytes()
    assert mine == np.asarray(keras_init()(shape, dtype="float32")).tobytes()
    assert mine == np.asarray(jax_init()(jax.random.key(0), shape, jnp.float32)).tobytes()
