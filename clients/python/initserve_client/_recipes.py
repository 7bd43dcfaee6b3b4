"""Recipe presets for :func:`init_module`: published whole-model initializations as policies.

Each recipe decides which scale each tensor of a model gets from the model's structure (number of
layers, the role of a tensor found by its name); the tensors themselves stay ordinary
``(seed, name)``-addressable specs. Formulas and sources (docs/client.md "Recipes"):

- :func:`gpt2_policy` — GPT-2 (Radford et al. 2019; HF ``GPT2PreTrainedModel._init_weights``):
  N(0, 0.02²) everywhere, residual output projections ``c_proj`` N(0, (0.02/√(2N))²).
- :func:`torchtitan_policy` — torchtitan llama3: ``wo``, ``w2``, ``w3`` truncated N with std
  0.02/√(2(l + 1)) for layer l (``depth_init``) or 0.02/√(2N); other block weights 0.02.
- :class:`MuPPolicy` — µP (Yang et al. 2021, package ``mup`` 1.0 ``mup.init``): torch's init rescaled by
  the width multipliers of each tensor relative to a base shape.
- :class:`DeepNetPolicy` — DeepNet (Wang et al. 2022): Xavier-normal with gain β on FFN, value and
  output projections (β = (8N)^−1/4 encoder-only, (8M)^−1/4 decoder-only, 0.87(N⁴M)^−1/16 and
  (12M)^−1/4 for encoder/decoder of an encoder–decoder), gain 1 on query/key.
- :class:`TFixupPolicy` — T-Fixup (Huang et al. 2020): Xavier-uniform; input embeddings N(0, d^−1/2);
  decoder value/output projections, MLP weights and the embeddings × (9M)^−1/4; encoder value/output
  projections and MLP weights × 0.67·N^−1/4.
- :class:`FixupPolicy` — Fixup (Zhang et al. 2019): the last layer of every residual branch and the
  classifier 0; other branch convs He-normal × L^−1/(2m−2); scalar biases 0, scalar multipliers 1.
- :class:`ReZeroPolicy` — SkipInit (De & Smith 2020) / ReZero (Bachlechner et al. 2020): the residual
  scalar α in x + α·F(x) starts at 0.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import InitserveError
from ._policies import InitRule, Policy, TorchDefaultPolicy

if TYPE_CHECKING:
    import torch

__all__ = [
    "DeepNetPolicy",
    "DepthScaledPolicy",
    "FixupPolicy",
    "MuPPolicy",
    "ReZeroPolicy",
    "TFixupPolicy",
    "deepnet_constants",
    "gpt2_policy",
    "torchtitan_policy",
]

LAYER_INDEX = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _xavier_std(param: torch.Tensor, gain: float) -> float:
    fan_out = int(param.shape[0]) * math.prod(int(d) for d in param.shape[2:])
    fan_in = int(param.shape[1]) * math.prod(int(d) for d in param.shape[2:])
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def _xavier_normal(param: torch.Tensor, gain: float) -> InitRule:
    return InitRule("normal", {"mean": 0.0, "std": _xavier_std(param, gain)})


def _xavier_uniform(param: torch.Tensor, gain: float) -> InitRule:
    bound = math.sqrt(3.0) * _xavier_std(param, gain)
    return InitRule("uniform", {"low": -bound, "high": bound})


class _Recipe:
    """Shared plumbing: biases of claimed weights are zero, everything unclaimed goes to ``fallback``."""

    def __init__(self, fallback: Policy | None = None) -> None:
        self.fallback: Policy = fallback if fallback is not None else TorchDefaultPolicy()

    def prepare(self, module: torch.nn.Module) -> None:
        self.fallback.prepare(module)

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        return None

    def rule(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        claimed = self.claim(name, local, param, owner)
        return claimed if claimed is not None else self.fallback.rule(name, local, param, owner)


# --- GPT-2 / torchtitan depth scaling ---------------------------------------------------------------------
class DepthScaledPolicy(_Recipe):
    """N(0, std²) for every weight of ≥ 2 dimensions (Linear, Embedding, Conv1D), zero biases, and for
    the residual output projections (``residual`` patterns) std/√(2·n_layers) — or, with ``per_layer``,
    std/√(2(l + 1)) where l is the block index found in the name (``h.3.``, ``layers.3.``, …).

    ``truncate``: None for a plain normal; a number c for a normal truncated to the *absolute*
    bounds ±c (torch ``trunc_normal_``'s a, b). Raises :class:`InitserveError` when ``per_layer`` is
    set and a residual tensor's name has no block index.
    """

    def __init__(
        self,
        n_layers: int,
        *,
        std: float = 0.02,
        residual: Sequence[str] = ("*c_proj.weight",),
        per_layer: bool = False,
        truncate: float | None = None,
        fallback: Policy | None = None,
    ) -> None:
        if n_layers < 1:
            raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
        super().__init__(fallback)
        self.n_layers, self.std, self.residual = n_layers, std, tuple(residual)
        self.per_layer, self.truncate = per_layer, truncate

    def residual_std(self, name: str) -> float:
        """The std of residual projection ``name``: std/√(2N), or std/√(2(l + 1)) per layer."""
        if not self.per_layer:
            return self.std / math.sqrt(2.0 * self.n_layers)
        match = LAYER_INDEX.search(name)
        if match is None:
            raise InitserveError(f"per-layer depth scaling needs a block index in {name!r} (e.g. 'layers.3.')")
        return self.std / math.sqrt(2.0 * (int(match.group(1)) + 1))

    def _normal(self, std: float) -> InitRule:
        if self.truncate is None:
            return InitRule("normal", {"mean": 0.0, "std": std})
        return InitRule("truncated_normal", {"mean": 0.0, "std": std, "low": -self.truncate, "high": self.truncate})

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if param.dim() >= 2:
            return self._normal(self.residual_std(name) if _matches(name, self.residual) else self.std)
        if local == "bias" and _has_matrix_weight(owner):
            return InitRule("zeros")
        return None


def _has_matrix_weight(owner: torch.nn.Module) -> bool:
    weight = getattr(owner, "weight", None)
    return weight is not None and getattr(weight, "dim", lambda: 0)() >= 2


def gpt2_policy(n_layers: int, *, std: float = 0.02, fallback: Policy | None = None) -> DepthScaledPolicy:
    """GPT-2 (HF ``GPT2PreTrainedModel._init_weights``, nanoGPT): N(0, 0.02²) for Linear/Conv1D/Embedding
    weights, zero biases, LayerNorm ones/zeros; ``*c_proj.weight`` (attention and MLP output) N(0, (0.02/√(2N))²)."""
    return DepthScaledPolicy(n_layers, std=std, residual=("*c_proj.weight",), fallback=fallback)


def torchtitan_policy(
    n_layers: int, *, depth_init: bool = True, std: float = 0.02, fallback: Policy | None = None
) -> DepthScaledPolicy:
    """torchtitan llama3 transformer blocks: ``wq, wk, wv, w1`` trunc_normal(0, 0.02) with torch's absolute
    bounds ±2; ``attention.wo``, ``feed_forward.w2``, ``feed_forward.w3`` trunc_normal with std
    0.02/√(2(layer_id + 1)) (``depth_init``, the default) or 0.02/√(2·n_layers)."""
    return DepthScaledPolicy(
        n_layers,
        std=std,
        residual=("*attention.wo.weight", "*feed_forward.w2.weight", "*feed_forward.w3.weight"),
        per_layer=depth_init,
        truncate=2.0,
        fallback=fallback,
    )


# --- µP ------------------------------------------------------------------------------------------------------
MUP_INITS = ("normal", "uniform", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")


class MuPPolicy(_Recipe):
    """µP initialization of every weight of ≥ 2 dimensions, as ``mup.init.<init>`` after
    ``mup.set_base_shapes(model, base)``; biases zero, the rest ``fallback``.

    ``base``: the base model (or ``{parameter name: base shape}``). A dimension is *infinite* when it
    differs from the base; width_mult = dim/base_dim. With (fan_out, fan_in) = (shape[0], shape[1]):

    - ``normal``/``uniform`` (std / bound b): × width_mult(fan_in)^−1/2 when both are infinite.
    - ``xavier_*`` (gain): std = gain·√(2/(fi + fo)) × √((d₀ + d₁)/(base₀ + base₁)), and
      / √(width_mult(fan_in)) when both are infinite.
    - ``kaiming_*`` (a, mode, nonlinearity): std = gain/√fan, × √(width_mult) of the chosen fan when
      only that one is infinite; × √(wm(fan_out)/wm(fan_in)) for mode fan_out when both are.

    ``init_params`` are the init's own (std=…, gain=…, a/mode/nonlinearity). MuReadout's output
    multiplier is a forward-pass change of the model and is not an init.
    """

    def __init__(
        self,
        base: torch.nn.Module | Mapping[str, Sequence[int]],
        init: str = "normal",
        *,
        fallback: Policy | None = None,
        **init_params: Any,
    ) -> None:
        if init not in MUP_INITS:
            raise ValueError(f"init must be one of {', '.join(MUP_INITS)}, got {init!r}")
        super().__init__(fallback)
        if isinstance(base, Mapping):
            self.base = {name: tuple(int(d) for d in shape) for name, shape in base.items()}
        else:
            self.base = {name: tuple(int(d) for d in p.shape) for name, p in base.named_parameters()}
        self.init, self.init_params = init, dict(init_params)

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if param.dim() < 2:
            return InitRule("zeros") if local == "bias" and _has_matrix_weight(owner) else None
        if name not in self.base:
            raise InitserveError(f"µP needs a base shape for {name!r}; the base model has no such parameter")
        return self.rule_for(tuple(int(d) for d in param.shape), self.base[name])

    def rule_for(self, shape: tuple[int, ...], base: tuple[int, ...]) -> InitRule:
        """The rule for one weight of ``shape`` whose base shape is ``base`` (mup 1.0 semantics)."""
        if len(base) != len(shape):
            raise InitserveError(f"base shape {base} and shape {shape} differ in rank")
        infinite = [d != b for d, b in zip(shape, base, strict=True)]
        ninf = sum(infinite)
        if ninf > 2:
            raise InitserveError(f"µP handles at most 2 infinite dimensions, got {ninf} for shape {shape}")

        def mult(axis: int) -> float:
            return shape[axis] / base[axis] if infinite[axis] else 1.0

        receptive = math.prod(shape[2:])
        fan_out, fan_in = shape[0] * receptive, shape[1] * receptive
        p = self.init_params
        if self.init in ("normal", "uniform"):
            scale = mult(1) ** -0.5 if ninf == 2 else 1.0
            if self.init == "normal":
                return InitRule("normal", {"mean": 0.0, "std": float(p.get("std", 1.0)) * scale})
            low, high = float(p.get("a", 0.0)), float(p.get("b", 1.0))
            return InitRule("uniform", {"low": low * scale, "high": high * scale})
        if self.init.startswith("xavier"):
            std = float(p.get("gain", 1.0)) * math.sqrt(2.0 / float(fan_in + fan_out))
            std *= math.sqrt((shape[0] + shape[1]) / (base[0] + base[1]))
            if ninf == 2:
                std /= math.sqrt(mult(1))
        else:
            mode = str(p.get("mode", "fan_in"))
            gain = _calculate_gain(str(p.get("nonlinearity", "leaky_relu")), float(p.get("a", 0.0)))
            std = gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
            if ninf == 1:
                axis = 1 if mode == "fan_in" else 0
                if infinite[axis]:
                    std *= mult(axis) ** 0.5
            elif ninf == 2 and mode == "fan_out":
                std *= math.sqrt(mult(0) / mult(1))
        if self.init.endswith("uniform"):
            bound = math.sqrt(3.0) * std
            return InitRule("uniform", {"low": -bound, "high": bound})
        return InitRule("normal", {"mean": 0.0, "std": std})


def _calculate_gain(nonlinearity: str, a: float) -> float:
    """torch.nn.init.calculate_gain for the nonlinearities µP users pass."""
    if nonlinearity in ("linear", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


# DeepNet's and T-Fixup's defaults: the value and output projections and the MLP weights (fairseq and
# torch.nn.Transformer names), and the names that put a tensor on the decoder side.
SCALED_PROJECTIONS = (
    "*v_proj.weight",
    "*out_proj.weight",
    "*fc1.weight",
    "*fc2.weight",
    "*linear1.weight",
    "*linear2.weight",
)
DECODER_NAMES = ("decoder.*", "*.decoder.*")


# --- DeepNet ---------------------------------------------------------------------------------------------------
def deepnet_constants(encoder_layers: int = 0, decoder_layers: int = 0) -> dict[str, dict[str, float]]:
    """DeepNorm's α (residual multiplier, x ← LN(α·x + G(x))) and β (init gain), Wang et al. 2022, Table 1.

    Encoder-only (N): α = (2N)^1/4, β = (8N)^−1/4. Decoder-only (M): α = (2M)^1/4, β = (8M)^−1/4.
    Encoder–decoder: encoder α = 0.81(N⁴M)^1/16, β = 0.87(N⁴M)^−1/16; decoder α = (3M)^1/4, β = (12M)^−1/4.
    """
    n, m = encoder_layers, decoder_layers
    if n < 0 or m < 0 or n + m == 0:
        raise ValueError(f"need encoder_layers and/or decoder_layers ≥ 1, got {n} and {m}")
    if m == 0:
        return {"encoder": {"alpha": (2 * n) ** 0.25, "beta": (8 * n) ** -0.25}}
    if n == 0:
        return {"decoder": {"alpha": (2 * m) ** 0.25, "beta": (8 * m) ** -0.25}}
    return {
        "encoder": {"alpha": 0.81 * (n**4 * m) ** (1 / 16), "beta": 0.87 * (n**4 * m) ** (-1 / 16)},
        "decoder": {"alpha": (3 * m) ** 0.25, "beta": (12 * m) ** -0.25},
    }


class DeepNetPolicy(_Recipe):
    """DeepNet init: Xavier-normal with gain β (:func:`deepnet_constants`) on the ``scaled`` tensors
    (FFN, value and output projections), gain 1 on every other weight of ≥ 2 dimensions; zero biases.
    A tensor belongs to the decoder when its name matches ``decoder`` (for encoder–decoder models).
    The α multiplier is part of the model's forward pass (DeepNorm), reported by :func:`deepnet_constants`.
    """

    def __init__(
        self,
        encoder_layers: int = 0,
        decoder_layers: int = 0,
        *,
        scaled: Sequence[str] = SCALED_PROJECTIONS,
        decoder: Sequence[str] = DECODER_NAMES,
        fallback: Policy | None = None,
    ) -> None:
        super().__init__(fallback)
        self.constants = deepnet_constants(encoder_layers, decoder_layers)
        self.scaled, self.decoder = tuple(scaled), tuple(decoder)

    def beta(self, name: str) -> float:
        """β of the side ``name`` is on (the only side of an encoder-only or decoder-only model)."""
        if len(self.constants) == 1:
            return next(iter(self.constants.values()))["beta"]
        return self.constants["decoder" if _matches(name, self.decoder) else "encoder"]["beta"]

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if param.dim() >= 2 and not _is_embedding(owner):
            return _xavier_normal(param, self.beta(name) if _matches(name, self.scaled) else 1.0)
        if local == "bias" and _has_matrix_weight(owner):
            return InitRule("zeros")
        return None


def _is_embedding(owner: torch.nn.Module) -> bool:
    from torch import nn

    return isinstance(owner, nn.Embedding | nn.EmbeddingBag)


# --- T-Fixup -----------------------------------------------------------------------------------------------------
class TFixupPolicy(_Recipe):
    """T-Fixup (Huang, Perez, Ba, Volkovs, ICML 2020), for a Transformer without LayerNorm or warm-up.

    Xavier-uniform for every weight of ≥ 2 dimensions; input embeddings (``nn.Embedding``)
    N(0, d^−1/2) with d = the embedding dimension. Decoder (names matching ``decoder``): the value
    and output projections and MLP weights (``scaled``) × (9M)^−1/4, and so are both embeddings when
    the model has a decoder. Encoder: the ``scaled`` tensors × 0.67·N^−1/4. Biases zero.
    """

    def __init__(
        self,
        encoder_layers: int = 0,
        decoder_layers: int = 0,
        *,
        scaled: Sequence[str] = SCALED_PROJECTIONS,
        decoder: Sequence[str] = DECODER_NAMES,
        fallback: Policy | None = None,
    ) -> None:
        if encoder_layers < 0 or decoder_layers < 0 or encoder_layers + decoder_layers == 0:
            raise ValueError(f"need encoder_layers and/or decoder_layers ≥ 1, got {encoder_layers}, {decoder_layers}")
        super().__init__(fallback)
        self.n, self.m = encoder_layers, decoder_layers
        self.scaled, self.decoder = tuple(scaled), tuple(decoder)

    def scale(self, name: str) -> float:
        """The factor of a ``scaled`` tensor: (9M)^−1/4 in the decoder, 0.67·N^−1/4 in the encoder."""
        if self.m and (_matches(name, self.decoder) or not self.n):
            return math.pow(9 * self.m, -0.25)
        return 0.67 * math.pow(self.n, -0.25)

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if _is_embedding(owner) and local == "weight":
            std = float(param.shape[1]) ** -0.5
            if self.m:
                std *= (9 * self.m) ** -0.25
            return InitRule("normal", {"mean": 0.0, "std": std})
        if param.dim() >= 2:
            return _xavier_uniform(param, self.scale(name) if _matches(name, self.scaled) else 1.0)
        if local == "bias" and _has_matrix_weight(owner):
            return InitRule("zeros")
        return None


# --- Fixup ---------------------------------------------------------------------------------------------------------
class FixupPolicy(_Recipe):
    """Fixup (Zhang, Dauphin, Ma, ICLR 2019; hongyi-zhang/Fixup ``fixup_resnet_cifar.py``) for a ResNet of
    ``num_blocks`` residual branches with ``branch_layers`` (m) layers each.

    ``last`` (the branch's last conv) and ``classifier`` (the final Linear's weight and bias): 0.
    ``branch`` (the other convs of a branch): N(0, σ²), σ = √(2/(c_out·∏k))·L^(−1/(2m−2)) (He, fan_out).
    ``scalar_biases``: 0; ``scales`` (the branch multiplier): 1. The rest: ``fallback``.
    """

    def __init__(
        self,
        num_blocks: int,
        *,
        branch_layers: int = 2,
        last: Sequence[str] = ("*conv2.weight",),
        branch: Sequence[str] = ("*conv1.weight",),
        classifier: Sequence[str] = ("fc.weight", "fc.bias"),
        scalar_biases: Sequence[str] = ("*bias1a", "*bias1b", "*bias2a", "*bias2b"),
        scales: Sequence[str] = ("*.scale",),
        fallback: Policy | None = None,
    ) -> None:
        if num_blocks < 1 or branch_layers < 2:
            raise ValueError(f"need num_blocks ≥ 1 and branch_layers ≥ 2, got {num_blocks}, {branch_layers}")
        super().__init__(fallback)
        self.num_blocks, self.branch_layers = num_blocks, branch_layers
        self.last, self.branch, self.classifier = tuple(last), tuple(branch), tuple(classifier)
        self.scalar_biases, self.scales = tuple(scalar_biases), tuple(scales)

    def branch_std(self, param: torch.Tensor) -> float:
        fan_out = int(param.shape[0]) * math.prod(int(d) for d in param.shape[2:])
        return math.sqrt(2.0 / fan_out) * math.pow(self.num_blocks, -1.0 / (2 * self.branch_layers - 2))

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if _matches(name, self.last) or _matches(name, self.classifier) or _matches(name, self.scalar_biases):
            return InitRule("zeros")
        if _matches(name, self.scales):
            return InitRule("ones")
        if _matches(name, self.branch):
            return InitRule("normal", {"mean": 0.0, "std": self.branch_std(param)})
        return None


# --- SkipInit / ReZero --------------------------------------------------------------------------------------------
class ReZeroPolicy(_Recipe):
    """SkipInit / ReZero: the residual scalars (``residual`` patterns) start at 0, so every block is the
    identity at init (x + α·F(x), α = 0); all other parameters get ``fallback`` (default torch's own)."""

    def __init__(
        self,
        residual: Sequence[str] = ("*resweight", "*res_weight", "*rezero_alpha", "*skipinit_gain", "*.alpha"),
        *,
        fallback: Policy | None = None,
    ) -> None:
        super().__init__(fallback)
        self.residual = tuple(residual)

    def claim(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        return InitRule("zeros") if _matches(name, self.residual) else None
