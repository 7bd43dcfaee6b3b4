"""torch integration: exact-dtype conversion and :func:`init_module`. Needs the ``torch`` extra."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._distributed import TensorParallel, layout_of, local_tensor, materialize, reshard_fsdp
from ._errors import InitserveError, MissingDependencyError
from ._policies import InitRule, Policy, _direct_parameters, as_policy, plan_module, tied_names
from ._reparametrized import Reparametrized, reparametrized_tensors
from ._shards import Box, ShardLayout

if TYPE_CHECKING:
    import torch

    from ._async_client import AsyncClient
    from ._client import Client
    from ._local import LocalClient

__all__ = ["PlannedParameter", "ainit_module", "init_module", "plan_init", "to_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("this needs torch: pip install 'initserve[torch]'") from None
    return torch


def to_torch(array: np.ndarray[Any, Any], st_dtype: str, *, device: str | torch.device | None = None) -> torch.Tensor:
    """numpy → torch sharing memory. BF16/F8 arrive as raw unsigned bits and are reinterpreted with
    ``Tensor.view(dtype)`` (torch cannot read ml_dtypes arrays); no value is converted or copied.
    Moving to ``device`` copies, as it must; so does a read-only source array."""
    th = _torch()
    if not array.flags.writeable:
        # torch tensors are writable by contract; a read-only source (a bytes buffer) must be copied.
        array = array.copy()
    special = {"BF16": th.bfloat16, "F8_E4M3": th.float8_e4m3fn, "F8_E5M2": th.float8_e5m2}
    tensor: torch.Tensor = th.from_numpy(array)
    if st_dtype in special:
        tensor = tensor.view(special[st_dtype])
    return tensor if device is None else tensor.to(device)


# One bundle request holds at most this many tensors and bytes: well inside the server's defaults
# (INITSERVE_MAX_BUNDLE_TENSORS 4,096, INITSERVE_MAX_BYTES 8 GiB, a request body of 1 MiB), so a model of
# any size — a mixture of experts has tens of thousands of parameters, a 7B model 28 GB — is filled in
# several requests, and a fetched group is held in memory once before being copied into the parameters.
# A tensor's bytes do not depend on which bundle carries it.
MAX_REQUEST_TENSORS = 1024
MAX_REQUEST_BYTES = 1 << 30
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def _spec_bytes(spec: Mapping[str, Any]) -> int:
    dims = [int(d) for d in spec["shape"]]
    for axis, (begin, end) in enumerate(spec.get("slice") or ()):
        dims[axis] = int(end) - int(begin)
    return math.prod(dims) * _ITEMSIZE.get(str(spec.get("dtype")), 8)


def request_groups(specs: Mapping[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """``specs`` cut, in order, into bundles of at most :data:`MAX_REQUEST_TENSORS` tensors and
    :data:`MAX_REQUEST_BYTES` bytes (a single larger tensor travels alone)."""
    groups: list[dict[str, dict[str, Any]]] = []
    current: dict[str, dict[str, Any]] = {}
    size = 0
    for name, spec in specs.items():
        nbytes = _spec_bytes(spec)
        if current and (len(current) >= MAX_REQUEST_TENSORS or size + nbytes > MAX_REQUEST_BYTES):
            groups.append(current)
            current, size = {}, 0
        current[name] = spec
        size += nbytes
    if current:
        groups.append(current)
    return groups


class _Filling:
    """The requests that fill a module and where each answer goes.

    A parameter this process holds whole is one bundle entry; a sharded one (DTensor, Megatron) is
    one entry per box of its local elements (:meth:`ShardLayout.boxes`). A bundle names each tensor
    once, so boxes are sent in rounds: round ``k`` carries box ``k`` of every parameter that has one.

    A reparametrized tensor (``_reparametrized.py``) is generated whole into a scratch tensor of its
    computed shape and written back through its inverse in :meth:`finish`; the power-iteration
    buffers a spectral norm owns are drawn N(0, 1) under their buffer names in round 0.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        plan: Mapping[str, tuple[dict[str, Any], InitRule]],
        tensor_parallel: TensorParallel | None,
        computed: Mapping[str, Reparametrized],
    ) -> None:
        th = _torch()
        params = dict(module.named_parameters())
        self.computed: dict[str, Reparametrized] = {name: computed[name] for name in plan if name in computed}
        for entry in self.computed.values():
            entry.check()
        self.rules = {name: rule for name, (_, rule) in plan.items()}
        self.locals = {
            name: (
                th.empty(self.computed[name].shape, dtype=self.computed[name].dtype, device=self.computed[name].device)
                if name in self.computed
                else local_tensor(params[name])
            )
            for name in plan
        }
        self.layouts: dict[str, ShardLayout | None] = {}
        self.rounds: list[dict[str, dict[str, Any]]] = []
        self.boxes: list[dict[str, Box | None]] = []
        for name, (spec, _) in plan.items():
            if name in self.computed:
                self.layouts[name] = None
                self._add(0, name, spec, None)
                for buffer_name, buffer in self.computed[name].buffers:
                    dtype = str(buffer.dtype).removeprefix("torch.")
                    self.locals[buffer_name] = buffer
                    self._add(0, buffer_name, {"shape": list(buffer.shape), "scheme": "normal", "dtype": dtype}, None)
                continue
            layout = layout_of(name, params[name], tensor_parallel)
            self.layouts[name] = layout
            if layout is None:
                self._add(0, name, spec, None)
                continue
            spec = {**spec, "shape": list(layout.global_shape)}  # the scheme's scalars follow the global shape
            # A rank holding no element (an empty torch.chunk piece, a rank outside the mesh) still requests
            # an empty block: its spec is then checked like its peers'. Were it skipped, a spec its peers
            # raise on would pass here, and this rank would wait in the next collective for peers that never come.
            for k, box in enumerate(layout.boxes() or [Box.nothing(layout.global_shape)]):
                box_slice = box.spec_slice(layout.global_shape)
                self._add(k, name, spec if box_slice is None else {**spec, "slice": box_slice}, box)

    def _add(self, k: int, name: str, spec: dict[str, Any], box: Box | None) -> None:
        while len(self.rounds) <= k:
            self.rounds.append({})
            self.boxes.append({})
        self.rounds[k][name] = spec
        self.boxes[k][name] = box

    def target(self, k: int, name: str) -> torch.Tensor:
        box, local = self.boxes[k][name], self.locals[name]
        if box is None or box.shape == tuple(local.shape):  # the whole local tensor: no view to build
            return local
        if 0 in box.shape:  # nothing held; outside the mesh, DTensor gives the local tensor shape (0,)
            return local.new_empty(box.shape)
        return local[box.local_index()]

    def direct(self, k: int) -> list[str]:
        """Entries of round ``k`` whose target a LocalClient can generate into in place (contiguous CPU
        memory of the right dtype): no second copy of the shard is made."""
        out = []
        for name, spec in self.rounds[k].items():
            target = self.target(k, name)
            if target.device.type == "cpu" and target.is_contiguous() and str(target.dtype) == f"torch.{spec['dtype']}":
                out.append(name)
        return out

    def apply(self, k: int, values: Mapping[str, torch.Tensor]) -> None:
        th = _torch()
        with th.no_grad():
            for name, value in values.items():
                target = self.target(k, name)
                if tuple(value.shape) != tuple(target.shape) or value.dtype != target.dtype:
                    box = self.boxes[k][name]
                    raise InitserveError(
                        f"{name}: server returned {value.dtype}{list(value.shape)}, "
                        f"parameter {'block' if box is not None else 'is'} {target.dtype}{list(target.shape)}"
                    )
                target.copy_(value)

    def fill(self, k: int, client: Client | LocalClient, seed: int) -> None:
        """Round ``k`` through ``client``: in place where a LocalClient can, else fetched and copied."""
        from ._local import LocalClient

        specs = self.rounds[k]
        direct = self.direct(k) if isinstance(client, LocalClient) else []
        if direct:
            th = _torch()
            with th.no_grad():
                client.bundle_into(  # type: ignore[union-attr]
                    {name: specs[name] for name in direct}, {name: self.target(k, name) for name in direct}, seed=seed
                )
        rest = {name: spec for name, spec in specs.items() if name not in direct}
        for group in request_groups(rest):
            self.apply(k, client.bundle_torch(group, seed=seed))

    def finish(self) -> None:
        """Rows a rule zeroes afterwards (``padding_idx``), wherever this rank holds them."""
        th = _torch()
        with th.no_grad():
            for name, rule in self.rules.items():
                if rule.zero_row is None:
                    continue
                layout, local = self.layouts[name], self.locals[name]
                rows = [rule.zero_row] if layout is None else list(layout.local_positions(0, rule.zero_row))
                for row in rows:
                    local[row].zero_()
        for name, entry in self.computed.items():
            entry.assign(self.locals[name])


def _prepare(
    module: torch.nn.Module,
    policy: Policy | str | Mapping[str, Any] | None,
    device: str | torch.device | None,
    tensor_parallel: TensorParallel | None,
) -> _Filling:
    rules = as_policy(policy)
    reshard_fsdp(module)  # fill FSDP2's sharded parameters, never its unsharded all-gather buffers
    # Planning evaluates each parametrized tensor several times for its shape (the policy, a bias's
    # fan_in, the filling); torch's cache makes that one evaluation each. Nothing is written meanwhile.
    with _torch().nn.utils.parametrize.cached():
        computed = reparametrized_tensors(module)
        if device is not None and any(param.is_meta for param in module.parameters()):
            # to_empty() gives every parameter fresh, uninitialised storage: each needs a rule to fill it.
            planned = plan_module(module, rules, computed)
            for name in planned.keys() & computed.keys():
                computed[name].check()
            untouched = [name for name, _, _, _ in _direct_parameters(module, computed) if name not in planned]
            if untouched:
                raise InitserveError(
                    f"the policy leaves {untouched[0]!r} untouched, but materialising the module on {device!r} "
                    "(to_empty) would leave it holding uninitialised memory: give it a rule"
                )
        if materialize(module, device, {name for entry in computed.values() for name in entry.rewritten}):
            computed = reparametrized_tensors(module)  # to_empty() replaced the tensors the entries hold
        return _Filling(module, plan_module(module, rules, computed), tensor_parallel, computed)


def _derive_plan(
    module: torch.nn.Module, tensor_parallel: TensorParallel | None
) -> tuple[dict[str, dict[str, Any]], dict[str, ShardLayout | None]]:
    """``{state_dict name: {"shape", "dtype"}}`` (parameters and persistent buffers, running stats too),
    each with its **global** shape, and which of its elements this rank holds (``None``: all of them)."""
    params = dict(module.named_parameters(remove_duplicate=False))  # Megatron's attributes are on these
    targets: dict[str, dict[str, Any]] = {}
    layouts: dict[str, ShardLayout | None] = {}
    for name, tensor in module.state_dict().items():
        layout = layout_of(name, params.get(name, tensor), tensor_parallel)
        shape = tensor.shape if layout is None else layout.global_shape
        targets[name] = {"shape": list(shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
        layouts[name] = layout
    return targets, layouts


def _load_derived(
    module: torch.nn.Module, values: Mapping[str, torch.Tensor], layouts: Mapping[str, ShardLayout | None]
) -> None:
    """Copy each derived (global) tensor's elements this rank holds into the module's own storage."""
    th = _torch()
    with th.no_grad():
        for name, tensor in module.state_dict().items():
            value, layout, target = values[name], layouts[name], local_tensor(tensor)
            if layout is not None and tuple(value.shape) == layout.global_shape:
                for axis, indices in enumerate(layout.indices):
                    value = value.index_select(axis, th.from_numpy(indices))
            if tuple(value.shape) != tuple(target.shape) or value.dtype != target.dtype:
                raise InitserveError(
                    f"{name}: server derived {value.dtype}{list(value.shape)}, "
                    f"module has {target.dtype}{list(target.shape)}"
                )
            target.copy_(value)


def _check_arguments(module: object, client: object) -> None:
    """TypeError naming the argument, rather than an AttributeError from deep inside."""
    if not isinstance(module, _torch().nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not hasattr(client, "bundle_torch"):
        raise TypeError(
            f"client must be a Client or a LocalClient (AsyncClient for ainit_module), got {type(client).__name__}"
        )


def init_module(
    module: torch.nn.Module,
    *,
    client: Client | LocalClient,
    seed: int,
    policy: Policy | str | Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    tp_rank: int | None = None,
    tp_size: int | None = None,
    tp_group: Any = None,
    from_checkpoint: str | None = None,
    rules: Sequence[Mapping[str, Any]] = (),
) -> torch.nn.Module:
    """Fill ``module``'s parameters in place from bundle requests; returns ``module``.

    With ``from_checkpoint`` (a checkpoint digest from :meth:`Client.upload_checkpoint`), the whole
    ``state_dict`` (parameters and persistent buffers) comes from one ``/v1/derive`` request instead:
    each entry takes the first of ``rules`` whose ``match`` matches its name (docs/pretrained.md), and
    entries no rule matches are copied from the checkpoint. ``policy`` does not apply then: fresh
    tensors are ``reinit`` rules. A sharded parameter is derived at its global shape and this rank keeps
    its elements (each rank receives the whole derived tensor).

    Each parameter is the tensor named by its parameter name (``"0.weight"``, ``"encoder.fc.bias"``):
    the same ``seed`` gives the same module on any machine, and adding a layer leaves every other
    parameter unchanged as long as the other names stay (name your layers rather than relying on
    ``Sequential`` indices if you plan to insert some). Buffers (BatchNorm running stats) are untouched.
    A tied tensor is set once, as the untied model's tensor under its first ``named_parameters()``
    name. A reparametrized tensor (``parametrize``, legacy weight/spectral norm) is planned under its
    plain name (``fc.weight``) and written back through its ``right_inverse``, so the effective weight
    is the plain layer's (docs/client.md lists each kind; spectral norm's u, v buffers are re-drawn).

    ``policy``: ``None``/``"torch"`` (each layer's torch default distribution), a scheme name (that
    scheme for every weight of ≥ 2 dims, zero biases), a ``{fnmatch pattern: spec}`` mapping, or a
    :class:`~initserve_client.Policy`.

    Sharded parameters (docs/sharding.md) get exactly their elements of the global tensor, so the
    model is the same at any world size: a DTensor (FSDP2 ``fully_shard``, ``distribute_tensor``;
    ``Shard``, ``_StridedShard``, ``Replicate`` on any mesh) is filled through ``to_local()``; a
    parameter with Megatron's ``tensor_model_parallel``/``partition_dim``/``partition_stride``
    attributes is this rank's partition of the global tensor (``partition_dim`` times ``tp_size``).
    Each rank requests only its own elements and nothing is communicated.

    ``device``: where parameters on the meta device are materialised (``Module.to_empty``) before
    they are filled; without it a meta parameter raises :class:`InitserveError` (a module is never
    returned still without storage), as does a policy that would leave a materialised parameter
    unfilled. Which rule each parameter gets — parents that re-initialise their children
    (``Transformer``), tied weights — is listed in docs/client.md; :func:`plan_init` shows it.
    ``tp_rank``/``tp_size`` (or ``tp_group``): the Megatron tensor-parallel rank; by default
    Megatron's ``parallel_state`` if initialised, else torch.distributed's default group.

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module`` or ``client`` is not a client.
        InitserveError: a parameter no rule covers, a meta parameter without ``device``, a placement
            that holds no values (``Partial``), a Megatron parameter whose rank is unknown, or a
            parametrization without ``right_inverse`` (or on a sharded tensor) that the policy sets.
    """
    _check_arguments(module, client)
    if from_checkpoint is not None:
        if policy is not None:
            raise ValueError("policy and from_checkpoint exclude each other: write fresh tensors as reinit rules")
        derive = getattr(client, "derive_torch", None)
        if derive is None:
            raise InitserveError("from_checkpoint needs a Client: checkpoints and derive live on the server")
        reshard_fsdp(module)
        materialize(module, device)
        targets, layouts = _derive_plan(module, _tensor_parallel(module, tp_rank, tp_size, tp_group))
        _load_derived(module, derive(from_checkpoint, targets, rules, seed=seed), layouts)
        return module
    tensor_parallel = _tensor_parallel(module, tp_rank, tp_size, tp_group)
    filling = _prepare(module, policy, device, tensor_parallel)
    for k in range(len(filling.rounds)):
        filling.fill(k, client, seed)
    filling.finish()
    return module


async def ainit_module(
    module: torch.nn.Module,
    *,
    client: AsyncClient,
    seed: int,
    policy: Policy | str | Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    tp_rank: int | None = None,
    tp_size: int | None = None,
    tp_group: Any = None,
    from_checkpoint: str | None = None,
    rules: Sequence[Mapping[str, Any]] = (),
) -> torch.nn.Module:
    """:func:`init_module` with an :class:`~initserve_client.AsyncClient`."""
    _check_arguments(module, client)
    if from_checkpoint is not None:
        if policy is not None:
            raise ValueError("policy and from_checkpoint exclude each other: write fresh tensors as reinit rules")
        reshard_fsdp(module)
        materialize(module, device)
        targets, layouts = _derive_plan(module, _tensor_parallel(module, tp_rank, tp_size, tp_group))
        _load_derived(module, await client.derive_torch(from_checkpoint, targets, rules, seed=seed), layouts)
        return module
    tensor_parallel = _tensor_parallel(module, tp_rank, tp_size, tp_group)
    filling = _prepare(module, policy, device, tensor_parallel)
    for k, specs in enumerate(filling.rounds):
        for group in request_groups(specs):
            filling.apply(k, await client.bundle_torch(group, seed=seed))
    filling.finish()
    return module


def _tensor_parallel(module: torch.nn.Module, rank: int | None, size: int | None, group: Any) -> TensorParallel | None:
    # Only a module with Megatron attributes needs the rank; others never look at torch.distributed.
    explicit = rank is not None or size is not None or group is not None
    if not explicit and not any(getattr(p, "tensor_model_parallel", False) for p in module.parameters()):
        return None
    return TensorParallel.resolve(rank, size, group)


@dataclass(frozen=True)
class PlannedParameter:
    """What :func:`init_module` would do to one parameter.

    ``params`` are the ones sent; with a client they are the server's canonical params, which hold the
    fans the scheme uses (``fan_in``/``fan_out``). ``tied`` lists the parameter's other names;
    ``stored_as`` the parameters a reparametrized tensor is written back to (``fc.weight`` computed by
    weight norm: ``fc.parametrizations.weight.original0``, ``…original1``), else empty."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scheme: str
    params: dict[str, Any]
    zero_row: int | None
    source: str
    owner: str
    tied: tuple[str, ...] = ()
    stored_as: tuple[str, ...] = ()

    @property
    def fan_in(self) -> int | None:
        value = self.params.get("fan_in")
        return None if value is None else int(value)

    @property
    def fan_out(self) -> int | None:
        value = self.params.get("fan_out")
        return None if value is None else int(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scheme": self.scheme,
            "params": self.params,
            "fan_in": self.fan_in,
            "fan_out": self.fan_out,
            "zero_row": self.zero_row,
            "source": self.source,
            "owner": self.owner,
            "tied": list(self.tied),
            "stored_as": list(self.stored_as),
        }


def _type_name(owner: torch.nn.Module) -> str:
    """The module's class name; for a parametrized one, the layer's (torch injects ``ParametrizedLinear``)."""
    from torch.nn.utils import parametrize

    kind = type(owner)
    return kind.__bases__[0].__name__ if parametrize.is_parametrized(owner) else kind.__name__


def plan_init(
    module: torch.nn.Module,
    *,
    policy: Policy | str | Mapping[str, Any] | None = None,
    client: Client | LocalClient | None = None,
    tp_rank: int | None = None,
    tp_size: int | None = None,
    tp_group: Any = None,
) -> list[PlannedParameter]:
    """The dry run of :func:`init_module`: for every parameter it would set, the scheme, params, the
    torch code the rule reproduces, its owner module and tied names — nothing is fetched or changed.

    With ``client``, one ``POST /v1/resolve`` (no generation; a :class:`LocalClient` resolves in process)
    returns the canonical params, so each entry also shows the fans the server will use. Works on
    meta-device modules (no storage needed).

    A sharded parameter's entry has its **global** shape, the one init_module sends and the fans come
    from: a DTensor's own shape; for a Megatron tensor-parallel parameter its local shape times the
    tensor-parallel size on ``partition_dim`` — ``tp_rank``/``tp_size``/``tp_group`` as for
    :func:`init_module`, whose error this raises when that size is unknown."""
    with _torch().nn.utils.parametrize.cached():  # one evaluation per parametrized tensor (see _prepare)
        computed = reparametrized_tensors(module)
        plan = plan_module(module, as_policy(policy), computed)
        owners = {name: _type_name(owner) for name, _, _, owner in _direct_parameters(module, computed)}
        tied = tied_names(module, computed)
    tensor_parallel = _tensor_parallel(module, tp_rank, tp_size, tp_group)
    params = dict(module.named_parameters())
    for name, (spec, _) in plan.items():
        layout = layout_of(name, params[name], tensor_parallel) if name in params and name not in computed else None
        if layout is not None:
            spec["shape"] = list(layout.global_shape)  # as _Filling sends it: the scalars follow the global shape
    canonical: Mapping[str, Any] = {}
    if client is not None and plan:
        resolved = client.resolve({"bundle": {"tensors": {name: spec for name, (spec, _) in plan.items()}}})
        canonical = resolved.get("canonical", {}).get("tensors", {})
    return [
        PlannedParameter(
            name=name,
            shape=tuple(spec["shape"]),
            dtype=str(spec["dtype"]),
            scheme=str(canonical.get(name, {}).get("scheme", rule.scheme)),
            params=dict(canonical.get(name, {}).get("params", spec.get("params", {}))),
            zero_row=rule.zero_row,
            source=rule.source,
            owner=owners.get(name, ""),
            tied=tied.get(name, ()),
            stored_as=computed[name].originals if name in computed else (),
        )
        for name, (spec, rule) in plan.items()
    ]
