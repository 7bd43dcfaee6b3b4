"""init_module on reparametrized tensors (``torch.nn.utils.parametrize``, legacy weight/spectral norm)
and on tied weights: the same seed gives the plain model's weights, bit for bit, under plain names.

Reference values are always computed, never written down: the plain model initialised with the same
seed, or torch's own ``register_parametrization`` applied to it afterwards."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.utils as legacy
from initserve_client import AsyncClient, Client, InitserveError, LocalClient, ainit_module, init_module, plan_init
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from tests.live_server import LiveServer as Server

pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

SEED = 20261201


def sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def net(dtype: torch.dtype = torch.float32) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 8, 3, dtype=dtype),
            flat=nn.Flatten(),
            fc=nn.Linear(8 * 6 * 6, 48, dtype=dtype),
            out=nn.Linear(48, 10, dtype=dtype),
        )
    )


def plain(seed: int = SEED, dtype: torch.dtype = torch.float32, policy: Any = None) -> nn.Module:
    return init_module(net(dtype), client=LocalClient(), seed=seed, policy=policy)


def effective(module: nn.Module) -> dict[str, str]:
    """sha256 of every effective weight and bias, by plain name."""
    return {
        f"{name}.{local}": sha(getattr(sub, local))
        for name, sub in module.named_modules()
        for local in ("weight", "bias")
        if isinstance(sub, nn.Linear | nn.Conv2d)
    }


WEIGHT_NORMS: dict[str, Callable[[nn.Module], object]] = {
    "parametrizations.weight_norm": parametrizations.weight_norm,
    "parametrizations.weight_norm(dim=1)": lambda m: parametrizations.weight_norm(m, dim=1),
    "parametrizations.weight_norm(dim=None)": lambda m: parametrizations.weight_norm(m, dim=None),
    "legacy weight_norm": legacy.weight_norm,
    "legacy weight_norm(dim=None)": lambda m: legacy.weight_norm(m, dim=None),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("apply", list(WEIGHT_NORMS.values()), ids=list(WEIGHT_NORMS))
def test_weight_norm_gives_the_plain_weights_bit_for_bit(
    apply: Callable[[nn.Module], object], dtype: torch.dtype
) -> None:
    model = net(dtype)
    for layer in (model.conv, model.fc, model.out):
        apply(layer)
    init_module(model, client=LocalClient(), seed=SEED)
    model(torch.zeros(1, 3, 8, 8, dtype=dtype))  # legacy hooks recompute the weight in a forward: still equal
    assert effective(model) == effective(plain(dtype=dtype))
    # g is the magnitude of v: the decomposition is weight norm's, not a rescaled copy.
    g, v = (
        (model.fc.parametrizations.weight.original0, model.fc.parametrizations.weight.original1)
        if hasattr(model.fc, "parametrizations")
        else (model.fc.weight_g, model.fc.weight_v)
    )
    dim = None if g.numel() == 1 else (0 if g.shape[0] > 1 else 1)
    norm = v.norm() if dim is None else v.norm(dim=1 - dim, keepdim=True)
    assert torch.allclose(g, norm.reshape(g.shape), rtol=1e-6)


def test_the_parametrized_names_are_the_plain_ones_and_the_policy_sees_them() -> None:
    model = net()
    parametrizations.weight_norm(model.fc)
    legacy.spectral_norm(model.out)
    plan = {entry.name: entry for entry in plan_init(model)}
    assert set(plan) == {name for name, _ in net().named_parameters()}
    stored = "fc.parametrizations.weight"
    assert plan["fc.weight"].stored_as == (f"{stored}.original0", f"{stored}.original1")
    assert plan["out.weight"].stored_as == ("out.weight_orig",)
    assert plan["fc.weight"].shape == (48, 288) and plan["fc.weight"].owner == "Linear"
    bound = 1 / math.sqrt(288)
    assert plan["fc.bias"].params == {"low": -bound, "high": bound}  # fan_in of the computed weight
    policy = {"fc.weight": {"scheme": "normal", "params": {"std": 0.02}}}
    init_module(model, client=LocalClient(), seed=SEED, policy=policy)
    assert sha(model.fc.weight) == sha(plain(policy=policy).fc.weight)


def test_weight_norm_through_the_server_matches_local_generation(server: Server) -> None:
    model = net()
    parametrizations.weight_norm(model.fc)
    legacy.weight_norm(model.out)
    with Client(base_url=server.url) as client:
        init_module(model, client=client, seed=SEED)
    assert effective(model) == effective(plain())


def test_weight_norm_through_the_async_client_matches_local_generation(server: Server) -> None:
    async def run(model: nn.Module) -> nn.Module:
        async with AsyncClient(base_url=server.url, cache=False) as client:
            return await ainit_module(model, client=client, seed=SEED)

    model = net()
    parametrizations.weight_norm(model.conv)
    legacy.spectral_norm(model.out)
    asyncio.run(run(model))
    reference = plain()
    assert sha(model.conv.weight) == sha(reference.conv.weight)
    assert sha(model.out.weight_orig) == sha(reference.out.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("apply", list(WEIGHT_NORMS.values()), ids=list(WEIGHT_NORMS))
def test_weight_norm_in_half_precision_is_within_one_rounding(
    apply: Callable[[nn.Module], object], dtype: torch.dtype
) -> None:
    # The fused forward rescales v by g/‖v‖ in float32 and rounds; g is stored rounded, so the ratio
    # is 1 only to half precision: an element can move by one unit in the last place, never more.
    model = nn.Linear(300, 200, dtype=dtype)
    apply(model)
    init_module(model, client=LocalClient(), seed=SEED)
    reference = init_module(nn.Linear(300, 200, dtype=dtype), client=LocalClient(), seed=SEED).weight.float()
    weight = model.weight.detach().float()
    assert bool(((weight - reference).abs() <= torch.finfo(dtype).eps * reference.abs()).all())


def test_planning_evaluates_a_parametrization_once_and_changes_nothing() -> None:
    class Counted(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Counted.calls += 1
            return x

        def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
            return x

    model = net()
    parametrize.register_parametrization(model.fc, "weight", Counted())
    parametrizations.spectral_norm(model.out)  # in training mode: evaluating it would step its power iteration
    before = {name: sha(t) for name, t in (*model.named_parameters(), *model.named_buffers())}
    Counted.calls = 0  # registering evaluated it once (torch's consistency check)
    plan_init(model)
    assert Counted.calls == 1
    assert before == {name: sha(t) for name, t in (*model.named_parameters(), *model.named_buffers())}
    Counted.calls = 0
    init_module(model, client=LocalClient(), seed=SEED)
    assert Counted.calls == 1


def test_a_parametrized_buffer_is_left_alone() -> None:
    model = nn.Linear(8, 8)
    model.register_buffer("mask", torch.ones(8, 8))
    parametrize.register_parametrization(model, "mask", Symmetric())
    before = sha(model.parametrizations.mask.original)
    assert [entry.name for entry in plan_init(model)] == ["weight", "bias"]
    init_module(model, client=LocalClient(), seed=SEED)
    assert sha(model.parametrizations.mask.original) == before
    assert sha(model.weight) == sha(init_module(nn.Linear(8, 8), client=LocalClient(), seed=SEED).weight)


def test_a_sharded_parametrized_tensor_is_refused_naming_it() -> None:
    model = net()
    parametrizations.weight_norm(model.fc)
    for original in model.fc.parametrizations.weight.parameters():
        original.tensor_model_parallel = True  # type: ignore[attr-defined]  # Megatron's marker
        original.partition_dim = 0  # type: ignore[attr-defined]
    with pytest.raises(InitserveError, match=r"fc\.weight is parametrized and sharded"):
        init_module(model, client=LocalClient(), seed=SEED, tp_rank=0, tp_size=2)


@pytest.mark.parametrize("shape", [(32, 32), (48, 20), (20, 48)])
def test_orthogonal_parametrization_keeps_an_orthogonal_scheme_and_orthogonalises_others(
    shape: tuple[int, int],
) -> None:
    out_features, in_features = shape
    for policy in ("orthogonal", None):
        reference = init_module(nn.Linear(in_features, out_features), client=LocalClient(), seed=SEED, policy=policy)
        model = nn.Linear(in_features, out_features)
        parametrizations.orthogonal(model)
        init_module(model, client=LocalClient(), seed=SEED, policy=policy)
        # torch's own semantics: registering the parametrization on the initialised plain layer.
        expected = copy.deepcopy(reference)
        parametrizations.orthogonal(expected)
        assert torch.equal(model.weight, expected.weight)
        eye = torch.eye(min(shape))
        gram = model.weight @ model.weight.T if out_features <= in_features else model.weight.T @ model.weight
        assert torch.allclose(gram, eye, atol=1e-5)
        if policy == "orthogonal" and out_features == in_features:
            assert sha(model.weight) == sha(reference.weight)  # already orthogonal: kept bit for bit
        elif policy == "orthogonal":
            assert torch.allclose(model.weight, reference.weight, atol=1e-5)


class Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).T

    def right_inverse(self, a: torch.Tensor) -> torch.Tensor:
        return a.triu()


class NoInverse(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_a_user_parametrization_goes_through_its_right_inverse() -> None:
    reference = init_module(nn.Linear(16, 16), client=LocalClient(), seed=SEED)
    model = nn.Linear(16, 16)
    parametrize.register_parametrization(model, "weight", Symmetric())
    init_module(model, client=LocalClient(), seed=SEED)
    expected = copy.deepcopy(reference)
    parametrize.register_parametrization(expected, "weight", Symmetric())
    assert sha(model.weight) == sha(expected.weight)
    assert torch.equal(model.weight.triu(), reference.weight.triu())


def test_a_parametrization_without_right_inverse_is_refused_before_anything_changes() -> None:
    model = nn.Sequential(OrderedDict(fc=nn.Linear(16, 8), head=nn.Linear(8, 2)))
    parametrize.register_parametrization(model.fc, "weight", NoInverse())
    before = {name: sha(p) for name, p in model.named_parameters()}
    with pytest.raises(InitserveError, match=r"fc\.weight.*NoInverse.*right_inverse"):
        init_module(model, client=LocalClient(), seed=SEED)
    assert before == {name: sha(p) for name, p in model.named_parameters()}
    # The escape hatch the message names: leave it as torch built it.
    init_module(model, client=LocalClient(), seed=SEED, policy={"fc.weight": None})
    assert sha(model.head.weight) == sha(plain_pair().head.weight)


def plain_pair() -> nn.Module:
    model = nn.Sequential(OrderedDict(fc=nn.Linear(16, 8), head=nn.Linear(8, 2)))
    return init_module(model, client=LocalClient(), seed=SEED)


@pytest.mark.parametrize("style", ["parametrizations", "legacy"])
def test_spectral_norm_sets_the_original_and_draws_its_power_iteration_from_the_seed(style: str) -> None:
    reference = plain()
    runs = []
    for torch_seed in (0, 1):
        torch.manual_seed(torch_seed)  # torch's global generator draws u, v at registration: must not matter
        model = net()
        apply = parametrizations.spectral_norm if style == "parametrizations" else legacy.spectral_norm
        apply(model.fc)
        init_module(model, client=LocalClient(), seed=SEED)
        stored = model.fc.parametrizations.weight.original if style == "parametrizations" else model.fc.weight_orig
        assert sha(stored) == sha(reference.fc.weight)
        buffers = {name: sha(b) for name, b in model.named_buffers()}
        assert len(buffers) == 2
        model.eval()
        runs.append((buffers, sha(model.fc.weight)))
    assert runs[0] == runs[1]
    if style == "parametrizations":
        # u, v are warmed up on the new weight, not the one torch drew: with every singular value 1
        # (orthogonal rows), u·Wv is 1 after the warm-up, so W/σ is W; stale u, v would give far less.
        policy = {"fc.weight": "orthogonal"}
        model = net()
        parametrizations.spectral_norm(model.fc)
        init_module(model, client=LocalClient(), seed=SEED, policy=policy)
        model.eval()
        assert torch.allclose(model.fc.weight, plain(policy=policy).fc.weight, rtol=1e-5, atol=1e-7)


def test_a_meta_device_model_with_reparametrizations_is_materialised_and_filled() -> None:
    with torch.device("meta"):
        model = net()
        parametrizations.weight_norm(model.fc)
        parametrizations.spectral_norm(model.out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the spectral norm's buffers are filled: no "hold no values" warning
        init_module(model, client=LocalClient(), seed=SEED, device="cpu")
    reference = plain()
    assert sha(model.fc.weight) == sha(reference.fc.weight)
    assert sha(model.out.parametrizations.weight.original) == sha(reference.out.weight)
    assert all(torch.isfinite(b).all() for b in model.buffers())


# --- tied weights ------------------------------------------------------------------------------


class TiedLM(nn.Module):
    def __init__(self, head_first: bool, tie_to_head: bool = False) -> None:
        super().__init__()
        if head_first:
            self.head = nn.Linear(64, 1000, bias=False)
            self.emb = nn.Embedding(1000, 64)
        else:
            self.emb = nn.Embedding(1000, 64)
            self.head = nn.Linear(64, 1000, bias=False)
        if tie_to_head:
            self.emb.weight = self.head.weight
        else:
            self.head.weight = self.emb.weight


def untied(head_first: bool) -> nn.Module:
    model = TiedLM(head_first)
    model.head.weight = nn.Parameter(torch.empty(1000, 64))
    return init_module(model, client=LocalClient(), seed=SEED)


@pytest.mark.parametrize("head_first", [False, True])
def test_a_tied_tensor_is_the_untied_model_s_tensor_under_its_first_name(head_first: bool) -> None:
    reference = untied(head_first)
    first = "head" if head_first else "emb"
    expected = sha(getattr(reference, first).weight)
    for tie_to_head in (False, True):  # which side was assigned does not matter
        model = TiedLM(head_first, tie_to_head)
        (entry,) = plan_init(model)
        assert entry.name == f"{first}.weight" and entry.owner == ("Linear" if head_first else "Embedding")
        assert entry.tied == (f"{'emb' if head_first else 'head'}.weight",)
        init_module(model, client=LocalClient(), seed=SEED)
        assert model.head.weight is model.emb.weight
        assert sha(model.emb.weight) == expected


@pytest.mark.parametrize("weight_norm", [False, True])
def test_a_module_registered_twice_is_filled_once_under_its_first_path(weight_norm: bool) -> None:
    shared = nn.Linear(8, 8)
    if weight_norm:
        parametrizations.weight_norm(shared)
    model = nn.Sequential(OrderedDict(a=shared, mid=nn.Linear(8, 8), b=shared))
    plan = {entry.name: entry.tied for entry in plan_init(model)}
    assert plan == {"a.weight": ("b.weight",), "a.bias": ("b.bias",), "mid.weight": (), "mid.bias": ()}
    init_module(model, client=LocalClient(), seed=SEED)
    reference = init_module(nn.Sequential(OrderedDict(a=nn.Linear(8, 8))), client=LocalClient(), seed=SEED)
    assert sha(model.b.weight) == sha(reference.a.weight)


@pytest.mark.parametrize("proj_first", [True, False])
def test_a_tie_into_a_transformer_takes_the_first_name_s_rule(proj_first: bool) -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if proj_first:
                self.proj = nn.Linear(32, 32)
            self.core = nn.Transformer(32, 4, 1, 1, 64, batch_first=True)
            if not proj_first:
                self.proj = nn.Linear(32, 32)
            self.proj.weight = self.core.encoder.layers[0].linear1.weight

    inside = "core.encoder.layers.0.linear1.weight"
    plan = {entry.name: entry for entry in plan_init(Model())}
    if proj_first:  # the Linear outside owns it: its own rule, not the Transformer's xavier_uniform
        assert inside not in plan and plan["proj.weight"].tied == (inside,)
        assert plan["proj.weight"].scheme == "torch_default"
    else:
        assert "proj.weight" not in plan and plan[inside].tied == ("proj.weight",)
        assert plan[inside].scheme == "xavier_uniform"
