"""Which spec initializes which parameter of a torch module (pure: inspects the module, no I/O).

:class:`TorchDefaultPolicy` reproduces the distribution each torch layer's own ``reset_parameters``
draws from, so a model initialized through initserve is statistically the model torch would build,
but bit-reproducible from ``(seed, parameter name)``:

============================================  ===========================================================
layer                                         parameters
============================================  ===========================================================
Linear, Conv{1,2,3}d, ConvTranspose{1,2,3}d   weight: ``torch_default`` = U(±1/√fan_in); bias: U(±1/√fan_in),
                                              fan_in from the weight as torch computes it: size(1)·∏kernel
                                              (for ConvTranspose the weight is (in, out/groups, *k))
Bilinear                                      weight and bias: U(±1/√in1_features)
Embedding, EmbeddingBag                       weight: N(0, 1), row ``padding_idx`` zeroed
LayerNorm, GroupNorm, BatchNorm, InstanceNorm weight: ones, bias: zeros (running stats are buffers: untouched)
RMSNorm                                       weight: ones
RNN, LSTM, GRU and their cells                every parameter: U(±1/√hidden_size)
MultiheadAttention                            in_proj / q,k,v_proj weights: xavier_uniform; in_proj_bias and
                                              out_proj.bias: zeros (when the module has biases); bias_k,
                                              bias_v: xavier_normal; out_proj.weight: as Linear
Transformer                                   every parameter of > 1 dimension inside it (encoder and decoder
                                              layers' linear1/linear2, attention in_proj and out_proj
                                              weights): xavier_uniform (``Transformer._reset_parameters``
                                              runs after its children's own); 1-D parameters keep their rule
TransformerEncoderLayer/DecoderLayer,         their children's rules (they do not re-initialise); the layers of
TransformerEncoder/Decoder                    an Encoder/Decoder are drawn independently (torch deep-copies
                                              one layer, so its layers start identical)
AdaptiveLogSoftmaxWithLoss                    its Linear children's rules
PReLU                                         weight: constant ``init``
============================================  ===========================================================

A parent's rule beats its children's (the parent's reset runs last in torch); the outermost parent
wins. A tensor reachable under several names (tied weights, a module registered twice) is one
tensor, set once: its *first* name in ``named_parameters()`` order owns it — that name keys its
random bits, and the rule is the one the policy gives that name, with the module holding it as the
owner. The tied tensor therefore equals the untied model's tensor under that first name, bit for
bit, whichever side of the tie was assigned; ``named_parameters()`` order is module registration
order (depth first), so ``emb`` declared before ``head`` with ``head.weight = emb.weight`` gives the
embedding's N(0, 1) under ``emb.weight`` — what the torch model holds after construction.

Reparametrized tensors (``torch.nn.utils.parametrize``, legacy ``weight_norm``/``spectral_norm``) are
planned under their plain names (``fc.weight``, not ``fc.parametrizations.weight.original``) with
the shape and dtype of the computed tensor, so reparametrizing a layer does not change the scheme's
value (``_reparametrized.py`` writes it back).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import InitserveError
from ._reparametrized import Reparametrized, computed_tensor, reparametrized_tensors

if TYPE_CHECKING:
    import torch

__all__ = [
    "InitRule",
    "PatternPolicy",
    "Policy",
    "SchemePolicy",
    "TorchDefaultPolicy",
    "as_policy",
    "plan_module",
]

_TORCH_DTYPES = {"float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class InitRule:
    """A spec without shape/dtype (the parameter supplies those) and an optional row to zero afterwards."""

    scheme: str
    params: Mapping[str, Any] | None = None
    zero_row: int | None = None
    # Which torch code the rule reproduces (e.g. "Transformer._reset_parameters"): provenance for
    # plan_init, not part of the rule, so two rules that draw the same law compare equal.
    source: str = field(default="", compare=False)


class Policy(Protocol):
    def prepare(self, module: torch.nn.Module) -> None:
        """Called once with the whole module before any :meth:`rule` (parents may constrain children)."""
        ...

    def rule(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        """The rule for parameter ``name`` (``local`` within ``owner``), or ``None`` to leave it untouched."""
        ...


def _uniform(bound: float, source: str) -> InitRule:
    # torch draws U(-0, 0) = 0 when fan_in is 0; the engine wants low < high, so say zeros.
    return (
        InitRule("uniform", {"low": -bound, "high": bound}, source=source)
        if bound > 0
        else InitRule("zeros", source=source)
    )


def _fan_in(weight: torch.Tensor) -> int:
    """torch's ``_calculate_fan_in_and_fan_out(weight)[0]``: size(1) times the receptive field."""
    return int(weight.shape[1]) * math.prod(int(d) for d in weight.shape[2:]) if weight.dim() >= 2 else 0


class TorchDefaultPolicy:
    """Each layer's own torch default distribution (table in the module docstring)."""

    def __init__(self) -> None:
        self._overrides: dict[str, InitRule] = {}

    def prepare(self, module: torch.nn.Module) -> None:
        """Rules a parent imposes on its children's parameters, the outermost parent winning:
        ``Transformer`` gives every > 1-D parameter inside it xavier_uniform; ``MultiheadAttention``
        zeroes ``out_proj.bias``."""
        from torch import nn

        self._overrides = {}
        for prefix, sub in module.named_modules():  # pre-order: parents before children, so setdefault
            if isinstance(sub, nn.Transformer):
                for local, _, param, _ in _direct_parameters(sub):
                    if param.dim() > 1:
                        rule = InitRule("xavier_uniform", source="Transformer._reset_parameters")
                        self._overrides.setdefault(_join(prefix, local), rule)
            if (
                isinstance(sub, nn.MultiheadAttention)
                and sub.in_proj_bias is not None
                and sub.out_proj.bias is not None
            ):
                rule = InitRule("zeros", source="MultiheadAttention._reset_parameters")
                self._overrides.setdefault(_join(prefix, "out_proj.bias"), rule)

    def rule(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        from torch import nn

        if name in self._overrides:
            return self._overrides[name]
        kind = type(owner).__name__
        if isinstance(owner, nn.modules.conv._ConvNd | nn.Linear):
            if local == "weight":
                return InitRule("torch_default", source=f"{kind}.reset_parameters: kaiming_uniform_(a=√5)")
            if local == "bias":
                weight = _attribute(owner, "weight")
                partition_dim = int(getattr(weight, "partition_dim", 0))
                if getattr(weight, "tensor_model_parallel", False) and partition_dim >= 1:
                    # The bound would come from the partition's share of fan_in: √tp too wide, silently.
                    raise InitserveError(
                        f"no default rule for {name!r}: torch's bias bound U(±1/√fan_in) needs {kind}.weight's "
                        "global fan_in, but that weight is a Megatron partition of its input dimension "
                        f"(partition_dim={partition_dim}) holding a fraction of it; give {name!r} a "
                        f"pattern, e.g. policy={{{name!r}: 'zeros'}} (what Megatron does) or explicit bounds"
                    )
                fan_in = _fan_in(weight)
                return _uniform(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, f"{kind}.reset_parameters")
        if isinstance(owner, nn.Bilinear):
            in1 = int(_attribute(owner, "weight").size(1))
            return _uniform(1.0 / math.sqrt(in1), "Bilinear.reset_parameters")
        if isinstance(owner, nn.Embedding | nn.EmbeddingBag) and local == "weight":
            source = f"{kind}.reset_parameters: normal_, padding_idx row zeroed"
            return InitRule("normal", {"mean": 0.0, "std": 1.0}, zero_row=owner.padding_idx, source=source)
        norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)
        if isinstance(owner, norms):
            if local == "weight":
                return InitRule("ones", source=f"{kind}.reset_parameters")
            if local == "bias":
                return InitRule("zeros", source=f"{kind}.reset_parameters")
        if isinstance(owner, nn.RNNBase | nn.RNNCellBase):
            hidden = int(owner.hidden_size)
            return _uniform(1.0 / math.sqrt(hidden) if hidden > 0 else 0.0, f"{kind}.reset_parameters")
        if isinstance(owner, nn.MultiheadAttention):
            source = "MultiheadAttention._reset_parameters"
            if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                return InitRule("xavier_uniform", source=source)
            if local == "in_proj_bias":
                return InitRule("zeros", source=source)
            if local in ("bias_k", "bias_v"):
                return InitRule("xavier_normal", source=source)
        if isinstance(owner, nn.PReLU) and local == "weight":
            return InitRule("constant", {"value": float(owner.init)}, source="PReLU.reset_parameters")
        raise InitserveError(
            f"no default rule for parameter {name!r} of {type(owner).__name__}; give it one with a pattern "
            f"policy, e.g. policy={{{name!r}: {{'scheme': 'normal', 'params': {{'std': 0.02}}}}}}"
        )


class SchemePolicy:
    """One scheme for every weight of ≥ 2 dimensions; biases zero (or their torch default with
    ``bias="default"``); everything else (norm scales, ...) its torch default."""

    def __init__(self, scheme: str, params: Mapping[str, Any] | None = None, *, bias: str = "zeros") -> None:
        if bias not in ("zeros", "default"):
            raise ValueError(f"bias must be 'zeros' or 'default', got {bias!r}")
        self.scheme, self.params, self.bias = scheme, params, bias
        self._fallback = TorchDefaultPolicy()

    def prepare(self, module: torch.nn.Module) -> None:
        self._fallback.prepare(module)

    def rule(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        if param.dim() >= 2:
            return InitRule(self.scheme, self.params)
        if "bias" in local and self.bias == "zeros":
            return InitRule("zeros")
        return self._fallback.rule(name, local, param, owner)


class PatternPolicy:
    """``{fnmatch pattern: spec}`` over full parameter names; the first matching pattern wins.

    A spec is a scheme name, a mapping ``{"scheme": ..., "params": {...}}``, or ``None`` to leave the
    parameter as it is. Parameters no pattern matches get ``fallback`` (default: the torch defaults).
    """

    def __init__(self, mapping: Mapping[str, str | Mapping[str, Any] | None], *, fallback: Policy | None = None):
        self.mapping = dict(mapping)
        self.fallback: Policy = fallback if fallback is not None else TorchDefaultPolicy()

    def prepare(self, module: torch.nn.Module) -> None:
        self.fallback.prepare(module)

    def rule(self, name: str, local: str, param: torch.Tensor, owner: torch.nn.Module) -> InitRule | None:
        for pattern, spec in self.mapping.items():
            if fnmatch.fnmatchcase(name, pattern):
                if spec is None:
                    return None
                if isinstance(spec, str):
                    return InitRule(spec)
                unknown = set(spec) - {"scheme", "params"}
                if "scheme" not in spec or unknown:
                    raise ValueError(f"policy[{pattern!r}] must be {{'scheme': str, 'params': {{...}}}}, got {spec!r}")
                return InitRule(str(spec["scheme"]), spec.get("params"))
        return self.fallback.rule(name, local, param, owner)


def as_policy(policy: Policy | str | Mapping[str, Any] | None) -> Policy:
    """``None``/``"torch"`` → torch defaults; another string → :class:`SchemePolicy`; a mapping → patterns."""
    if policy is None or policy in ("torch", "default"):
        return TorchDefaultPolicy()
    if isinstance(policy, str):
        return SchemePolicy(policy)
    if isinstance(policy, Mapping):
        return PatternPolicy(policy)
    return policy


def _join(prefix: str, local: str) -> str:
    return f"{prefix}.{local}" if prefix else local


def _attribute(owner: torch.nn.Module, local: str) -> torch.Tensor:
    """``owner.<local>``; a parametrized one evaluated without side effects (see computed_tensor)."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(owner, local):
        return computed_tensor(owner, local, local)
    value: torch.Tensor = getattr(owner, local)
    return value


def _direct_parameters(
    module: torch.nn.Module, computed: Mapping[str, Reparametrized] | None = None
) -> Iterator[tuple[str, str, torch.Tensor, torch.nn.Module]]:
    """(full name, local name, parameter, owner) once per distinct parameter, in ``named_parameters()``
    order and under the name it gives (the first occurrence), the owner being the module holding that
    name. A reparametrized tensor comes once, where its first stored original would, as (plain name,
    local, a meta tensor of the computed shape and dtype, the module computing it). ``computed``: the
    module's :func:`reparametrized_tensors`, if the caller has them already."""
    if computed is None:
        computed = reparametrized_tensors(module)
    by_original = {original: entry for entry in computed.values() for original in entry.originals}
    seen: set[int] = set()
    placed: set[str] = set()
    for prefix, sub in module.named_modules():
        for local, param in sub.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            full = _join(prefix, local)
            entry = by_original.get(full)
            if entry is None:
                yield full, local, param, sub
            elif entry.name not in placed:
                placed.add(entry.name)
                yield entry.name, entry.local, entry.proxy(), entry.owner


def tied_names(
    module: torch.nn.Module, computed: Mapping[str, Reparametrized] | None = None
) -> dict[str, tuple[str, ...]]:
    """``{name named_parameters() gives: (every other name of the same tensor, …)}`` for tied tensors; a
    reparametrized tensor is named by its plain name (``b.weight`` for ``b.parametrizations.weight.original``)."""
    if computed is None:
        computed = reparametrized_tensors(module)
    params = dict(module.named_parameters())
    plain = {
        id(params[original]): entry
        for entry in computed.values()
        for original in entry.originals
        if original in params  # a parametrized buffer is no parameter: init_module leaves it alone
    }
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        entry = plain.get(id(param))
        if entry is not None:
            name = _plain_name(name, entry.local)
        group = names.setdefault(id(entry) if entry is not None else id(param), [])
        if name not in group:
            group.append(name)
    return {group[0]: tuple(group[1:]) for group in names.values() if len(group) > 1}


def _plain_name(stored: str, local: str) -> str:
    """``a.parametrizations.weight.original0`` → ``a.weight``; ``a.weight_g`` → ``a.weight``."""
    head, sep, _ = stored.rpartition(".parametrizations.")
    if not sep and stored.startswith("parametrizations."):
        return local
    if sep:
        return _join(head, local)
    prefix = stored.rpartition(".")[0]
    return _join(prefix, local)


def plan_module(
    module: torch.nn.Module, policy: Policy, computed: Mapping[str, Reparametrized] | None = None
) -> dict[str, tuple[dict[str, Any], InitRule]]:
    """Bundle entries ``{parameter name: (spec without seed, rule)}`` for every parameter the policy sets
    (``computed`` as for :func:`_direct_parameters`)."""
    from torch.nn.parameter import UninitializedParameter

    policy.prepare(module)
    plan = {}
    for name, local, param, owner in _direct_parameters(module, computed):
        if isinstance(param, UninitializedParameter):
            raise InitserveError(f"parameter {name!r} is uninitialized (a lazy module): run a forward pass first")
        rule = policy.rule(name, local, param, owner)
        if rule is None:
            continue
        dtype = str(param.dtype).removeprefix("torch.")
        if dtype not in _TORCH_DTYPES:
            raise InitserveError(
                f"parameter {name!r} has dtype {param.dtype}; initserve serves {sorted(_TORCH_DTYPES)}"
            )
        spec: dict[str, Any] = {"shape": list(param.shape), "scheme": rule.scheme, "dtype": dtype, "layout": "torch"}
        if rule.params:
            spec["params"] = dict(rule.params)
        plan[name] = (spec, rule)
    return plan
