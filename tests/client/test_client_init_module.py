"""init_module against a real server: every parameter filled, torch's own default distributions,
reproducible across processes, stable under inserting a layer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import subprocess
import sys
import textwrap
from collections import OrderedDict
from typing import Any

import pytest
import torch
from initserve_client import Client, InitserveError, init_module
from torch import nn

from tests.live_server import LiveServer as Server


def small_cnn() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1),
            bn1=nn.BatchNorm2d(16),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(16, 32, 3, groups=2),
            up=nn.ConvTranspose2d(32, 8, 2, stride=2),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(8, 10),
        )
    )


class Block(nn.Module):
    """A small transformer block with token embeddings and a GRU head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 64, padding_idx=0)
        self.layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
        self.norm = nn.LayerNorm(64)
        self.rnn = nn.GRU(64, 32)
        self.head = nn.Linear(32, 100)


def torch_reference(factory: type[nn.Module] | object, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    module = factory()  # type: ignore[operator]
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def fill_nan(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(float("nan"))


@pytest.mark.parametrize("factory", [small_cnn, Block])
def test_every_parameter_filled_with_torch_default_distribution(server: Server, factory: object) -> None:
    module = factory()  # type: ignore[operator]
    fill_nan(module)
    with Client(base_url=server.url) as client:
        init_module(module, client=client, seed=3)
    reference = torch_reference(factory)
    for name, param in module.named_parameters():
        ours, theirs = param.detach().double(), reference[name].double()
        assert not torch.isnan(ours).any(), f"{name} was not filled"
        n = ours.numel()
        if theirs.std() == 0:  # deterministic in torch (ones/zeros): must be equal exactly
            assert torch.equal(ours, theirs), name
            continue
        sigma = float(theirs.std())
        # two samples of the same law: their std and mean differ by a few sigma/sqrt(n)
        assert abs(float(ours.std()) - sigma) < 5 * sigma / math.sqrt(n) + 1e-6, name
        assert abs(float(ours.mean()) - float(theirs.mean())) < 6 * sigma / math.sqrt(n), name
        # uniform layers: same support (|x| ≤ bound); the reference's max is a lower bound for it
        if "norm" not in name and "emb" not in name:
            assert float(ours.abs().max()) <= float(theirs.abs().max()) * 1.25, name
    if isinstance(module, Block):
        assert torch.equal(module.emb.weight[0], torch.zeros(64)), "padding row is zero as torch leaves it"
        assert torch.equal(module.layer.self_attn.in_proj_bias, torch.zeros(192))
        assert torch.equal(module.layer.self_attn.out_proj.bias, torch.zeros(64))
        bound = 1 / math.sqrt(32)
        assert all(float(p.detach().abs().max()) <= bound for p in module.rnn.parameters())
    else:
        fan_in_up = 8 * 2 * 2  # ConvTranspose2d weight (in=32, out=8, 2, 2): torch's fan_in is size(1)·k·k
        assert float(module.up.bias.detach().abs().max()) <= 1 / math.sqrt(fan_in_up)
        assert float(module.up.weight.detach().abs().max()) <= 1 / math.sqrt(fan_in_up)


def test_buffers_are_left_alone(server: Server) -> None:
    module: Any = small_cnn()
    with torch.no_grad():
        module.bn1.running_mean.fill_(7.0)
    with Client(base_url=server.url) as client:
        init_module(module, client=client, seed=0)
    assert torch.equal(module.bn1.running_mean, torch.full((16,), 7.0))


STATE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    sys.path.insert(0, sys.argv[3])
    from tests.client.test_client_init_module import Block, small_cnn
    from initserve_client import Client, init_module
    out = {}
    with Client(base_url=sys.argv[1], cache=sys.argv[2] == "cache") as client:
        for prefix, factory in (("cnn", small_cnn), ("block", Block)):
            module = init_module(factory(), client=client, seed=11)
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest()
    print(json.dumps(out, sort_keys=True))
    """
)


def state_digests(server: Server, cache: str, root: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", STATE_SCRIPT, server.url, cache, root],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    digests: dict[str, str] = json.loads(result.stdout)
    return digests


def test_two_fresh_processes_give_identical_state_dicts(server: Server, pytestconfig: pytest.Config) -> None:
    root = str(pytestconfig.rootpath)
    first = state_digests(server, "cache", root)
    second = state_digests(server, "nocache", root)
    assert first == second
    assert len(first) > 20
    with Client(base_url=server.url) as client:
        here = init_module(small_cnn(), client=client, seed=11)
    for k, v in here.state_dict().items():
        assert hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() == first[f"cnn.{k}"]


def test_inserting_a_layer_leaves_the_others_bit_identical(server: Server) -> None:
    base: Any = small_cnn()
    layers = OrderedDict(base.named_children())
    items = list(layers.items())
    items.insert(2, ("extra", nn.Conv2d(16, 16, 1)))
    grown = nn.Sequential(OrderedDict(items))
    with Client(base_url=server.url) as client:
        init_module(base, client=client, seed=21)
        init_module(grown, client=client, seed=21)
        other_seed: Any = init_module(small_cnn(), client=client, seed=22)
    grown_params = dict(grown.named_parameters())
    for name, param in base.named_parameters():
        assert torch.equal(param, grown_params[name]), name
    assert not torch.equal(base.conv1.weight, other_seed.conv1.weight)


def test_scheme_and_pattern_policies(server: Server) -> None:
    with Client(base_url=server.url) as client:
        module: Any = init_module(small_cnn(), client=client, seed=1, policy="kaiming_normal")
        stats = client.stats([32, 8, 3, 3], "kaiming_normal", name="weight")
        patterned: Any = init_module(
            Block(),
            client=client,
            seed=1,
            policy={
                "emb.weight": {"scheme": "normal", "params": {"std": 0.02}},
                "head.bias": None,
                "*.weight_hh_l0": "orthogonal",
            },
        )
    assert torch.equal(module.conv1.bias, torch.zeros(16)) and torch.equal(module.fc.bias, torch.zeros(10))
    assert torch.equal(module.bn1.weight, torch.ones(16)), "1-D norm scales keep their torch default"
    assert float(module.conv2.weight.detach().std()) == pytest.approx(stats["expected"]["std"], rel=0.1)
    assert float(patterned.emb.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    w = patterned.rnn.weight_hh_l0.detach().double()  # (3·32, 32): orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(32, dtype=torch.float64), atol=1e-5)


def test_unknown_parameters_need_a_rule(server: Server) -> None:
    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.empty(1, 8))
            self.fc = nn.Linear(8, 8)

    with Client(base_url=server.url) as client:
        with pytest.raises(InitserveError, match="no default rule for parameter 'cls_token'"):
            init_module(WithToken(), client=client, seed=0)
        module: Any = init_module(WithToken(), client=client, seed=0, policy={"cls_token": "zeros"})
    assert torch.equal(module.cls_token, torch.zeros(1, 8))


def test_a_model_beyond_one_bundle_s_limits_is_filled_in_several_requests(server: Server) -> None:
    # 4,200 parameters: more than a bundle may hold (INITSERVE_MAX_BUNDLE_TENSORS, 4,096 by default) —
    # a mixture-of-experts model has tens of thousands. Each tensor's bytes do not depend on the grouping.
    from initserve_client import AsyncClient, LocalClient, ainit_module

    served, local = (nn.Sequential(*[nn.Linear(2, 2) for _ in range(2100)]) for _ in range(2))
    with Client(base_url=server.url, cache=False) as client:
        init_module(served, client=client, seed=3)
    init_module(local, client=LocalClient(), seed=3)
    for (name, a), (_, b) in zip(served.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    async def fill_async() -> nn.Module:
        model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(2100)])
        async with AsyncClient(base_url=server.url, cache=False) as client:
            return await ainit_module(model, client=client, seed=3)

    assert torch.equal(asyncio.run(fill_async())[2099].weight, local[2099].weight)


def test_bundle_requests_stay_within_the_server_s_default_limits() -> None:
    from initserve_client._torch import MAX_REQUEST_BYTES, MAX_REQUEST_TENSORS, request_groups

    # 3 × 4 GiB (more than a bundle's 8 GiB), a sliced shard, 3,000 small tensors: grouped in order.
    specs = {f"big{i}": {"shape": [32768, 32768], "dtype": "float32"} for i in range(3)}
    specs["shard"] = {"shape": [65536, 8192], "slice": [[0, 16384]], "dtype": "bfloat16"}  # 256 MiB
    specs.update({f"b{i}": {"shape": [64], "dtype": "float64"} for i in range(3000)})
    groups = request_groups(specs)
    assert [name for group in groups for name in group] == list(specs)
    itemsize = {"float64": 8, "float32": 4, "bfloat16": 2}

    def nbytes(spec: dict[str, Any]) -> int:
        dims = list(spec["shape"])
        for axis, (begin, end) in enumerate(spec.get("slice", [])):
            dims[axis] = end - begin
        return math.prod(dims) * itemsize[spec["dtype"]]

    assert len(groups) > 3
    for group in groups:
        assert len(group) <= MAX_REQUEST_TENSORS <= 4096
        assert sum(nbytes(spec) for spec in group.values()) <= MAX_REQUEST_BYTES or len(group) == 1
    assert MAX_REQUEST_BYTES <= 8 << 30


@pytest.mark.parametrize(
    ("module", "client", "message"),
    [
        ("not a module", "local", "module must be a torch.nn.Module, got str"),
        (nn.Linear(2, 2).state_dict(), "local", "module must be a torch.nn.Module, got OrderedDict"),
        (nn.Linear(2, 2), "http://127.0.0.1:8000", "client must be a Client or a LocalClient .*, got str"),
    ],
)
def test_init_module_names_a_wrong_argument_type(module: Any, client: Any, message: str) -> None:
    from initserve_client import LocalClient

    with pytest.raises(TypeError, match=message):
        init_module(module, client=LocalClient() if client == "local" else client, seed=0)
