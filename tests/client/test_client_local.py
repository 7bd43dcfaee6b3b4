"""LocalClient: Client's methods, generated in-process, byte-identical to a real server."""

from __future__ import annotations

import asyncio
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import torch
from initserve_client import AsyncClient, Client, InvalidSpecError, LocalClient, TransportError, init_module
from torch import nn

from tests.live_server import LiveServer as Server


def example(scheme: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """A shape and params every scheme accepts, from its catalog entry (rank bounds, required params)."""
    name = scheme["name"]
    # delta_orthogonal: in ≤ out channels in both layouts; simplex_etf: d ≥ K − 1 in both layouts
    # stft: (frame_length, 1, n_freq) / (n_freq, 1, frame_length)
    shapes = {
        "dirac": [4, 2, 3],
        "eye": [5, 7],
        "delta_orthogonal": [10, 6, 10],
        "simplex_etf": [10, 10],
        "stft": [13, 1, 7],
    }
    shape = shapes.get(name, [13, 7])
    params = {"constant": {"value": 0.375}, "sparse": {"sparsity": 0.3}}.get(name, {})
    required = [p["name"] for p in scheme["params"] if p.get("required")]
    assert set(required) <= set(params), f"give {name} an example for {required}"
    return shape, params


@pytest.fixture(scope="module")
def bitwise_schemes() -> list[dict[str, Any]]:
    return [entry for entry in LocalClient().schemes() if entry["reproducibility"] == "bitwise"]


def test_catalog_is_the_servers(server: Server) -> None:
    with Client(base_url=server.url, cache=False) as client:
        assert LocalClient().schemes() == client.schemes()
        assert LocalClient().scheme("kaiming_normal") == client.scheme("kaiming_normal")


KERNELS = ["numpy"] + (["native"] if LocalClient().kernel == "native" else [])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_every_bitwise_scheme_is_byte_identical_to_the_server(
    server: Server, bitwise_schemes: list[dict[str, Any]], dtype: str, kernel: str
) -> None:
    local = LocalClient(kernel=kernel)
    assert local.kernel == kernel
    with Client(base_url=server.url, cache=False) as client:
        for entry in bitwise_schemes:
            shape, params = example(entry)
            for layout, cut in (("torch", None), ("keras", [[2, 9], [1, 5]])):
                if entry["name"] in ("dirac", "eye", "sparse", "stft") and cut is not None:
                    cut = [[1, 3]]
                spec = {"shape": shape, "scheme": entry["name"], "params": params, "seed": 2**64 - 1, "name": "w.0"}
                spec |= {"dtype": dtype, "layout": layout} | ({"slice": cut} if cut else {})
                what = f"{entry['name']} {dtype} {layout} slice={cut}"
                assert bytes(local.safetensors(spec).buffer) == bytes(client.safetensors(spec).buffer), what
                kwargs = {k: v for k, v in spec.items() if k not in ("shape", "scheme")}
                ours = local.torch(shape, entry["name"], **kwargs)
                theirs = client.torch(shape, entry["name"], **kwargs)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, what
                assert ours.view(torch.uint8).numpy().tobytes() == theirs.view(torch.uint8).numpy().tobytes(), what
                assert local.stats(shape, entry["name"], **kwargs) == client.stats(shape, entry["name"], **kwargs), what


def test_numpy_arrays_and_bundles_match(server: Server) -> None:
    tensors = {
        "emb.weight": {"shape": [100, 16], "scheme": "normal", "params": {"std": 0.02}},
        "fc.weight": {"shape": [16, 32], "scheme": "kaiming_uniform", "slice": [[4, 12]]},
        "fc.bias": {"shape": [16], "scheme": "zeros", "dtype": "bfloat16"},
    }
    local = LocalClient()
    with Client(base_url=server.url, cache=False) as client:
        ours, theirs = local.bundle(tensors, seed=11), client.bundle(tensors, seed=11)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype and ours[name].tobytes() == theirs[name].tobytes(), name
        bundle_spec = {"seed": 11, "tensors": tensors}
        assert bytes(local.safetensors(bundle_spec).buffer) == bytes(client.safetensors(bundle_spec).buffer)
        w = local.tensor([64, 32], "xavier_uniform", seed=1, name="x")
        assert isinstance(w, np.ndarray) and w.flags.writeable
        assert w.tobytes() == client.tensor([64, 32], "xavier_uniform", seed=1, name="x").tobytes()


def test_init_module_gives_the_same_module_with_either_client(server: Server) -> None:
    def block() -> nn.Module:
        return nn.Sequential(nn.Embedding(30, 8, padding_idx=0), nn.TransformerEncoderLayer(8, 2, 16), nn.Linear(8, 3))

    via_local, via_server = block(), block()
    init_module(via_local, client=LocalClient(), seed=5)
    with Client(base_url=server.url, cache=False) as client:
        init_module(via_server, client=client, seed=5)
    for (name, a), (_, b) in zip(via_local.named_parameters(), via_server.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_invalid_spec_errors_read_like_the_servers(server: Server) -> None:
    local = LocalClient()
    with Client(base_url=server.url, cache=False) as client:
        for shape, scheme, params in (
            ([4, -3], "normal", None),
            ([4], "kaiming_unifrom", None),
            ([4], "uniform", {"low": 1, "high": 0}),
        ):
            with pytest.raises(InvalidSpecError) as ours:
                local.tensor(shape, scheme, params=params, name="weight")
            with pytest.raises(InvalidSpecError) as theirs:
                client.tensor(shape, scheme, params=params, name="weight")
            assert ours.value.errors == theirs.value.errors
            assert ours.value.detail == theirs.value.detail


def test_threads_and_kernels_never_change_bytes() -> None:
    clients = [LocalClient(threads=threads, kernel=kernel) for threads in (1, 3) for kernel in KERNELS]
    spec = ([1 << 11, 1 << 10], "kaiming_normal")
    columns = [[0, 1 << 11], [100, 357]]
    results = {client.tensor(*spec, seed=3, name="weight").tobytes() for client in clients}
    assert len(results) == 1
    assert len({client.tensor(*spec, seed=3, slice=columns, name="weight").tobytes() for client in clients}) == 1
    with pytest.raises(ValueError, match="threads must be ≥ 1"):
        LocalClient(threads=0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        LocalClient(kernel="fast")


def _helper_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("initserve-local")}


def test_helper_threads_are_started_once_reused_and_stopped_by_close() -> None:
    """A LocalClient keeps its engine threads across calls (init_module makes one call per tensor or
    shard: starting a pool each time cost ~0.1 ms per call); close() stops them, and a later call
    starts them again. The bytes are a one-thread client's."""
    before = _helper_threads()
    spec = ([1 << 10, 1 << 9], "kaiming_uniform")
    reference = LocalClient(threads=1).tensor(*spec, seed=9, name="w").tobytes()
    client = LocalClient(threads=3)
    seen: set[threading.Thread] = set()
    for _ in range(6):
        assert client.tensor(*spec, seed=9, name="w").tobytes() == reference
        seen |= _helper_threads() - before
    # threads - 1 = 2 helpers at most over all six calls (the pool starts them as work arrives), and
    # none was ever replaced: a pool per call would have started new ones each time
    assert 1 <= len(seen) <= 2
    assert all(thread.is_alive() for thread in seen)
    client.close()
    assert not any(thread.is_alive() for thread in seen)
    assert client.tensor(*spec, seed=9, name="w").tobytes() == reference  # usable after close
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_generates_with_its_own_threads() -> None:
    """A child forked after the parent used the client has none of the parent's threads: it must start
    its own (else it would wait forever for work queued to threads that do not exist)."""
    client = LocalClient(threads=2)
    spec = ([1 << 10, 1 << 9], "kaiming_uniform")
    expected = client.tensor(*spec, seed=4, name="w").tobytes()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it produced the parent's bytes, then leave at once
        try:
            same = client.tensor(*spec, seed=4, name="w").tobytes() == expected
            os.write(write, b"1" if same else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        answer = os.read(read, 1) if ready else b""
    finally:
        os.close(read)
        if not ready:
            os.kill(pid, signal.SIGKILL)  # our own child, stuck
        os.waitpid(pid, 0)
        client.close()
    assert answer, "the forked child did not answer within 30 s"
    assert answer == b"1"


def test_client_and_local_generation_import_without_the_server_extra() -> None:
    """The engine needs numpy only: with every server-extra package unimportable, the client imports,
    LocalClient generates and init_module fills a model; initserve.api is never imported."""
    code = textwrap.dedent(
        """
        import sys
        BLOCKED = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "prometheus_client",
                   "pythonjsonlogger", "cachetools")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked for this test: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import torch
        from initserve_client import LocalClient, init_module
        local = LocalClient()
        assert local.tensor([3, 4], "kaiming_uniform", seed=1, name="weight").shape == (3, 4)
        init_module(torch.nn.Linear(4, 2), client=local, seed=0)
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "a server package was imported"
        assert "initserve.api" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_bundle_into_writes_the_bundles_values_into_caller_memory() -> None:
    local = LocalClient()
    tensors = {
        "w": {"shape": [64, 48], "scheme": "kaiming_normal", "slice": [[0, 64], [8, 24]]},
        "e": {"shape": [40, 8], "scheme": "normal", "dtype": "bfloat16"},
    }
    expected = local.bundle_torch(tensors, seed=2)
    w, e = torch.full((64, 16), float("nan")), torch.full((40, 8), float("nan"), dtype=torch.bfloat16)
    address = w.data_ptr()
    local.bundle_into(tensors, {"w": w, "e": e}, seed=2)
    assert torch.equal(w, expected["w"]) and torch.equal(e, expected["e"]) and w.data_ptr() == address
    as_numpy = np.empty((64, 16), dtype=np.float32)
    local.bundle_into({"w": tensors["w"]}, {"w": as_numpy}, seed=2)
    assert as_numpy.tobytes() == expected["w"].numpy().tobytes()
    with pytest.raises(ValueError, match=r"out\['w'\]: out must be a writable C-contiguous float32 array of 1024"):
        local.bundle_into({"w": tensors["w"]}, {"w": torch.empty(64, 17)}, seed=2)
    with pytest.raises(ValueError, match=r"out\['w'\].*contiguous: False"):
        local.bundle_into({"w": tensors["w"]}, {"w": torch.empty(16, 64).t()}, seed=2)
    # A missing buffer is named before anything is written (not a bare KeyError after "w" was filled).
    untouched = torch.full((64, 16), float("nan"))
    with pytest.raises(ValueError, match=r"out has no buffer for 'e'"):
        local.bundle_into(tensors, {"w": untouched}, seed=2)
    assert untouched.isnan().all()


def test_init_module_with_local_client_generates_into_the_parameters() -> None:
    """No second copy of a parameter: the values are written into its own storage (non-contiguous
    targets, like a strided column block of a local shard, still get the same values through a copy)."""
    import tracemalloc

    model = nn.Linear(1024, 2048)
    reference = nn.Linear(1024, 2048)
    local = LocalClient(threads=1)
    init_module(nn.Linear(2, 2), client=local, seed=0)  # first-call costs outside the measurement
    address = model.weight.data_ptr()
    tracemalloc.start()
    init_module(model, client=local, seed=3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert model.weight.data_ptr() == address
    assert peak < (model.weight.numel() * 4) // 8, f"{peak} bytes allocated for an 8 MiB weight"
    init_module(reference, client=local.__class__(threads=2), seed=3)
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)


def test_resolve_gives_the_servers_canonical_spec_algorithm_and_etag(server: Server) -> None:
    bodies = [
        {"name": "w", "shape": [8, 64], "scheme": "xavier_normal", "seed": 3, "layout": "torch"},
        {"name": "c", "shape": [16, 4, 3, 3], "scheme": "kaiming_uniform", "slice": [[2, 5]], "algorithm": 1},
        {"bundle": {"seed": 1, "tensors": {"a": {"shape": [5, 7], "scheme": "orthogonal", "dtype": "bfloat16"}}}},
    ]
    with Client(base_url=server.url, cache=False) as client:
        for body in bodies:
            remote, local = client.resolve(body), LocalClient().resolve(body)
            assert local == {key: remote[key] for key in ("canonical", "algorithm", "etag")}, body
    with pytest.raises(InvalidSpecError, match=r"params\.std"):
        LocalClient().resolve({"name": "w", "shape": [2], "scheme": "normal", "params": {"std": -1}})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_parameters_filled_in_place_keep_a_storage_torch_can_resize(server: Server, dtype: torch.dtype) -> None:
    """Generating into a parameter leaves its storage as a Client's copy does: FSDP2 (and anything
    offloading a parameter) frees and re-allocates it with untyped_storage().resize_(), which
    Tensor.numpy() forbids for good once called."""
    model, fetched = nn.Linear(24, 16).to(dtype), nn.Linear(24, 16).to(dtype)
    init_module(model, client=LocalClient(threads=1), seed=5)
    with Client(base_url=server.url, cache=False) as client:
        init_module(fetched, client=client, seed=5)
    for param, reference in zip(model.parameters(), fetched.parameters(), strict=True):
        assert torch.equal(param, reference)  # the same bytes as the server's, written in place
        nbytes = param.untyped_storage().nbytes()
        param.untyped_storage().resize_(0)
        param.untyped_storage().resize_(nbytes)
        reference.untyped_storage().resize_(0)


def test_ainit_module_fills_megatron_shards_as_init_module_does(server: Server) -> None:
    import asyncio

    from initserve_client import AsyncClient, ainit_module

    from tests.distributed import scenarios as sc

    expected, module = sc.megatron_module(1, 2), sc.megatron_module(1, 2)
    init_module(expected, client=LocalClient(), seed=sc.SEED, policy=sc.MEGATRON_POLICY, tp_rank=1, tp_size=2)

    async def fill() -> None:
        async with AsyncClient(base_url=server.url, cache=False) as client:
            await ainit_module(module, client=client, seed=sc.SEED, policy=sc.MEGATRON_POLICY, tp_rank=1, tp_size=2)

    asyncio.run(fill())
    for (name, a), (_, b) in zip(module.named_parameters(), expected.named_parameters(), strict=True):
        assert torch.equal(a, b), name


NOWHERE = "http://127.0.0.1:1"  # nothing listens: a request that reached the network would be a TransportError


@pytest.mark.parametrize(
    ("call", "loc"),
    [
        (lambda c: c.tensor([4, 4], "normal", params={"std": math.nan}, name="w"), ("body", "params", "std")),
        (lambda c: c.tensor([4, 4], "normal", params={"mean": -math.inf}, name="w"), ("body", "params", "mean")),
        (lambda c: c.stats([4, 4], "normal", params={"std": math.inf}, name="w"), ("body", "params", "std")),
        (
            lambda c: c.bundle({"fc.weight": {"shape": [4, 4], "scheme": "normal", "params": {"std": math.nan}}}),
            ("body", "tensors", "fc.weight", "params", "std"),
        ),
        (lambda c: c.tensor(4, "normal", name="w"), ("body", "shape")),
        # Values of no JSON type: the encoder's bare TypeError ("Object of type Decimal is not JSON serializable").
        (lambda c: c.tensor([4, 4], "normal", params={"std": Decimal("0.5")}, name="w"), ("body", "params", "std")),
        (lambda c: c.tensor([4, 4], "normal", params={"std": 0.5 + 0j}, name="w"), ("body", "params", "std")),
        (lambda c: c.tensor([4, 4], "normal", slice=[slice(0, 2)], name="w"), ("body", "slice", 0)),
        (lambda c: c.stats([4, 4], "normal", params={"mean": {1, 2}}, name="w"), ("body", "params", "mean")),
        (
            lambda c: c.bundle({"fc.weight": {"shape": [4, 4], "scheme": "normal", "params": {"std": Decimal(1)}}}),
            ("body", "tensors", "fc.weight", "params", "std"),
        ),
    ],
)
def test_values_json_cannot_carry_are_invalid_specs_naming_the_field(call: Any, loc: tuple[Any, ...]) -> None:
    # NaN, ±inf (not JSON numbers) and a shape that is not a sequence are refused before any request, by both
    # clients alike, as InvalidSpecError naming the field, not as json's or Python's own ValueError/TypeError.
    for client in (LocalClient(), Client(base_url=NOWHERE, cache=False, retries=1)):
        with pytest.raises(InvalidSpecError) as raised:
            call(client)
        assert loc in [error.loc for error in raised.value.errors], raised.value
        assert str(raised.value.errors[0]).startswith(".".join(str(p) for p in loc[1:2]))


def test_derive_requests_carry_numpy_numbers_and_refuse_nan_before_any_request() -> None:
    source, tensors = "0" * 64, {"emb": {"shape": [12, 4]}}
    with Client(base_url=NOWHERE, cache=False, retries=1) as client:
        with pytest.raises(InvalidSpecError) as raised:
            client.derive(source, tensors, [{"match": "emb", "action": "mean_rows", "noise": math.nan}])
        assert ("body", "rules", 0, "noise") in [error.loc for error in raised.value.errors]
        # A numpy scalar is a number (as in every other request): the body is encoded and sent.
        with pytest.raises(TransportError):
            client.derive(
                source, tensors, [{"match": "emb", "action": "mean_rows", "noise": np.float32(0.5)}], seed=np.uint64(3)
            )


@pytest.mark.parametrize("scheme", ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "torch_default"])
@pytest.mark.parametrize("shape", [[5, 0], [0, 0], [4, 0, 3, 3]])
def test_zero_size_tensors_with_zero_fans_generate_like_the_server(
    server: Server, scheme: str, shape: list[int]
) -> None:
    # A layer with no inputs has fan_in 0: nothing to draw, so no std to compute (torch warns and does nothing).
    with Client(base_url=server.url, cache=False) as client:
        served = client.tensor(shape, scheme, name="w")
    local = LocalClient().tensor(shape, scheme, name="w")
    assert local.shape == served.shape == tuple(shape) and local.dtype == served.dtype


def test_init_module_fills_a_layer_without_inputs_as_torch_does() -> None:
    torch.manual_seed(0)
    reference, ours = nn.Linear(0, 5), nn.Linear(0, 5)  # torch: weight (5, 0), bias U(±0) = zeros
    ours.bias.data.fill_(7.0)
    init_module(ours, client=LocalClient(), seed=0)
    assert torch.equal(ours.bias, reference.bias) and ours.weight.shape == (5, 0)


def test_algorithm_is_selectable_by_every_method_of_both_clients(server: Server) -> None:
    """``algorithm=1`` keeps the first algorithm (orthogonal by LAPACK, class numerical): each method sends it,
    and its answer is the server's for the spec with ``"algorithm": 1`` — not the newest's."""
    spec = {"shape": [8, 6], "scheme": "orthogonal", "seed": 3, "name": "w", "dtype": "float64"}
    entry = {key: spec[key] for key in ("shape", "scheme", "dtype")}
    with Client(base_url=server.url, cache=False) as client:
        for api in (client, LocalClient()):
            first = api.safetensors({**spec, "algorithm": 1}).array("w")
            newest = api.safetensors(spec).array("w")
            assert first.tobytes() != newest.tobytes()  # else this test could not tell them apart
            picked = api.tensor([8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1)
            assert picked.tobytes() == first.tobytes()
            assert api.torch(
                [8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1
            ).numpy().tobytes() == (first.tobytes())
            assert api.bundle({"w": entry}, seed=3, algorithm=1)["w"].tobytes() == first.tobytes()
            assert api.bundle({"w": entry}, seed=3)["w"].tobytes() == newest.tobytes()
            assert api.stats([8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1)["algorithm"] == 1
        first = client.safetensors({**spec, "algorithm": 1}).array("w")

        async def fetch_async() -> bytes:
            async with AsyncClient(base_url=server.url, cache=False) as aclient:
                array = await aclient.tensor([8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1)
                return array.tobytes()

        assert asyncio.run(fetch_async()) == first.tobytes()
        # LAPACK's last bits may differ between processes (class numerical): the values agree, not the bytes
        local_first = LocalClient().tensor([8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1)
        served_first = client.tensor([8, 6], "orthogonal", seed=3, name="w", dtype="float64", algorithm=1)
        np.testing.assert_allclose(local_first, served_first, rtol=0, atol=1e-12)
