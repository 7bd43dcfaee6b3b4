"""One torchrun rank: build every sharded scenario, fill it with init_module, gather, report sha256s.

Run as ``torchrun --nproc_per_node=K sharded_worker.py --out DIR [--url URL] [--memory]``. The
filling itself never communicates; only the checks gather (``full_tensor()``). Writes
``DIR/rank<r>.json``: sha256 of every gathered parameter, of every Megatron local shard, and the
memory figures of the big tensor.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
import tracemalloc
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.distributed.*

from initserve_client import Client, LocalClient, init_module

from tests.distributed import scenarios as sc


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def dtensor_params(table: dict[str, Any], mesh: Any) -> sc.Params:
    """Parameters as DTensors with only the local shard allocated (torch computes its shape)."""
    tensors = {}
    for name, (shape, dtype, codes) in table.items():
        placements = sc.placements(codes)
        local_shape, _ = compute_local_shape_and_global_offset(shape, mesh, placements)
        local = torch.full(local_shape, float("nan"), dtype=dtype)
        stride = tuple(int(s) for s in torch.empty(shape, device="meta").stride())
        tensors[name] = DTensor.from_local(local, mesh, placements, run_check=False, shape=shape, stride=stride)
    return sc.Params(tensors)


def gathered(module: torch.nn.Module, prefix: str) -> dict[str, str]:
    out = {}
    for name, param in module.named_parameters():
        full = param.full_tensor() if isinstance(param, DTensor) else param
        out[f"{prefix}/{name}"] = sha256(full)
    return out


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_figures(client: Any, mesh: Any) -> dict[str, Any]:
    """Peak extra memory of filling the big tensor's shard: numpy allocations (tracemalloc) and the
    process's resident peak (VmHWM, reset through /proc/self/clear_refs)."""
    name, shape, dtype, codes = sc.BIG
    module = dtensor_params({name: (shape, dtype, codes)}, mesh)
    with torch.no_grad():
        local = getattr(module, name).to_local()
        local.zero_()  # the shard's own storage is resident before measuring
    init_module(sc.Params({"warm": torch.empty(3, 3)}), client=client, seed=sc.SEED, policy="kaiming_uniform")
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size to the current one
    rss_before = vm_kib("VmRSS")
    tracemalloc.start()
    init_module(module, client=client, seed=sc.SEED, policy=sc.POLICY)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = vm_kib("VmHWM")
    return {
        "shard_bytes": local.numel() * local.element_size(),
        "full_bytes": torch.empty(shape, dtype=dtype, device="meta").numel() * local.element_size(),
        "traced_peak_bytes": traced_peak,
        "rss_extra_bytes": (rss_peak - rss_before) * 1024,
        "sha256": gathered(module, "big"),
    }


def refusals(client: Any, mesh: Any, world: int) -> dict[str, str]:
    """init_module with a spec the engine refuses, on tensors some ranks hold nothing of: what each
    case did on this rank ("raised: <message>" or "returned"). Every rank must raise: one that
    returned would wait in its next collective for peers that never come."""
    from torch.distributed.device_mesh import DeviceMesh

    table = {"tiny": ((2, 5), torch.float32, ("S0",))}  # 2 rows: ranks 2 and 3 hold none
    modules = {"empty_chunk": dtensor_params(table, mesh)}
    if world >= 3:  # a mesh of ranks 0 and 1: the others are outside it
        modules["outside_mesh"] = dtensor_params(table, DeviceMesh("cpu", [0, 1]))
    out = {}
    for case, module in modules.items():
        try:
            init_module(module, client=client, seed=sc.SEED, policy={"*": {"scheme": "normal", "params": {"std": -1}}})
            out[case] = "returned"
        except Exception as exc:
            out[case] = f"raised: {exc}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--url", default=None, help="an initserve server (default: LocalClient)")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--checkpoints", default=None, help="JSON {mlp: digest, megatron: digest} (needs --url)")
    args = parser.parse_args()

    # A short timeout: a collective that no peer joins fails in a minute instead of hanging.
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    client: Any = Client(base_url=args.url, cache=False) if args.url else LocalClient(threads=1)
    report: dict[str, Any] = {"rank": rank, "world_size": world, "full": {}, "megatron_local": {}}
    mesh = init_device_mesh("cpu", (world,))

    module = dtensor_params(sc.ONE_D, mesh)
    init_module(module, client=client, seed=sc.SEED, policy=sc.POLICY)
    report["full"].update(gathered(module, "1d"))
    report["local_1d"] = {name: sha256(p.to_local()) for name, p in module.named_parameters()}

    # No collective: the last rank initialises a model alone while the others wait on a file, not in a
    # collective. Had init_module communicated, it would wait for peers that never come (and time out).
    done = args.out / "alone.done"
    if rank == world - 1:
        alone = dtensor_params(sc.ONE_D, mesh)
        init_module(alone, client=client, seed=sc.SEED, policy=sc.POLICY)
        report["alone_1d"] = {name: sha256(p.to_local()) for name, p in alone.named_parameters()}
        done.write_text("ok")
    else:
        deadline = time.monotonic() + 120
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the rank initialising alone did not finish")
            time.sleep(0.05)

    report["refusals"] = refusals(client, mesh, world)

    if world == 4:
        mesh2 = init_device_mesh("cpu", (2, 2))
        module = dtensor_params(sc.TWO_D, mesh2)
        init_module(module, client=client, seed=sc.SEED, policy=sc.POLICY)
        report["full"].update(gathered(module, "2d"))

    # FSDP2 on a model built on the meta device: no rank ever holds a whole parameter.
    with torch.device("meta"):
        block = sc.Block()
    fully_shard(block.layer, mesh=mesh)
    fully_shard(block, mesh=mesh)
    init_module(block, client=client, seed=sc.SEED, device="cpu")
    report["fsdp_placements"] = str(block.emb.weight.placements)
    report["fsdp_local_numel"] = sum(p.to_local().numel() for p in block.parameters())
    report["full"].update(gathered(block, "fsdp"))

    # FSDP2 with its parameters unsharded (after a forward with reshard_after_forward=False, or unshard()):
    # the registered tensors are all-gather buffers. The sharded parameters must be the ones filled: they
    # are what the next reshard registers again (and what the optimizer steps).
    for case in ("after_forward", "unshard"):
        mlp = sc.tp_mlp()
        fully_shard(mlp[0], mesh=mesh, reshard_after_forward=False)
        fully_shard(mlp, mesh=mesh, reshard_after_forward=False)
        if case == "after_forward":
            mlp(torch.zeros(2, 16))
        else:
            for sub in (mlp, mlp[0]):
                sub.unshard()  # type: ignore[operator]
        init_module(mlp, client=client, seed=sc.SEED)
        for sub in mlp.modules():
            if isinstance(sub, FSDPModule):
                sub.reshard()
        report["full"].update(gathered(mlp, f"fsdp_{case}"))

    if world == 4:  # HSDP: replicate across the first mesh dimension, shard across the second
        with torch.device("meta"):
            block = sc.Block()
        fully_shard(block, mesh=init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard")))
        init_module(block, client=client, seed=sc.SEED, device="cpu")
        report["hsdp_placements"] = str(block.emb.weight.placements)
        report["full"].update(gathered(block, "hsdp"))

    if world == 4:  # FSDP2 + TP (parallelize_module): real _StridedShard placements on a (dp, tp) mesh
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        mesh_dp_tp = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        with torch.device("meta"):
            mlp = sc.tp_mlp()
        parallelize_module(mlp, mesh_dp_tp["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
        fully_shard(mlp, mesh=mesh_dp_tp["dp"])
        init_module(mlp, client=client, seed=sc.SEED, device="cpu")
        report["fsdp_tp_placements"] = {name: str(p.placements) for name, p in mlp.named_parameters()}
        report["full"].update(gathered(mlp, "fsdp_tp"))

    megatron = sc.megatron_module(rank, world)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init_module(megatron, client=client, seed=sc.SEED, policy=sc.MEGATRON_POLICY)  # tp rank from torch.distributed
    report["megatron_local"] = {name: sha256(p) for name, p in megatron.named_parameters()}
    report["megatron_warnings"] = [str(warning.message) for warning in caught]

    if args.checkpoints:  # from_checkpoint: the server derives global tensors, each rank keeps its elements
        digests = json.loads(args.checkpoints)
        with torch.device("meta"):
            mlp = sc.tp_mlp()
        fully_shard(mlp, mesh=mesh)
        rules = sc.CHECKPOINT_RULES["mlp"]
        init_module(mlp, client=client, seed=sc.SEED, device="cpu", from_checkpoint=digests["mlp"], rules=rules)
        report["checkpoint_fsdp"] = gathered(mlp, "checkpoint_fsdp")
        megatron = sc.megatron_module(rank, world)
        rules = sc.CHECKPOINT_RULES["megatron"]
        init_module(megatron, client=client, seed=sc.SEED, from_checkpoint=digests["megatron"], rules=rules)
        report["checkpoint_megatron_local"] = {name: sha256(p) for name, p in megatron.named_parameters()}

    if args.memory:
        report["memory"] = memory_figures(client, mesh)

    (args.out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
