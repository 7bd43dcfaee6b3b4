"""Reparametrized tensors: a module attribute (``weight``) that torch computes from other parameters.

``torch.nn.utils.parametrize`` (``parametrizations.weight_norm``, ``spectral_norm``, ``orthogonal``, any
``register_parametrization``) moves the stored tensor to ``parametrizations.<name>.original`` (or
``original0``, ``original1``, … when ``right_inverse`` returns several) and makes ``<name>`` a property;
the legacy hooks ``torch.nn.utils.weight_norm`` (``<name>_g``, ``<name>_v``) and
``torch.nn.utils.spectral_norm`` (``<name>_orig``, buffers ``<name>_u``, ``<name>_v``) recompute
``<name>`` before every forward. :func:`init_module` treats such a tensor under its *plain* name: the
scheme gives the value the plain layer would get (same name, so the same random key), and it is
written back through the reparametrization's inverse:

- a ``parametrize`` list: assignment (``module.<name> = value`` under ``no_grad``), which calls each
  parametrization's ``right_inverse`` in reverse order — torch's own mechanism. Weight norm's
  magnitude is then set to the norm its forward divides by (``torch._weight_norm_interface``), so
  ``g/‖v‖`` is exactly 1 and the weight equals the scheme's tensor bit for bit in float32/float64
  (float16/bfloat16: g is stored rounded while the forward divides in float32, so an element may
  move by one unit in the last place).
  Spectral norm's power-iteration buffers ``_u``, ``_v`` are re-drawn N(0, 1) from (seed, buffer
  name), normalised, and given the 15 warm-up iterations torch's ``_SpectralNorm.__init__`` runs, now
  on the new weight.
- legacy weight norm: ``v`` = the value, ``g`` = the norm the forward divides by (as above).
- legacy spectral norm: ``<name>_orig`` = the value, ``<name>_u``/``<name>_v`` re-drawn N(0, 1) and
  normalised (torch's ``SpectralNorm.apply``; it runs no warm-up iterations).

Spectral norm's weight is W/σ(W) by construction: no stored value makes it equal an arbitrary W, so
the scheme sets W (the original), as it is when torch registers the parametrization on an
initialised layer. A parametrization without ``right_inverse`` has no way back from a value to its
original(s): :class:`InitserveError` names the tensor before anything is fetched or changed, unless
the policy leaves it untouched (``None``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import InitserveError

if TYPE_CHECKING:
    import torch

__all__ = ["Reparametrized", "reparametrized_tensors"]

# torch's _SpectralNorm.__init__ warms u and v up with this many power iterations.
_SPECTRAL_WARMUP = 15


@dataclass(frozen=True)
class Reparametrized:
    """One computed tensor: ``owner.<local>`` named ``name``, stored in the parameters ``originals``.

    ``kind``: ``"parametrize"``, ``"weight_norm"`` (legacy hook) or ``"spectral_norm"`` (legacy hook).
    ``buffers``: ``{full name: buffer}`` of power-iteration vectors to re-draw N(0, 1) (spectral norm);
    ``rewritten``: the full names of every buffer :meth:`assign` sets (those, and ``orthogonal``'s ``base``);
    ``problem``: why no value can be written back, if so (see :meth:`check`)."""

    name: str
    local: str
    owner: torch.nn.Module
    kind: str
    originals: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    buffers: tuple[tuple[str, torch.Tensor], ...] = ()
    rewritten: tuple[str, ...] = ()
    problem: str | None = None

    def check(self) -> None:
        """Raise :class:`InitserveError` if no value can be written back (a parametrization without
        ``right_inverse``): called before anything is fetched or changed."""
        if self.problem is not None:
            raise InitserveError(self.problem)

    def proxy(self) -> torch.Tensor:
        """A storage-less tensor of the computed shape and dtype, for policies that look at ``param``."""
        import torch

        return torch.empty(self.shape, dtype=self.dtype, device="meta")

    def assign(self, value: torch.Tensor) -> None:
        """Write ``value`` (the scheme's tensor for ``name``) back into the originals; the buffers hold
        their N(0, 1) draws already and are normalised (and warmed up) here."""
        import torch

        with torch.no_grad():
            if self.kind == "parametrize":
                self._assign_parametrize(value)
            elif self.kind == "weight_norm":
                hook = _legacy_hook(self.owner, self.local, "WeightNorm")
                getattr(self.owner, f"{self.local}_v").copy_(value)
                getattr(self.owner, f"{self.local}_g").copy_(_forward_norm(value, hook.dim))
                setattr(self.owner, self.local, hook.compute_weight(self.owner))
            else:  # legacy spectral norm
                hook = _legacy_hook(self.owner, self.local, "SpectralNorm")
                getattr(self.owner, f"{self.local}_orig").copy_(value)
                for _, buffer in self.buffers:
                    buffer.copy_(torch.nn.functional.normalize(buffer, dim=0, eps=hook.eps))
                setattr(self.owner, self.local, getattr(self.owner, f"{self.local}_orig").data)

    def _assign_parametrize(self, value: torch.Tensor) -> None:
        import torch
        from torch.nn.utils.parametrizations import _SpectralNorm, _WeightNorm

        chain: Any = _chains(self.owner)[self.local]
        setattr(self.owner, self.local, value)  # ParametrizationList.right_inverse, in reverse order
        if len(chain) == 1 and isinstance(chain[0], _WeightNorm):
            # torch's right_inverse takes g = norm_except_dim(v), which the fused forward does not
            # reproduce to the last bit; the forward's own norm makes g/‖v‖ exactly 1.
            chain.original0.copy_(_forward_norm(chain.original1, chain[0].dim))
        for parametrization in chain:
            if isinstance(parametrization, _SpectralNorm) and hasattr(parametrization, "_u"):
                for buffer in (parametrization._u, parametrization._v):
                    buffer.copy_(torch.nn.functional.normalize(buffer, dim=0, eps=parametrization.eps))
        # A spectral norm warms up on the value it sees: the original after the parametrizations
        # registered before it (evaluated in eval mode, which leaves their buffers alone).
        spectral = [i for i, p in enumerate(chain) if isinstance(p, _SpectralNorm) and hasattr(p, "_u")]
        if not spectral:
            return
        modes = [sub.training for sub in chain.modules()]
        chain.eval()
        try:
            stored = () if chain.is_tensor else tuple(getattr(chain, f"original{i}") for i in range(chain.ntensors))
            current: Any = chain.original if chain.is_tensor else stored
            for index, parametrization in enumerate(chain):
                if index > 0:
                    previous = chain[index - 1]
                    current = previous(*current) if isinstance(current, tuple) else previous(current)
                if index in spectral and isinstance(current, torch.Tensor):
                    matrix = parametrization._reshape_weight_to_matrix(current)
                    parametrization._power_method(matrix, _SPECTRAL_WARMUP)
                if index >= spectral[-1]:
                    break
        finally:
            for sub, mode in zip(chain.modules(), modes, strict=True):
                sub.training = mode


def _forward_norm(v: torch.Tensor, dim: int | None) -> torch.Tensor:
    """The norm ``torch._weight_norm(v, g, dim)`` divides by, in ``v``'s dtype: the fused kernel's
    (``_weight_norm_interface``, for ``dim`` 0 or the last) where it applies, else ``norm_except_dim``."""
    import torch

    axis = -1 if dim is None else dim
    g = torch.norm_except_dim(v, 2, axis)
    try:
        norms = torch._weight_norm_interface(v, g, axis)[1]
    except RuntimeError:  # not a dimension the fused kernel handles: the forward uses norm_except_dim too
        return g
    return norms.to(v.dtype).reshape(g.shape)


def computed_tensor(module: torch.nn.Module, local: str, name: str) -> torch.Tensor:
    """``module.<local>``, evaluated with its parametrizations in eval mode (a spectral norm in training
    mode would advance its power iteration: planning changes nothing)."""
    import torch

    chain: Any = _chains(module)[local]
    modes = [sub.training for sub in chain.modules()]
    chain.eval()
    try:
        with torch.no_grad():
            value: torch.Tensor = getattr(module, local)
    except Exception as exc:  # a failure of user code: name the tensor
        raise InitserveError(f"{name}: evaluating its parametrization failed ({exc})") from None
    finally:
        for sub, mode in zip(chain.modules(), modes, strict=True):
            sub.training = mode
    return value


def _chains(module: torch.nn.Module) -> Any:
    """``module.parametrizations`` (a ModuleDict of ParametrizationList), untyped for mypy."""
    return module.parametrizations


def _legacy_hook(module: torch.nn.Module, local: str, kind: str) -> Any:
    for hook in module._forward_pre_hooks.values():
        if type(hook).__name__ == kind and getattr(hook, "name", None) == local:
            return hook
    raise InitserveError(f"{local}: the {kind} hook is gone from {type(module).__name__}")  # removed meanwhile


def _is_sharded(tensor: torch.Tensor) -> bool:
    from ._distributed import _is_dtensor

    return _is_dtensor(tensor) or bool(getattr(tensor, "tensor_model_parallel", False))


def _join(prefix: str, local: str) -> str:
    return f"{prefix}.{local}" if prefix else local


def _parametrized(prefix: str, module: torch.nn.Module) -> Iterator[Reparametrized]:
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import _Orthogonal, _SpectralNorm

    if not parametrize.is_parametrized(module):
        return
    for local, chain in _chains(module).items():
        name = _join(prefix, local)
        stored = [f"original{i}" for i in range(chain.ntensors)] if not chain.is_tensor else ["original"]
        originals = tuple(_join(prefix, f"parametrizations.{local}.{key}") for key in stored)
        missing = [type(p).__name__ for p in chain if not hasattr(p, "right_inverse")]
        problem = (
            f"{name} is computed by the parametrization {missing[0]}, which has no right_inverse: initserve "
            f"cannot turn the scheme's value for {name!r} back into {', '.join(originals)}. Give {missing[0]} "
            "a right_inverse, or initialise the layer before registering the parametrization and leave it "
            f"untouched (policy={{{name!r}: None}})"
            if missing
            else None
        )
        tensors = [getattr(chain, key) for key in stored]
        if any(_is_sharded(t) for t in tensors):
            raise InitserveError(
                f"{name} is parametrized and sharded ({originals[0]}): initserve fills sharded tensors "
                "element-wise, but a parametrization's right_inverse needs the whole tensor; register the "
                "parametrization after init_module or initialise it unsharded"
            )
        computed = computed_tensor(module, local, name)
        buffers: list[tuple[str, torch.Tensor]] = []
        rewritten: list[str] = []
        for index, parametrization in enumerate(chain):
            base = _join(prefix, f"parametrizations.{local}.{index}")
            if isinstance(parametrization, _SpectralNorm) and hasattr(parametrization, "_u"):
                buffers += [(f"{base}._u", parametrization._u), (f"{base}._v", parametrization._v)]
            if isinstance(parametrization, _Orthogonal) and hasattr(parametrization, "base"):
                rewritten.append(f"{base}.base")  # right_inverse sets it
        yield Reparametrized(
            name,
            local,
            module,
            "parametrize",
            originals,
            tuple(computed.shape),
            computed.dtype,
            tensors[0].device,
            tuple(buffers),
            (*(buffer_name for buffer_name, _ in buffers), *rewritten),
            problem,
        )


def _legacy(prefix: str, module: torch.nn.Module) -> Iterator[Reparametrized]:
    hook: Any
    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        if kind not in ("WeightNorm", "SpectralNorm") or type(hook).__module__ not in (
            "torch.nn.utils.weight_norm",
            "torch.nn.utils.spectral_norm",
        ):
            continue
        local = str(hook.name)
        name = _join(prefix, local)
        stored: tuple[str, ...]
        buffers: tuple[tuple[str, torch.Tensor], ...]
        if kind == "WeightNorm":
            stored, buffers = (f"{local}_g", f"{local}_v"), ()
            reference = getattr(module, f"{local}_v")
        else:
            stored = (f"{local}_orig",)
            reference = getattr(module, f"{local}_orig")
            buffers = tuple((_join(prefix, f"{local}_{key}"), getattr(module, f"{local}_{key}")) for key in ("u", "v"))
        if any(_is_sharded(getattr(module, key)) for key in stored):
            raise InitserveError(f"{name} is weight/spectral-normalised and sharded: not supported")
        yield Reparametrized(
            name,
            local,
            module,
            "weight_norm" if kind == "WeightNorm" else "spectral_norm",
            tuple(_join(prefix, key) for key in stored),
            tuple(reference.shape),
            reference.dtype,
            reference.device,
            buffers,
            tuple(buffer_name for buffer_name, _ in buffers),
        )


def reparametrized_tensors(module: torch.nn.Module) -> dict[str, Reparametrized]:
    """``{plain name: Reparametrized}`` for every computed tensor in ``module``, in module order."""
    found: dict[str, Reparametrized] = {}
    for prefix, sub in module.named_modules():
        for entry in (*_parametrized(prefix, sub), *_legacy(prefix, sub)):
            found[entry.name] = entry
    return found
