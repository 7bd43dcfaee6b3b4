"""Recipe presets (issue 16): each policy's rules equal its paper's formula, µP equals the ``mup``
package's own init on the same model, and a recipe fills a model through a real server."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
import torch
from initserve_client import (
    Client,
    DeepNetPolicy,
    FixupPolicy,
    InitRule,
    InitserveError,
    MuPPolicy,
    ReZeroPolicy,
    TFixupPolicy,
    deepnet_constants,
    gpt2_policy,
    init_module,
    torchtitan_policy,
)
from initserve_client._policies import plan_module
from torch import nn

from tests.live_server import LiveServer as Server


def rules(module: nn.Module, policy: Any) -> dict[str, InitRule]:
    return {name: rule for name, (_, rule) in plan_module(module, policy).items()}


def std_of(rule: InitRule) -> float:
    """The standard deviation a rule draws with (normal: std; symmetric uniform: bound/√3)."""
    params = dict(rule.params or {})
    if rule.scheme in ("normal", "truncated_normal"):
        return float(params["std"])
    assert rule.scheme == "uniform" and params["low"] == -params["high"], rule
    return float(params["high"]) / math.sqrt(3.0)


# --- GPT-2 / torchtitan ---------------------------------------------------------------------------------
class GPT2Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d)
        self.mlp.c_proj = nn.Linear(4 * d, d)


class GPT2(nn.Module):
    def __init__(self, layers: int = 3, d: int = 16) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, d)
        self.h = nn.ModuleList(GPT2Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)


def test_gpt2_scales_residual_projections_by_one_over_sqrt_2n() -> None:
    got = rules(GPT2(layers=3), gpt2_policy(3))
    for name, rule in got.items():
        if name.endswith("c_proj.weight"):
            assert rule == InitRule("normal", {"mean": 0.0, "std": 0.02 / math.sqrt(6.0)})
        elif name.endswith("weight") and not name.startswith(("ln", "h.0.ln", "h.1.ln", "h.2.ln")):
            assert rule == InitRule("normal", {"mean": 0.0, "std": 0.02}), name
    assert got["h.1.attn.c_attn.bias"] == InitRule("zeros")
    assert got["ln_f.weight"] == InitRule("ones") and got["h.0.ln_1.bias"] == InitRule("zeros")


class LlamaBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attention = nn.Module()
        for proj in ("wq", "wk", "wv", "wo"):
            setattr(self.attention, proj, nn.Linear(d, d, bias=False))
        self.feed_forward = nn.Module()
        self.feed_forward.w1 = nn.Linear(d, 2 * d, bias=False)
        self.feed_forward.w2 = nn.Linear(2 * d, d, bias=False)
        self.feed_forward.w3 = nn.Linear(d, 2 * d, bias=False)


def test_torchtitan_depth_init_uses_the_layer_index() -> None:
    model = nn.Module()
    model.layers = nn.ModuleList(LlamaBlock(8) for _ in range(4))
    got = rules(model, torchtitan_policy(4))
    for layer in range(4):
        expected = 0.02 / math.sqrt(2.0 * (layer + 1))
        for residual in ("attention.wo", "feed_forward.w2", "feed_forward.w3"):
            rule = got[f"layers.{layer}.{residual}.weight"]
            assert rule == InitRule("truncated_normal", {"mean": 0.0, "std": expected, "low": -2.0, "high": 2.0})
        assert std_of(got[f"layers.{layer}.attention.wq.weight"]) == 0.02
    flat = rules(model, torchtitan_policy(4, depth_init=False))
    assert std_of(flat["layers.3.attention.wo.weight"]) == 0.02 / math.sqrt(8.0)


def test_per_layer_scaling_without_a_block_index_says_so() -> None:
    model = nn.Module()
    model.attention = nn.Module()
    model.attention.wo = nn.Linear(4, 4)
    with pytest.raises(InitserveError, match="block index"):
        rules(model, torchtitan_policy(2))


# --- µP against the mup package -----------------------------------------------------------------------------
def mlp(width: int, readout: type[nn.Linear] = nn.Linear) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            inp=nn.Linear(10, width),
            act=nn.ReLU(),
            hidden=nn.Linear(width, width),
            act2=nn.ReLU(),
            conv_like=nn.Linear(width, 2 * width),
            out=readout(2 * width, 5),
        )
    )


MUP_CASES = [
    ("normal", {"std": 0.02}),
    ("uniform", {"a": -0.1, "b": 0.1}),
    ("xavier_normal", {"gain": 1.3}),
    ("xavier_uniform", {}),
    ("kaiming_normal", {"nonlinearity": "relu"}),
    ("kaiming_uniform", {"a": 0.1, "mode": "fan_out"}),
]


@pytest.mark.parametrize(("init", "params"), MUP_CASES)
def test_mup_policy_draws_with_the_scale_of_mup_init(init: str, params: dict[str, Any]) -> None:
    mup = pytest.importorskip("mup")
    base, model = mlp(8, mup.MuReadout), mlp(64, mup.MuReadout)
    mup.set_base_shapes(model, base, rescale_params=False)
    got = rules(model, MuPPolicy(base, init, **params))
    sampler = getattr(mup.init, f"{init}_")
    for name, param in model.named_parameters():
        if param.dim() < 2:
            continue
        # mup draws with torch's RNG; the same seed with unit scale gives its effective scale exactly.
        torch.manual_seed(7)
        sampler(param, **params)
        torch.manual_seed(7)
        unit = torch.empty_like(param)
        if init.endswith("normal"):
            unit.normal_(0.0, 1.0)
            mup_std = float((param.detach().double() / unit.double()).median())
        else:
            unit.uniform_(-1.0, 1.0)
            mup_std = float((param.detach().double() / unit.double()).median()) / math.sqrt(3.0)
        assert std_of(got[name]) == pytest.approx(mup_std, rel=1e-5), name
    # The infinite-by-infinite hidden layer really is rescaled (the test would pass vacuously otherwise).
    assert std_of(got["hidden.weight"]) != std_of(rules(base, MuPPolicy(base, init, **params))["hidden.weight"])


def test_mup_policy_at_base_shapes_is_the_torch_init() -> None:
    base = mlp(8)
    got = rules(base, MuPPolicy(base, "kaiming_normal", nonlinearity="relu"))
    assert std_of(got["hidden.weight"]) == pytest.approx(math.sqrt(2.0) / math.sqrt(8.0))


# --- DeepNet -----------------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, proj, nn.Linear(d, d))
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.final_layer_norm = nn.LayerNorm(d)


def test_deepnet_constants_are_table_1() -> None:
    assert deepnet_constants(encoder_layers=6) == {"encoder": {"alpha": 12**0.25, "beta": 48**-0.25}}
    assert deepnet_constants(decoder_layers=6)["decoder"]["beta"] == 48**-0.25
    both = deepnet_constants(6, 6)
    assert both["encoder"]["alpha"] == pytest.approx(0.81 * (6**5) ** (1 / 16))
    assert both["encoder"]["beta"] == pytest.approx(0.87 * (6**5) ** (-1 / 16))
    assert both["decoder"] == {"alpha": 18**0.25, "beta": 72**-0.25}


def test_deepnet_policy_uses_beta_on_ffn_value_and_output_projections() -> None:
    model = nn.Module()
    model.encoder = nn.Module()
    model.encoder.layers = nn.ModuleList(EncoderLayer(8) for _ in range(2))
    model.decoder = nn.Module()
    model.decoder.layers = nn.ModuleList(EncoderLayer(8) for _ in range(3))
    got = rules(model, DeepNetPolicy(2, 3))
    beta = deepnet_constants(2, 3)
    for side in ("encoder", "decoder"):
        for name in ("self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2", "self_attn.q_proj"):
            param = dict(model.named_parameters())[f"{side}.layers.0.{name}.weight"]
            gain = 1.0 if name == "self_attn.q_proj" else beta[side]["beta"]
            expected = gain * math.sqrt(2.0 / (param.shape[0] + param.shape[1]))
            assert got[f"{side}.layers.0.{name}.weight"] == InitRule("normal", {"mean": 0.0, "std": expected})
    assert got["encoder.layers.1.fc1.bias"] == InitRule("zeros")


# --- T-Fixup ----------------------------------------------------------------------------------------------
def test_t_fixup_scales_follow_the_paper() -> None:
    n, m, d = 3, 4, 8
    model = nn.Module()
    model.embed = nn.Embedding(20, d)
    model.encoder = nn.Module()
    model.encoder.layers = nn.ModuleList(EncoderLayer(d) for _ in range(n))
    model.decoder = nn.Module()
    model.decoder.embed = nn.Embedding(20, d)
    model.decoder.layers = nn.ModuleList(EncoderLayer(d) for _ in range(m))
    got = rules(model, TFixupPolicy(n, m))
    xavier = math.sqrt(2.0 / (d + d))  # a d × d projection
    assert std_of(got["encoder.layers.0.self_attn.v_proj.weight"]) == pytest.approx(0.67 * n**-0.25 * xavier)
    assert std_of(got["decoder.layers.2.self_attn.out_proj.weight"]) == pytest.approx((9 * m) ** -0.25 * xavier)
    assert std_of(got["encoder.layers.0.self_attn.q_proj.weight"]) == pytest.approx(xavier)
    for embedding in ("embed.weight", "decoder.embed.weight"):
        assert got[embedding] == InitRule("normal", {"mean": 0.0, "std": d**-0.5 * (9 * m) ** -0.25})


# --- Fixup -------------------------------------------------------------------------------------------------
class FixupBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bias1a = nn.Parameter(torch.full((1,), 9.0))
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bias1b = nn.Parameter(torch.full((1,), 9.0))
        self.bias2a = nn.Parameter(torch.full((1,), 9.0))
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.full((1,), 9.0))
        self.bias2b = nn.Parameter(torch.full((1,), 9.0))


def fixup_resnet(blocks: int) -> nn.Module:
    model = nn.Module()
    model.conv = nn.Conv2d(3, 4, 3, bias=False)
    model.layers = nn.Sequential(*(FixupBlock(4) for _ in range(blocks)))
    model.fc = nn.Linear(4, 10)
    return model


def test_fixup_zeroes_last_layers_and_scales_the_others() -> None:
    got = rules(fixup_resnet(5), FixupPolicy(5))
    expected_std = math.sqrt(2.0 / (4 * 9)) * 5**-0.5  # m = 2: L^(−1/(2m−2)) = L^(−1/2)
    assert got["layers.0.conv1.weight"] == InitRule("normal", {"mean": 0.0, "std": expected_std})
    for zero in ("layers.3.conv2.weight", "fc.weight", "fc.bias", "layers.1.bias1a", "layers.4.bias2b"):
        assert got[zero] == InitRule("zeros"), zero
    assert got["layers.2.scale"] == InitRule("ones")
    assert got["conv.weight"] == InitRule("torch_default")  # the stem keeps torch's init
    three = rules(fixup_resnet(5), FixupPolicy(5, branch_layers=3))["layers.0.conv1.weight"]
    assert std_of(three) == pytest.approx(math.sqrt(2.0 / 36) * 5**-0.25)


# --- SkipInit / ReZero ------------------------------------------------------------------------------------------
class ReZeroBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.resweight = nn.Parameter(torch.ones(()))


def test_rezero_starts_every_residual_scalar_at_zero() -> None:
    model = nn.Sequential(ReZeroBlock(4), ReZeroBlock(4))
    got = rules(model, ReZeroPolicy())
    assert got["0.resweight"] == InitRule("zeros") and got["1.resweight"] == InitRule("zeros")
    assert got["0.fc.weight"] == InitRule("torch_default")


# --- through a real server ------------------------------------------------------------------------------------
def test_recipes_fill_a_model_through_the_server(server: Server) -> None:
    model = GPT2(layers=2, d=64)
    with Client(base_url=server.url) as client:
        init_module(model, client=client, seed=5, policy=gpt2_policy(2))
        blocks = nn.Sequential(ReZeroBlock(8), ReZeroBlock(8))
        init_module(blocks, client=client, seed=5, policy=ReZeroPolicy())
    proj = model.h[0].mlp.c_proj.weight.detach().double()  # 64 × 256: 16,384 draws
    expected = 0.02 / 2.0
    assert abs(float(proj.std()) - expected) < 6 * expected / math.sqrt(2 * proj.numel())
    assert float(model.h[1].attn.c_attn.bias.detach().abs().max()) == 0.0
    assert float(blocks[0].resweight.detach()) == 0.0
