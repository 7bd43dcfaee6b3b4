"""Sharded init under real torch.distributed (gloo on CPU, torchrun): the same model at world sizes
1, 2, 3 and 4, on 1-D and 2×2 meshes, each rank filling only its shard.

Every gathered ``full_tensor()`` must have the sha256 of the unsharded model initialised in this
process; every Megatron rank must hold exactly the split Megatron's CPU initialisation would give it
from that unsharded master weight; the big tensor's fill must cost each rank O(its shard) memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from initserve_client import Client, LocalClient, init_module

from tests.distributed import scenarios as sc
from tests.live_server import LiveServer, free_port, start_server, stop_server

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("sharded_worker.py")
MiB = 1 << 20


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def run_torchrun(world_size: int, out: Path, *extra: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")}
    env["OMP_NUM_THREADS"] = "1"
    # Large blocks always from fresh mmap, so the resident peak sees every one (glibc's adaptive
    # threshold would serve them from memory freed by earlier scenarios, already resident).
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={world_size}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(WORKER),
        "--out",
        str(out),
        *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world_size)]


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """sha256 of every parameter of the unsharded models, initialised in this one process."""
    client = LocalClient()
    shas: dict[str, str] = {}
    for prefix, module, policy in (
        ("1d", sc.whole_params(sc.ONE_D), sc.POLICY),
        ("2d", sc.whole_params(sc.TWO_D), sc.POLICY),
        ("fsdp", sc.Block(), None),
        ("fsdp_tp", sc.tp_mlp(), None),
        ("big", sc.Params({sc.BIG[0]: torch.empty(sc.BIG[1], dtype=sc.BIG[2])}), sc.POLICY),
    ):
        init_module(module, client=client, seed=sc.SEED, policy=policy)
        shas.update({f"{prefix}/{name}": sha256(p) for name, p in module.named_parameters()})
    shas.update({key.replace("fsdp/", "hsdp/"): value for key, value in shas.items() if key.startswith("fsdp/")})
    for case in ("after_forward", "unshard"):  # the tp_mlp under plain FSDP2, its parameters unsharded
        mlp = {key.removeprefix("fsdp_tp/"): value for key, value in shas.items() if key.startswith("fsdp_tp/")}
        shas.update({f"fsdp_{case}/{key}": value for key, value in mlp.items()})
    return shas


def megatron_expected(world_size: int) -> list[dict[str, str]]:
    """Each rank's local sha256 as Megatron's CPU path would split the unsharded master weights."""
    master = sc.megatron_whole(world_size)
    init_module(master, client=LocalClient(), seed=sc.SEED, policy=sc.MEGATRON_POLICY)
    table = sc.megatron_table(world_size)
    expected = []
    for rank in range(world_size):
        shas = {}
        for name, param in master.named_parameters():
            _, dim, stride = table[name]
            local = param if dim is None else sc.megatron_expected_local(param, dim, stride, rank, world_size)
            shas[name] = sha256(local)
        expected.append(shas)
    return expected


def check_reports(reports: list[dict[str, Any]], reference: dict[str, str], world_size: int) -> None:
    gathered = reports[0]["full"]
    expected_keys = {k for k in reference if k.startswith(("1d/", "fsdp/", "fsdp_after_forward/", "fsdp_unshard/"))}
    if world_size == 4:
        expected_keys |= {k for k in reference if k.startswith(("2d/", "hsdp/", "fsdp_tp/"))}
    assert expected_keys <= set(gathered), sorted(expected_keys - set(gathered))
    wrong = {k: gathered[k] for k in expected_keys if gathered[k] != reference[k]}
    assert not wrong, f"gathered tensors differ from the unsharded model at world size {world_size}: {sorted(wrong)}"
    for report in reports[1:]:
        assert report["full"] == gathered  # every rank gathers the same model
    # The last rank filled a model alone, with no peer in any collective: the same local shards.
    assert reports[-1]["alone_1d"] == reports[-1]["local_1d"]
    assert reports[0]["fsdp_placements"] == "(Shard(dim=0),)"
    block_numel = sum(p.numel() for p in sc.Block().parameters())
    assert sum(r["fsdp_local_numel"] for r in reports) == block_numel  # FSDP2 really sharded it
    if world_size == 4:
        assert reports[0]["hsdp_placements"] == "(Replicate(), Shard(dim=0))"
        assert reports[0]["fsdp_tp_placements"]["0.weight"] == "(_StridedShard(dim=0, sf=2), Shard(dim=0))"
    # A refused spec fails on every rank, those holding nothing of the tensor too (an empty chunk, a
    # rank outside the mesh), with the engine's message naming the parameter and the rule.
    for rank, report in enumerate(reports):
        cases = {"empty_chunk"} | ({"outside_mesh"} if world_size >= 3 else set())
        assert set(report["refusals"]) == cases
        for case, outcome in report["refusals"].items():
            assert outcome.startswith("raised:") and "tiny.params.std" in outcome, (rank, case, outcome)
    expected_local = megatron_expected(world_size)
    for rank, report in enumerate(reports):
        assert report["megatron_local"] == expected_local[rank], f"Megatron rank {rank} of {world_size}"
        # the rank guessed from the default group is said, on every rank, whenever there is more than one
        said = [text for text in report["megatron_warnings"] if "default process group" in text]
        assert len(said) == (1 if world_size > 1 else 0), report["megatron_warnings"]
        assert not said or f"rank {rank} of {world_size}" in said[0], said


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_same_model_at_every_world_size(world_size: int, reference: dict[str, str], tmp_path: Path) -> None:
    reports = run_torchrun(world_size, tmp_path, "--memory")
    check_reports(reports, reference, world_size)
    for report in reports:
        memory = report["memory"]
        assert memory["sha256"] == {"big/big": reference["big/big"]}
        shard, full = memory["shard_bytes"], memory["full_bytes"]
        columns = sc.BIG[1][1]  # Shard(1): torch.chunk of the columns
        assert shard in {full // columns * (columns // world_size), full // columns * -(-columns // world_size)}
        # O(shard): the generated block and a little working memory, never the whole tensor.
        traced_bound = shard * 1.1 + 2 * MiB
        resident_bound = shard * 1.25 + 4 * MiB
        assert memory["traced_peak_bytes"] <= traced_bound, memory
        assert memory["rss_extra_bytes"] <= resident_bound, memory
        # LocalClient generates into the shard's own storage: not even one shard of extra memory.
        assert memory["traced_peak_bytes"] <= shard / 8 + MiB, memory
        assert memory["rss_extra_bytes"] <= shard / 8 + 2 * MiB, memory
        if world_size > 1:
            assert resident_bound < full  # the bound tells a shard from the whole tensor


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    live: LiveServer = start_server(tmp_path_factory.mktemp("sharded-server"))
    yield live
    stop_server(live)


def test_ranks_fetch_their_shards_from_a_server(server: LiveServer, reference: dict[str, str], tmp_path: Path) -> None:
    """The HTTP client on every rank: each asks the server for its own slices only."""
    before = server.request_count("POST", "/v1/bundle", "200")
    with Client(base_url=server.url, cache=False) as client:  # checkpoints of the unsharded models
        sources = {"mlp": sc.tp_mlp(), "megatron": sc.megatron_whole(3)}
        init_module(sources["mlp"], client=client, seed=sc.SEED + 1)
        init_module(sources["megatron"], client=client, seed=sc.SEED + 1, policy=sc.MEGATRON_POLICY)
        digests = {key: client.upload_checkpoint(module.state_dict())["digest"] for key, module in sources.items()}
        # The unsharded models derived in one process: what every world size must give.
        derived = {"mlp": sc.tp_mlp(), "megatron": sc.megatron_whole(3)}
        for key, module in derived.items():
            rules = sc.CHECKPOINT_RULES[key]
            init_module(module, client=client, seed=sc.SEED, from_checkpoint=digests[key], rules=rules)
    reports = run_torchrun(3, tmp_path, "--url", server.url, "--checkpoints", json.dumps(digests))
    check_reports(reports, reference, 3)
    # from_checkpoint on sharded models: the gathered FSDP2 model and every Megatron rank's partition are
    # those of the unsharded derived model (reinit rules drawn from the global shape, copies sliced).
    expected_fsdp = {f"checkpoint_fsdp/{n}": sha256(p) for n, p in derived["mlp"].named_parameters()}
    table = sc.megatron_table(3)
    for rank, report in enumerate(reports):
        assert report["checkpoint_fsdp"] == expected_fsdp
        expected_megatron = {}
        for name, param in derived["megatron"].named_parameters():
            _, dim, stride = table[name]
            local = param if dim is None else sc.megatron_expected_local(param, dim, stride, rank, 3)
            expected_megatron[name] = sha256(local)
        assert report["checkpoint_megatron_local"] == expected_megatron, f"Megatron rank {rank}"
    assert server.request_count("POST", "/v1/bundle", "200") > before
    with Client(base_url=server.url, cache=False) as client:  # the server's unsharded model is the local one
        module = sc.whole_params(sc.ONE_D)
        init_module(module, client=client, seed=sc.SEED, policy=sc.POLICY)
        assert {f"1d/{n}": sha256(p) for n, p in module.named_parameters()} == {
            k: v for k, v in reference.items() if k.startswith("1d/")
        }


def test_the_torchrun_example_of_docs_sharding_gives_one_model(tmp_path: Path) -> None:
    """docs/sharding.md's example, as written, at world sizes 1 and 3: the same sha256 for every parameter."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "sharding.md").read_text()
    example = text[text.index("# train.py") : text.index("```", text.index("# train.py"))]
    script = tmp_path / "train.py"
    script.write_text(
        example
        + "import hashlib, json, sys\n"
        + "shas = {n: hashlib.sha256(p.full_tensor().detach().reshape(-1).view(torch.uint8).numpy()).hexdigest()\n"
        + "        for n, p in model.named_parameters()}\n"
        + "if dist.get_rank() == 0:\n"
        + "    open(sys.argv[1], 'w').write(json.dumps(shas))\n"
        # The teardown docs/sharding.md asks for: FSDP state kept in module globals until interpreter
        # finalization makes torch's gloo teardown abort ("terminate called without an active exception")
        # in about one run of three; releasing it before destroy_process_group never did in 16 runs.
        + "import gc\n"
        + "del model, mesh\n"
        + "gc.collect()\n"
        + "dist.destroy_process_group()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITSERVE_")} | {"OMP_NUM_THREADS": "1"}
    shas = []
    for world_size in (1, 3):
        out = tmp_path / f"shas{world_size}.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={world_size}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            str(script),
            str(out),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-6000:]
        shas.append(json.loads(out.read_text()))
    assert len(shas[0]) == 6 * 12 and shas[0] == shas[1]  # 12 parameters per encoder layer
