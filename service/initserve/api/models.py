"""Request and response models: the engine's spec, mirrored for validation and OpenAPI.

Pydantic checks the *shape* of a request (types, ranges, unknown keys, booleans where numbers
are required); the engine then checks the *meaning* (scheme names, per-scheme parameters,
rank rules, sizes) and both report the offending field the same way.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from initserve.engine import ALGORITHM_VERSION, SUPPORTED_ALGORITHMS

MAX_RANK = 8
MAX_DIM = (1 << 63) - 1
MAX_SEED = (1 << 64) - 1

DType = Literal["float32", "float64", "float16", "bfloat16"]
Layout = Literal["torch", "keras"]


def _param_value(value: Any) -> Any:
    # The type of a parameter is the scheme's: each one validates its own (a number parameter refuses a
    # boolean, null or an array by name; stft's periodic takes a boolean, its window names the windows it
    # supports when sent keras' array window). Only a non-finite float is refused here.
    if type(value) is float and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return value


ParamValue = Annotated[
    Any,
    PlainValidator(_param_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 64}, {"type": "boolean"}]}),
]
Dim = Annotated[StrictInt, Field(ge=0, le=MAX_DIM)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED, description="0 ≤ seed < 2^64; all 64 bits matter.")]
SliceBound = Annotated[StrictInt, Field(ge=0, le=MAX_DIM)]
Params = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], ParamValue],
    Field(max_length=32, description="The scheme's own parameters; see GET /v1/schemes/{name}."),
]
Shape = Annotated[list[Dim], Field(max_length=MAX_RANK, description="0–8 dimensions, each ≥ 0.")]
Slice = Annotated[
    list[tuple[SliceBound, SliceBound]],
    Field(max_length=MAX_RANK, description="[start, stop) pairs for the leading dimensions."),
]
Scheme = Annotated[StrictStr, Field(min_length=1, max_length=64, description="A catalog name.")]
TensorName = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Algorithm = Annotated[
    StrictInt,
    Field(
        ge=min(SUPPORTED_ALGORITHMS),
        le=max(SUPPORTED_ALGORITHMS),
        description=f"Generation algorithm version (default: the newest, {ALGORITHM_VERSION}). "
        "1 keeps the first release's bytes and URLs (orthogonal by LAPACK); 2 makes orthogonal bitwise.",
    ),
]


class InitSpec(BaseModel):
    """One tensor: what ``POST /v1/init`` takes. Omitted fields take the engine's defaults."""

    model_config = ConfigDict(extra="forbid")

    shape: Shape
    scheme: Scheme
    params: Params = Field(default_factory=dict)
    seed: Seed = 0
    dtype: DType = "float32"
    layout: Layout = "torch"
    name: TensorName = "weight"
    slice: Slice | None = None
    algorithm: Algorithm | None = None

    def engine_mapping(self) -> dict[str, Any]:
        """The spec as the engine's ``parse_spec`` takes it: only what the client said."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class BundleTensor(BaseModel):
    """One tensor of a bundle: a spec without seed and name (the bundle supplies them)."""

    model_config = ConfigDict(extra="forbid")

    shape: Shape
    scheme: Scheme
    params: Params = Field(default_factory=dict)
    dtype: DType | None = None
    layout: Layout | None = None
    slice: Slice | None = None


class BundleRequest(BaseModel):
    """Many named tensors in one safetensors file (``POST /v1/bundle``)."""

    model_config = ConfigDict(extra="forbid")

    seed: Seed = 0
    dtype: DType = "float32"
    layout: Layout = "torch"
    algorithm: Algorithm | None = None
    tensors: Annotated[dict[TensorName, BundleTensor], Field(min_length=1)]

    def engine_mapping(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class ResolveBundle(BaseModel):
    """``{"bundle": {...}}``: resolve a bundle rather than a single tensor."""

    model_config = ConfigDict(extra="forbid")

    bundle: BundleRequest


class Resolved(BaseModel):
    """Where and what a generated file is, learned without generating it."""

    token: str = Field(description="The /v1/tensors token (t. tensor, b. bundle).")
    url: str | None = Field(description="The tensor URL, or null when the token would be too long.")
    etag: str = Field(description="The strong ETag, quotes included.")
    content_length: int = Field(description="Size of the safetensors file in bytes.")
    algorithm: int = Field(description="Version of the generation algorithm.")
    canonical: dict[str, Any] = Field(description="The canonical spec: defaults filled in.")


class Histogram(BaseModel):
    """Counts of the values in equal bins over the scheme's support (mean ± 6σ where unbounded)."""

    edges: list[float] = Field(description="65 bin edges, ascending.")
    counts: list[int] = Field(description="64 counts; bin i is [edges[i], edges[i+1]) (the last bin is closed).")
    below: int = Field(description="Values below edges[0].")
    above: int = Field(description="Values above edges[-1].")


class ExpectedMoments(BaseModel):
    """The exact law of the scheme's values before the cast."""

    mean: float
    std: float
    low: float | None = Field(description="Lower end of the support; null when unbounded.")
    high: float | None = Field(description="Upper end of the support; null when unbounded.")


class Stats(BaseModel):
    """``POST /v1/init?format=stats``: statistics of the generated (cast) values, in float64."""

    numel: int = Field(description="Number of elements (of the slice, if one was asked for).")
    shape: list[int] = Field(description="Shape of the result (the slice's, if any).")
    dtype: DType
    mean: float | None = Field(description="Mean of the values; null for a zero-size tensor.")
    std: float | None = Field(description="Population standard deviation; null for a zero-size tensor.")
    min: float | None = Field(description="Smallest value; null for a zero-size tensor.")
    max: float | None = Field(description="Largest value; null for a zero-size tensor.")
    zeros_fraction: float | None = Field(description="Fraction of elements equal to 0.")
    histogram: Histogram
    fan_in: int | None = Field(description="fan_in the scheme used (null when it uses none).")
    fan_out: int | None = Field(description="fan_out the scheme used (null when it uses none).")
    layout: Layout = Field(description="The layout the fans were read with.")
    gain: float | None = Field(description="The gain applied (xavier, kaiming, orthogonal, torch_default).")
    expected: ExpectedMoments | None = Field(description="The scheme's exact moments; null for zero size.")
    sha256: str = Field(description="sha256 of the tensor's bytes (not of the file).")
    algorithm: int = Field(description="Version of the generation algorithm.")
    reproducibility: str = Field(description="bitwise or numerical (see docs/determinism.md).")
    spec: dict[str, Any] = Field(description="The canonical spec.")
    frame: dict[str, Any] | None = Field(
        None,
        description="2-D results only: coherence of the output units against the Welch bound of the shape "
        "(vectors, dim, coherence, welch_bound, ratio, vectors_used, exact, zero_vectors); see docs/schemes.md.",
    )


class BundleStats(BaseModel):
    """Statistics of a bundle: one :class:`Stats` per tensor name."""

    tensors: dict[str, Stats]


class FileDigest(BaseModel):
    """``?format=digest``: the file's SHA-256 tree hash and its leaves, without the file."""

    content_length: int = Field(description="Size of the safetensors file in bytes.")
    leaf_size: int = Field(description="Bytes per leaf (the last leaf may be shorter).")
    leaves: list[str] = Field(description="SHA-256 of each leaf, hex, in order.")
    tree_sha256: str = Field(description="SHA-256 of the concatenated raw leaf digests, hex.")
    etag: str = Field(description="The file's strong ETag, quotes included.")


class Health(BaseModel):
    status: Literal["ok"]
    kernel: Literal["native", "numpy"] = Field(description="The generation kernel this process runs.")


class Readiness(BaseModel):
    status: Literal["ready"]
    algorithm: int
    generations_in_flight: int
    generation_capacity: int


LINEAR = {
    "shape": [512, 784],
    "scheme": "kaiming_uniform",
    "params": {"a": math.sqrt(5)},
    "seed": 42,
    "name": "fc1.weight",
}
CONV2D = {
    "shape": [64, 3, 7, 7],
    "scheme": "kaiming_normal",
    "params": {"mode": "fan_out", "nonlinearity": "relu"},
    "seed": 42,
    "name": "conv1.weight",
}
EMBEDDING = {"shape": [32000, 512], "scheme": "normal", "params": {"std": 0.02}, "seed": 7, "name": "embed.weight"}
LSTM = {
    "shape": [1024, 256],
    "scheme": "uniform",
    "params": {"low": -0.0625, "high": 0.0625},
    "seed": 3,
    "name": "lstm.weight_ih_l0",
}

INIT_EXAMPLES: dict[str, dict[str, Any]] = {
    "linear": {"summary": "nn.Linear(784, 512) weight, torch's default init", "value": LINEAR},
    "conv2d": {"summary": "nn.Conv2d(3, 64, 7) weight, He normal for ReLU", "value": CONV2D},
    "embedding": {"summary": "Embedding 32000×512, N(0, 0.02²)", "value": EMBEDDING},
    "lstm": {"summary": "LSTM(256, 256) weight_ih_l0, U(±1/√hidden)", "value": LSTM},
}

MLP_BUNDLE = {
    "seed": 42,
    "dtype": "float32",
    "layout": "torch",
    "tensors": {
        "fc1.weight": {"shape": [256, 784], "scheme": "kaiming_uniform", "params": {"a": math.sqrt(5)}},
        "fc1.bias": {"shape": [256], "scheme": "zeros"},
        "fc2.weight": {"shape": [10, 256], "scheme": "xavier_uniform"},
        "fc2.bias": {"shape": [10], "scheme": "zeros"},
    },
}
BUNDLE_EXAMPLES: dict[str, dict[str, Any]] = {
    "mlp": {"summary": "A 784-256-10 MLP", "value": MLP_BUNDLE},
}
RESOLVE_EXAMPLES: dict[str, dict[str, Any]] = {
    "tensor": {"summary": "One tensor", "value": LINEAR},
    "bundle": {"summary": "A bundle", "value": {"bundle": MLP_BUNDLE}},
}
