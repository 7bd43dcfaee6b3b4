"""Request model of ``POST /v1/diagnose``: the shape of the body (types, ranges, unknown keys).

The engine (:func:`initserve.engine.diagnose.parse_diagnose`) then checks the meaning — schemes and
their params per layer shape, residual widths, the configured size limits — naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from initserve.api.models import DType, Params, Scheme, Seed

ActivationName = Literal["linear", "tanh", "relu", "leaky_relu", "selu", "sigmoid", "gelu"]
Width = Annotated[StrictInt, Field(ge=1, le=1 << 20)]
# Strict: a JSON number only (integers included). Lax floats would take true as 1.0 and "0.5" as 0.5;
# booleans and strings are never numbers here, as in the spec (docs/api.md).
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class DiagnoseLayer(BaseModel):
    """One layer: h = W x, then x ← φ(h), or x ← x + residual·φ(h) when ``residual`` (α) is given."""

    model_config = ConfigDict(extra="forbid")

    width: Width
    activation: ActivationName = "linear"
    negative_slope: Finite | None = Field(None, description="leaky_relu only; default 0.01.")
    residual: Finite | None = Field(None, description="α of x + α·φ(Wx); needs the previous width.")


class DiagnoseScheme(BaseModel):
    """A scheme under test; every layer's weight is ``/v1/init`` of it with the layer's shape and name."""

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme
    params: Params = Field(default_factory=dict)
    label: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None


class DiagnoseRequestBody(BaseModel):
    """An architecture (``depth``/``width``/``activation`` or ``layers``), schemes, and the probe."""

    model_config = ConfigDict(extra="forbid")

    input_width: Width | None = Field(None, description="Units of the input; default: the first layer's width.")
    depth: Annotated[StrictInt, Field(ge=1, le=1 << 16)] | None = None
    width: Width | None = None
    activation: ActivationName | None = None
    negative_slope: Finite | None = None
    residual: Finite | None = None
    layers: Annotated[list[DiagnoseLayer], Field(min_length=1, max_length=1 << 16)] | None = None
    schemes: Annotated[list[DiagnoseScheme], Field(min_length=1, max_length=64)]
    seed: Seed = 0
    batch: Annotated[StrictInt, Field(ge=2, le=1 << 20)] = 256
    dtype: DType = "float32"
    jacobian: StrictBool = Field(True, description="Compute the input-output Jacobian spectrum (widths ≤ 1024).")
    jacobian_q: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="Mean square per unit of the Jacobian's input (default: the probe's own, ≈ 1)."
    )

    def engine_mapping(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


DIAGNOSE_EXAMPLES: dict[str, dict[str, Any]] = {
    "tanh": {
        "summary": "100-layer tanh MLP, xavier vs orthogonal",
        "value": {
            "input_width": 512,
            "depth": 100,
            "width": 512,
            "activation": "tanh",
            "schemes": [{"scheme": "xavier_normal"}, {"scheme": "orthogonal", "params": {"gain": 1.0}}],
            "seed": 0,
            "batch": 256,
        },
    },
    "residual": {
        "summary": "Explicit layers with a residual block",
        "value": {
            "input_width": 64,
            "layers": [
                {"width": 64, "activation": "relu"},
                {"width": 64, "activation": "relu", "residual": 0.5},
                {"width": 32, "activation": "gelu"},
            ],
            "schemes": [{"scheme": "kaiming_normal", "params": {"nonlinearity": "relu"}}],
            "batch": 64,
        },
    },
}
