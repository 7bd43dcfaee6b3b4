"""``upload_checkpoint``, ``checkpoint``, ``checkpoint_tensor`` and ``derive*`` of ``Client`` and
``AsyncClient`` (one flow, two drivers) against a real server, with a fault-injecting proxy where a
retry or a corrupted answer is the point."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from initserve_client import APIError, AsyncClient, Client, InitserveError, IntegrityError, RetryPolicy
from initserve_client._checkpoints import UPLOAD_CHUNK, safetensors_bytes

from tests.live_server import LiveServer as Server

from .fault_proxy import FaultProxy

FAST = RetryPolicy(attempts=5, base=0.05, max_backoff=0.2)
MODES = ["sync", "async"]
# More than one upload chunk, so a retried file upload must read the file again from its start.
STATE = {
    "big": (np.arange(300_000, dtype=np.float32) / 7).reshape(600, 500),
    "bias": np.linspace(-3, 3, 5).astype(np.float16),
}
assert STATE["big"].nbytes > UPLOAD_CHUNK


def call(mode: str, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``Client(url).method(*args, **kwargs)``, or the same awaited on an ``AsyncClient``."""
    if mode == "sync":
        with Client(base_url=url, cache=False, retry_policy=FAST) as client:
            return getattr(client, method)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncClient(base_url=url, cache=False, retry_policy=FAST) as client:
            return await getattr(client, method)(*args, **kwargs)

    return asyncio.run(run())


def stored(server: Server) -> dict[str, Any]:
    """The manifest of STATE uploaded straight to the server (no client code involved)."""
    response = httpx.post(server.url + "/v1/checkpoints", content=safetensors_bytes(STATE), timeout=60)
    assert response.status_code in (200, 201), response.text
    manifest: dict[str, Any] = response.json()
    return manifest


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("from_file", [True, False])
def test_an_upload_is_retried_whole_after_a_dropped_connection_and_a_503(
    server: Server, proxy_factory: Callable[..., FaultProxy], tmp_path: Path, mode: str, from_file: bool
) -> None:
    expected = stored(server)
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(STATE))
    proxy = proxy_factory(drop_first=1, reject_first=1, retry_after="0")
    manifest = call(mode, proxy.url, "upload_checkpoint", path if from_file else STATE)
    assert proxy.connections == 3 and proxy.rejected == 1
    # The third attempt carried every byte: the server found the same tensors, digest by digest.
    assert manifest["digest"] == expected["digest"]
    assert manifest["tensors"] == expected["tensors"]


@pytest.mark.parametrize("mode", MODES)
def test_manifest_and_tensors_read_back_exactly(server: Server, mode: str) -> None:
    expected = stored(server)
    digest = expected["digest"]
    assert call(mode, server.url, "checkpoint", digest)["tensors"] == expected["tensors"]
    for name, value in STATE.items():
        tensor = call(mode, server.url, "checkpoint_tensor", digest, name)
        assert tensor.dtype == value.dtype and tensor.shape == value.shape
        assert tensor.tobytes() == value.tobytes()


@pytest.mark.parametrize("mode", MODES)
def test_a_tensor_changed_in_transit_is_an_integrity_error(
    server: Server, proxy_factory: Callable[..., FaultProxy], mode: str
) -> None:
    digest = stored(server)["digest"]
    # Byte 40000 of the answer lies in the tensor's data (the HTTP and safetensors headers are < 1 KiB).
    proxy = proxy_factory(flip_at=40_000, flips=1)
    with pytest.raises(IntegrityError, match=f"tensor 'big' of {digest}: digest [0-9a-f]{{64}} != "):
        call(mode, proxy.url, "checkpoint_tensor", digest, "big")
    assert proxy.flipped == 1


@pytest.mark.parametrize("mode", MODES)
def test_derive_and_derive_torch_are_the_derived_file_decoded(server: Server, mode: str) -> None:
    torch = pytest.importorskip("torch")
    digest = stored(server)["digest"]
    tensors = {"big": {"shape": [700, 500]}, "bias": {"shape": [5], "dtype": "float16"}}
    rules = [{"match": "big", "action": "pad", "scheme": "normal", "params": {"std": 0.02}}]
    file = call(mode, server.url, "derive_file", digest, tensors, rules, seed=5)
    arrays = call(mode, server.url, "derive", digest, tensors, rules, seed=5)
    torched = call(mode, server.url, "derive_torch", digest, tensors, rules, seed=5)
    assert set(arrays) == set(torched) == set(tensors)
    for name in tensors:
        assert arrays[name].tobytes() == file.array(name).tobytes()
        assert torched[name].dtype == {"F32": torch.float32, "F16": torch.float16}[file.tensors[name].dtype]
        assert torched[name].numpy().tobytes() == file.array(name).tobytes()
    assert arrays["big"][:600].tobytes() == STATE["big"].tobytes()  # pad copies the source's rows


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_file_or_an_empty_one(server: Server, tmp_path: Path, mode: str) -> None:
    with pytest.raises(FileNotFoundError):
        call(mode, server.url, "upload_checkpoint", tmp_path / "absent.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(APIError) as caught:
        call(mode, server.url, "upload_checkpoint", tmp_path / "empty.safetensors")
    assert caught.value.status == 422


@pytest.mark.parametrize("mode", MODES)
def test_every_dtype_the_server_stores_uploads_and_reads_back(server: Server, mode: str) -> None:
    """The client uploads what the server's checkpoint store holds, float8 included (numpy via ml_dtypes)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ramp = np.linspace(-2, 2, 6)
    state = {
        "e4m3": ramp.astype(ml_dtypes.float8_e4m3fn),
        "e5m2": ramp.astype(ml_dtypes.float8_e5m2),
        "bf16": ramp.astype(ml_dtypes.bfloat16),
        "u16": np.arange(4, dtype=np.uint16),
        "flags": np.array([True, False, True]),
    }
    manifest = call(mode, server.url, "upload_checkpoint", state)
    codes = {name: entry["dtype"] for name, entry in manifest["tensors"].items()}
    assert codes == {"e4m3": "F8_E4M3", "e5m2": "F8_E5M2", "bf16": "BF16", "u16": "U16", "flags": "BOOL"}
    for name, value in state.items():
        back = call(mode, server.url, "checkpoint_tensor", manifest["digest"], name)
        assert back.dtype == value.dtype and back.tobytes() == value.tobytes(), name
    # The same bits as torch tensors (bfloat16 and float8, which torch cannot hand to numpy, included).
    torch = pytest.importorskip("torch")
    as_torch = {
        "e4m3": torch.from_numpy(state["e4m3"].view(np.uint8)).view(torch.float8_e4m3fn),
        "e5m2": torch.from_numpy(state["e5m2"].view(np.uint8)).view(torch.float8_e5m2),
        "bf16": torch.from_numpy(state["bf16"].view(np.int16)).view(torch.bfloat16),
        "u16": torch.from_numpy(state["u16"]),
        "flags": torch.from_numpy(state["flags"]),
    }
    assert call(mode, server.url, "upload_checkpoint", as_torch)["digest"] == manifest["digest"]


@pytest.mark.parametrize("mode", MODES)
def test_a_dtype_the_server_cannot_store_is_refused_before_any_request(
    proxy_factory: Callable[..., FaultProxy], mode: str
) -> None:
    proxy = proxy_factory()
    with pytest.raises(InitserveError, match=r"cannot upload dtype complex64; supported: float32, .*, float8_e5m2$"):
        call(mode, proxy.url, "upload_checkpoint", {"z": np.zeros(2, np.complex64)})
    torch = pytest.importorskip("torch")
    with pytest.raises(InitserveError, match=r"cannot upload dtype torch.float8_e4m3fnuz; supported: float32, "):
        call(mode, proxy.url, "upload_checkpoint", {"z": torch.zeros(2, dtype=torch.float8_e4m3fnuz)})
    assert proxy.connections == 0


@pytest.mark.parametrize("mode", MODES)
def test_uploading_a_live_models_state_dict_leaves_its_storage_resizable(server: Server, mode: str) -> None:
    """A state_dict shares its model's storage; reading it for the upload must not pin that storage
    (Tensor.numpy() does, for good: FSDP2 and parameter offloading could no longer free it)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(6, 4)
    with torch.no_grad():
        model.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7)
    model.bias.data = model.bias.data.to(torch.bfloat16)
    state = model.state_dict()
    manifest = call(mode, server.url, "upload_checkpoint", state)
    assert manifest["tensors"]["bias"]["dtype"] == "BF16"
    back = call(mode, server.url, "checkpoint_tensor", manifest["digest"], "weight")
    assert back.tobytes() == model.weight.detach().clone().numpy().tobytes()  # a clone: the model's own stays unpinned
    for param in model.parameters():
        nbytes = param.untyped_storage().nbytes()
        param.untyped_storage().resize_(0)
        param.untyped_storage().resize_(nbytes)
