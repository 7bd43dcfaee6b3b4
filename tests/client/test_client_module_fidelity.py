"""init_module gives every torch module type the law torch's own init gives it (issue #12): parents
that re-initialise children (Transformer), tied weights, meta-device modules, and the dry-run plan.

Each module type is compared with torch's own initialisation: a two-sample KS test per random
parameter, exact equality for constant ones, and the support: both samples lie within the bound of
the rule initserve applies, and torch's sample comes close to it (so the rule is not too wide)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from initserve.engine import parse_spec
from initserve_client import Client, InitserveError, init_module, plan_init
from scipy import stats
from torch import nn

from tests.live_server import LiveServer as Server

warnings.filterwarnings("ignore", message="enable_nested_tensor is True")


def _enc(d: int = 64) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(d, 4, 128)


def _dec(d: int = 64) -> nn.TransformerDecoderLayer:
    return nn.TransformerDecoderLayer(d, 4, 128)


MODULES: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(300, 200),
    "Bilinear": lambda: nn.Bilinear(20, 30, 40),
    "Conv1d": lambda: nn.Conv1d(16, 32, 5),
    "Conv2d (groups)": lambda: nn.Conv2d(8, 16, 3, groups=2),
    "Conv3d": lambda: nn.Conv3d(4, 8, 3),
    "ConvTranspose1d": lambda: nn.ConvTranspose1d(16, 8, 4),
    "ConvTranspose2d (groups)": lambda: nn.ConvTranspose2d(32, 8, 3, groups=4),
    "ConvTranspose3d": lambda: nn.ConvTranspose3d(4, 6, 3),
    "Embedding (padding_idx)": lambda: nn.Embedding(500, 32, padding_idx=3),
    "EmbeddingBag (padding_idx)": lambda: nn.EmbeddingBag(500, 32, padding_idx=0),
    "LayerNorm": lambda: nn.LayerNorm(64),
    "GroupNorm": lambda: nn.GroupNorm(4, 64),
    "BatchNorm1d": lambda: nn.BatchNorm1d(64),
    "BatchNorm2d": lambda: nn.BatchNorm2d(32),
    "BatchNorm3d": lambda: nn.BatchNorm3d(8),
    "InstanceNorm2d (affine)": lambda: nn.InstanceNorm2d(16, affine=True),
    "RMSNorm": lambda: nn.RMSNorm(64),
    "RNN (2 layers)": lambda: nn.RNN(32, 64, num_layers=2),
    "LSTM (proj_size)": lambda: nn.LSTM(32, 64, proj_size=16),
    "GRU (bidirectional)": lambda: nn.GRU(32, 64, bidirectional=True),
    "RNNCell": lambda: nn.RNNCell(32, 64),
    "LSTMCell": lambda: nn.LSTMCell(32, 64),
    "GRUCell": lambda: nn.GRUCell(32, 64),
    "MultiheadAttention": lambda: nn.MultiheadAttention(64, 4),
    "MultiheadAttention (kdim, vdim, bias_kv)": lambda: nn.MultiheadAttention(
        64, 4, kdim=32, vdim=48, add_bias_kv=True
    ),
    "MultiheadAttention (no bias)": lambda: nn.MultiheadAttention(64, 4, bias=False),
    "TransformerEncoderLayer": _enc,
    "TransformerDecoderLayer": _dec,
    "TransformerEncoder": lambda: nn.TransformerEncoder(_enc(), 2, enable_nested_tensor=False),
    "TransformerDecoder": lambda: nn.TransformerDecoder(_dec(), 2),
    "Transformer": lambda: nn.Transformer(64, 4, 1, 1, 128),
    "PReLU": lambda: nn.PReLU(8, init=0.1),
    "AdaptiveLogSoftmaxWithLoss": lambda: nn.AdaptiveLogSoftmaxWithLoss(64, 1000, cutoffs=[100, 500]),
}


def _bound(entry: Any) -> float | None:
    """The upper end of the support of the law initserve applies (None: unbounded)."""
    spec = parse_spec({"shape": list(entry.shape), "scheme": entry.scheme, "params": entry.params, "layout": "torch"})
    return spec.built.sampler.moments().high


@pytest.mark.parametrize("kind", list(MODULES))
def test_each_module_type_matches_torchs_own_init(server: Server, kind: str) -> None:
    factory = MODULES[kind]
    torch.manual_seed(0)
    reference = {name: p.detach().double().clone() for name, p in factory().named_parameters()}
    module = factory()
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(float("nan"))
    with Client(base_url=server.url) as client:
        init_module(module, client=client, seed=5)
    plan = {entry.name: entry for entry in plan_init(module)}
    for name, param in module.named_parameters():
        ours, theirs, entry = param.detach().double(), reference[name], plan[name]
        assert not torch.isnan(ours).any(), f"{kind}: {name} not filled"
        if entry.zero_row is not None:
            assert torch.equal(ours[entry.zero_row], torch.zeros_like(ours[entry.zero_row]))
            keep = [row for row in range(ours.shape[0]) if row != entry.zero_row]
            ours, theirs = ours[keep], theirs[keep]
        if entry.scheme in ("zeros", "ones", "constant"):
            assert torch.equal(ours, theirs), f"{kind}: {name} must equal torch's {entry.scheme}"
            continue
        a, b = ours.flatten().numpy(), theirs.flatten().numpy()
        p_value = stats.ks_2samp(a, b).pvalue
        assert p_value > 1e-4, f"{kind}: {name} ({entry.scheme} {entry.params}) KS p = {p_value:.2g}"
        bound = _bound(entry)
        if bound is not None:
            assert abs(a).max() <= bound * (1 + 1e-6), f"{kind}: {name} beyond its bound {bound}"
            assert abs(b).max() <= bound * (1 + 1e-6), f"{kind}: torch's {name} beyond the rule's bound {bound}"
            if a.size >= 500:
                assert abs(b).max() >= 0.9 * bound, f"{kind}: the rule's bound {bound} is wider than torch's"


def test_transformer_reinitialises_its_children_with_xavier(server: Server) -> None:
    # The example: linear1 of a d_model 16, feed-forward 64 layer has xavier bound √(6/80) = 0.274,
    # not the Linear default 1/√16 = 0.25.
    model: Any = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    with Client(base_url=server.url) as client:
        init_module(model, client=client, seed=0)
    plan = {entry.name: entry for entry in plan_init(model)}
    weight = model.encoder.layers[0].linear1.weight.detach()
    assert plan["encoder.layers.0.linear1.weight"].scheme == "xavier_uniform"
    assert plan["encoder.layers.0.linear1.weight"].source == "Transformer._reset_parameters"
    assert 0.25 < float(weight.abs().max()) <= math.sqrt(6 / 80)
    for name, entry in plan.items():
        if len(entry.shape) > 1:
            assert entry.scheme == "xavier_uniform", name
    assert plan["encoder.layers.0.linear1.bias"].scheme == "uniform"  # 1-D: Linear's own bias rule
    assert plan["encoder.layers.0.self_attn.out_proj.bias"].scheme == "zeros"


class TiedLM(nn.Module):
    """An output head tied to the token embedding, declared in either order."""

    def __init__(self, head_first: bool) -> None:
        super().__init__()
        if head_first:
            self.head = nn.Linear(64, 1000, bias=False)
            self.emb = nn.Embedding(1000, 64)
        else:
            self.emb = nn.Embedding(1000, 64)
            self.head = nn.Linear(64, 1000, bias=False)
        self.head.weight = self.emb.weight


@pytest.mark.parametrize(("head_first", "expected_std"), [(True, 1 / math.sqrt(3 * 64)), (False, 1.0)])
def test_tied_weights_take_the_rule_of_their_first_name(server: Server, head_first: bool, expected_std: float) -> None:
    model: Any = TiedLM(head_first)
    with Client(base_url=server.url) as client:
        init_module(model, client=client, seed=0)
    assert model.head.weight is model.emb.weight
    shared = model.emb.weight.detach().double()
    assert float(shared.std()) == pytest.approx(expected_std, rel=0.03)
    # What torch holds after construction when the first-declared module's tensor is the shared one.
    reference: Any = TiedLM(head_first)
    torch.manual_seed(0)
    (reference.head if head_first else reference.emb).reset_parameters()
    assert (
        stats.ks_2samp(shared.flatten().numpy(), reference.emb.weight.detach().double().flatten().numpy()).pvalue > 1e-4
    )
    (entry,) = plan_init(model)
    assert entry.tied and entry.scheme == ("torch_default" if head_first else "normal")


def test_meta_device_module_is_refused_without_a_device(server: Server) -> None:
    model = nn.Linear(16, 8, device="meta")
    # The example: it used to return as if done, weight still on the meta device.
    with Client(base_url=server.url) as client, pytest.raises(InitserveError, match="device='cpu'"):
        init_module(model, client=client, seed=0)
    assert model.weight.is_meta


def test_meta_device_module_is_materialised_and_filled(server: Server) -> None:
    with torch.device("meta"):
        meta: Any = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    real: Any = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    with Client(base_url=server.url) as client:
        init_module(meta, client=client, seed=3, device="cpu")
        init_module(real, client=client, seed=3)
    assert not any(p.is_meta for p in meta.parameters())
    for (name, a), (_, b) in zip(meta.state_dict().items(), real.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # parameters bit-identical, running stats reset like a fresh module


def test_meta_device_materialisation_never_leaves_memory_unset_silently(server: Server) -> None:
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("inv_freq", torch.arange(4.0))

    with Client(base_url=server.url) as client:
        with torch.device("meta"):
            buffered = WithBuffer()
        with pytest.warns(UserWarning, match="inv_freq"):  # a buffer only the model's code can fill: named
            init_module(buffered, client=client, seed=0, device="cpu")
        with torch.device("meta"):
            partial: Any = nn.Sequential(nn.Linear(4, 4))
        with pytest.raises(InitserveError, match=r"leaves '0\.bias' untouched"):
            init_module(partial, client=client, seed=0, device="cpu", policy={"*.bias": None})
        assert partial[0].weight.is_meta  # refused before anything was allocated


def test_plan_with_a_client_shows_the_fans(server: Server) -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(64, 10))
    with Client(base_url=server.url) as client:
        plan = {entry.name: entry for entry in plan_init(model, client=client)}
    assert (plan["0.weight"].fan_in, plan["0.weight"].fan_out) == (27, 144)
    assert (plan["2.weight"].fan_in, plan["2.weight"].fan_out) == (64, 10)
    assert plan["2.bias"].params == {"low": -0.125, "high": 0.125} and plan["2.bias"].fan_in is None
    offline = {entry.name: entry for entry in plan_init(model)}
    assert offline["0.weight"].fan_in is None  # no server asked: the fans are the server's to compute
    assert plan["0.weight"].to_json()["source"].startswith("Conv2d.reset_parameters")
