"""Real models through the client: a tiny BERT from transformers (local BertConfig, no hub) and a ResNet
stem built in torch (timm cannot be imported here: it needs torchvision, which does not import beside the
pinned CPU torch). Upload, derive, load, run; copied tensors byte-identical, derived ones bitwise across
server processes, one of them with numpy's SIMD dispatch restricted."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from initserve_client import Client, init_module

from tests.live_server import LiveServer, start_server, stop_server

# Real models / a real S3 server: tens of seconds, so in the slow suite (CI runs both).
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SEED = 1234
LAYERS, K = 4, 2


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def servers(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    """Two ordinary server processes and one with numpy's SIMD dispatch restricted to the baseline,
    sharing one store directory."""
    from numpy._core._multiarray_umath import __cpu_dispatch__  # type: ignore[attr-defined]

    logs = tmp_path_factory.mktemp("logs")
    env = {"INITSERVE_STORE": str(store)}
    started = [start_server(logs, env), start_server(logs, env)]
    try:
        restricted = dict(env, NPY_DISABLE_CPU_FEATURES=" ".join(__cpu_dispatch__))
        started.append(start_server(logs, restricted))
        yield started
    finally:
        for server in started:
            stop_server(server)


def _bert(vocab: int, labels: int) -> Any:
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=labels,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def bert_checkpoint(servers: list[LiveServer], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    model = _bert(99, 2)
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder, safe_serialization=True)
    with Client(base_url=servers[0].url, cache=False) as client:
        manifest = client.upload_checkpoint(folder / "model.safetensors")
    return manifest["digest"], {k: v.clone() for k, v in model.state_dict().items()}


def reinit_rules(layers: int, k: int) -> list[dict[str, Any]]:
    """docs/pretrained.md's recipe: the pooler and the last k blocks with BERT's own init, a new head."""
    rules: list[dict[str, Any]] = [
        {"match": "bert.embeddings.word_embeddings.weight", "action": "mean_rows", "noise": 1e-3},
    ]
    for block in [f"bert.encoder.layer.{i}." for i in range(layers - k, layers)] + ["bert.pooler."]:
        rules += [
            {"match": block + "*LayerNorm.weight", "action": "reinit", "scheme": "ones"},
            {"match": block + "*LayerNorm.bias", "action": "reinit", "scheme": "zeros"},
            {"match": block + "*.weight", "action": "reinit", "scheme": "normal", "params": {"std": 0.02}},
            {"match": block + "*.bias", "action": "reinit", "scheme": "zeros"},
        ]
    return [
        *rules,
        {"match": "classifier.weight", "action": "reinit", "scheme": "normal", "params": {"std": 0.02}},
        {"match": "classifier.bias", "action": "reinit", "scheme": "zeros"},
    ]


def _bytes(tensor: Any) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_bert_new_labels_vocab_and_top_layers(
    servers: list[LiveServer], bert_checkpoint: tuple[str, dict[str, Any]]
) -> None:
    digest, source = bert_checkpoint
    model = _bert(199, 5)
    with Client(base_url=servers[0].url, cache=False) as client:
        init_module(model, client=client, seed=SEED, from_checkpoint=digest, rules=reinit_rules(LAYERS, K))
        fresh = client.tensor([5, 32], "normal", params={"std": 0.02}, seed=SEED, name="classifier.weight")
    state = model.state_dict()
    reinitialised = {name for name in state if name.startswith(("bert.pooler.", "classifier."))} | {
        name for name in state for i in range(LAYERS - K, LAYERS) if name.startswith(f"bert.encoder.layer.{i}.")
    }
    copied = set(state) - reinitialised - {"bert.embeddings.word_embeddings.weight"}
    assert copied and all(_bytes(state[name]) == _bytes(source[name]) for name in copied)
    words = state["bert.embeddings.word_embeddings.weight"]
    assert _bytes(words[:99]) == _bytes(source["bert.embeddings.word_embeddings.weight"])
    mean = source["bert.embeddings.word_embeddings.weight"].double().mean(0)
    assert torch.allclose(words[99:].double().mean(0), mean, atol=1e-3)
    assert state["classifier.weight"].numpy().tobytes() == fresh.tobytes()
    assert all(float(state[n].abs().sum()) == 0 for n in reinitialised if n.endswith(".bias"))
    top = "bert.encoder.layer.3.attention.self.query.weight"
    assert _bytes(state[top]) != _bytes(source[top]) and abs(float(state[top].std()) - 0.02) < 0.004
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 150, 198, 7]])).logits
    assert logits.shape == (1, 5) and bool(torch.isfinite(logits).all())


def test_derived_bert_is_bitwise_across_servers_and_simd_levels(
    servers: list[LiveServer], bert_checkpoint: tuple[str, dict[str, Any]]
) -> None:
    digest, _ = bert_checkpoint
    model = _bert(199, 5)
    tensors = {name: {"shape": list(t.shape), "dtype": "float32"} for name, t in model.state_dict().items()}
    files = []
    for server in servers:
        with Client(base_url=server.url, cache=False) as client:
            files.append(bytes(client.derive_file(digest, tensors, reinit_rules(LAYERS, K), seed=SEED).buffer))
    assert files[0] == files[1] == files[2]
    # The stateless URL of a real model's derived file fits the default token limit (deflated token).
    import httpx

    body = {"source": digest, "target": {"seed": SEED, "tensors": tensors}, "rules": reinit_rules(LAYERS, K)}
    posted = httpx.post(servers[1].url + "/v1/derive", json=body, timeout=60)
    location = posted.headers["content-location"]
    assert posted.content == files[0]
    assert httpx.get(servers[2].url + location, timeout=60).content == files[0]


# --- a ResNet stem ---------------------------------------------------------------------------------------
class Stem(torch.nn.Module):  # type: ignore[misc]
    """The stem and head of timm's resnet: conv1 7×7/2, bn1, relu, maxpool, one block, pooled fc."""

    def __init__(self, in_chans: int, classes: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_chans, 16, 7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x: Any) -> Any:
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _adapt_input_conv(in_chans: int, weight: Any) -> Any:
    """timm.models._manipulate.adapt_input_conv (base_chans=3), re-expressed in torch."""
    if in_chans == 3:
        return weight
    weight = weight.float()
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    weight = weight.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans, :, :]
    weight *= 3 / float(in_chans)
    return weight


@pytest.mark.parametrize("in_chans", [1, 13])
def test_resnet_stem_for_other_input_channels(servers: list[LiveServer], in_chans: int) -> None:
    torch.manual_seed(1)
    pretrained = Stem(3, 10)
    pretrained.train()(torch.randn(4, 3, 32, 32))  # running stats that differ from their defaults
    source = {k: v.clone() for k, v in pretrained.state_dict().items()}
    with Client(base_url=servers[0].url, cache=False) as client:
        digest = client.upload_checkpoint(pretrained.state_dict())["digest"]
        model = Stem(in_chans, 4)
        rules = [
            {"match": "conv1.weight", "action": "channel_adapt"},
            {"match": "fc.weight", "action": "reinit", "scheme": "kaiming_uniform", "params": {"a": math.sqrt(5)}},
            {"match": "fc.bias", "action": "reinit", "scheme": "uniform", "params": {"low": -0.25, "high": 0.25}},
        ]
        init_module(model, client=client, seed=SEED, from_checkpoint=digest, rules=rules)
    state = model.state_dict()
    assert _bytes(state["conv1.weight"]) == _bytes(_adapt_input_conv(in_chans, source["conv1.weight"]))
    for name in ("bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "conv2.weight", "bn2.weight"):
        assert _bytes(state[name]) == _bytes(source[name]), name
    with torch.no_grad():
        out = model.eval()(torch.randn(2, in_chans, 32, 32))
    assert out.shape == (2, 4) and bool(torch.isfinite(out).all())


def test_timm_itself_when_it_imports() -> None:
    """When timm imports (with a torchvision that matches torch), its own function must agree too."""
    try:
        from timm.models._manipulate import adapt_input_conv
    except Exception:
        pytest.skip("timm does not import here (it needs torchvision, which does not match the pinned torch)")
    weight = torch.randn(8, 3, 7, 7)
    for chans in (1, 2, 4, 13):
        assert _bytes(adapt_input_conv(chans, weight)) == _bytes(_adapt_input_conv(chans, weight))


def test_numpy_reference_of_the_stem_adaptation_is_exact() -> None:
    """Guard for the reference itself: the float32 sum is left to right (((w0 + w1) + w2))."""
    weight = torch.randn(8, 3, 7, 7) * torch.logspace(-4, 4, 8 * 3 * 49).reshape(8, 3, 7, 7)
    expected = (weight[:, 0:1].numpy() + weight[:, 1:2].numpy()) + weight[:, 2:3].numpy()
    assert _adapt_input_conv(1, weight).numpy().tobytes() == np.asarray(expected, dtype=np.float32).tobytes()
