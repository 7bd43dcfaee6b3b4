"""The same model at every world size? torch's own sharded init vs Megatron's CPU path vs initserve.

``python -m benchmarks.sharded_models`` launches ``torchrun`` (gloo on CPU, 127.0.0.1) at world sizes
1, 2, 3 and 4 with this file as the worker and prints the table docs/sharding.md quotes:

- **torch / FSDP2**: ``Linear(1024, 4096)`` built on the meta device, ``fully_shard``, ``to_empty``,
  ``reset_parameters()`` after ``torch.manual_seed(0)`` (torchtitan's recipe);
- **Megatron CPU init**: every rank fills the whole fp32 master weight (``kaiming_uniform_`` after
  ``manual_seed(0)``) and keeps its ``torch.chunk`` of the rows (``_initialize_affine_weight_cpu``);
- **initserve**: ``init_module(..., device="cpu")`` with a ``LocalClient`` on the same FSDP2 model.

Per run: sha256 of the gathered weight, whether rank 0's and rank 1's shards are equal (torch draws
the same numbers on every CPU rank), and each rank's peak extra resident memory while initialising.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPE = (4096, 1024)  # Linear(1024, 4096).weight: 16 MiB in float32
WORLD_SIZES = (1, 2, 3, 4)


def _sha(tensor: Any) -> str:
    import torch

    return hashlib.sha256(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _measure(action: Any) -> tuple[float, int]:
    """(seconds, peak extra resident bytes) of ``action()``; the peak is reset through clear_refs."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _kib("VmRSS")
    start = time.perf_counter()
    action()
    return time.perf_counter() - start, (_kib("VmHWM") - before) * 1024


def worker(out: Path) -> None:
    import torch
    import torch.distributed as dist
    from initserve_client import LocalClient, init_module
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (world,))
    client = LocalClient(threads=1)
    init_module(nn.Linear(4, 4), client=client, seed=0)  # imports and first-call costs outside the figures
    report: dict[str, Any] = {}

    def sharded_linear() -> nn.Module:
        with torch.device("meta"):
            model = nn.Sequential(nn.Linear(SHAPE[1], SHAPE[0]))
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        with torch.no_grad():
            model[0].weight.to_local().zero_()  # resident before measuring
        return model

    def summary(full: torch.Tensor) -> dict[str, Any]:
        chunks = torch.chunk(full, world)  # FSDP2's and Megatron's row shards
        return {"sha256": _sha(full), "shard0_equals_shard1": world > 1 and torch.equal(chunks[0], chunks[1])}

    model = sharded_linear()

    def torch_init() -> None:
        torch.manual_seed(0)
        model[0].reset_parameters()

    seconds, extra = _measure(torch_init)
    report["torch"] = {**summary(model[0].weight.full_tensor()), "seconds": seconds, "extra_bytes": extra}

    def megatron_cpu() -> torch.Tensor:
        torch.manual_seed(0)
        master = torch.empty(SHAPE)
        nn.init.kaiming_uniform_(master, a=5**0.5)
        return torch.chunk(master, world)[rank].clone()

    holder: list[torch.Tensor] = []
    seconds, extra = _measure(lambda: holder.append(megatron_cpu()))
    full = DTensor.from_local(holder[0], mesh, [Shard(0)], shape=torch.Size(SHAPE), stride=(SHAPE[1], 1))
    report["megatron_cpu"] = {**summary(full.full_tensor()), "seconds": seconds, "extra_bytes": extra}

    model = sharded_linear()
    seconds, extra = _measure(lambda: init_module(model, client=client, seed=0))
    report["initserve"] = {**summary(model[0].weight.full_tensor()), "seconds": seconds, "extra_bytes": extra}

    report["shard_bytes"] = model[0].weight.to_local().numel() * 4
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    rows = []
    for world in WORLD_SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            # Large blocks always from fresh mmap: glibc's adaptive threshold would otherwise serve them from
            # memory freed earlier (already resident), and the peak would miss them.
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={world}",
                "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}",
                "--module",  # a script path would put benchmarks/ first on sys.path (benchmarks/http.py)
                "benchmarks.sharded_models",
                "--worker",
                tmp,
            ]
            subprocess.run(command, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
            reports = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]
        rows.append((world, reports))
    print(
        f"Linear({SHAPE[1]}, {SHAPE[0]}).weight, float32 ({SHAPE[0] * SHAPE[1] * 4 / 2**20:.0f} MiB); "
        "peak extra resident memory and seconds: the largest over the ranks"
    )
    print(
        "| method | world size | sha256 of the gathered weight | shard 0 == shard 1 | peak extra memory per rank |",
        end="",
    )
    print(" seconds per rank |")
    print("|---|---|---|---|---|---|")
    for method in ("torch", "megatron_cpu", "initserve"):
        for world, reports in rows:
            first = reports[0][method]
            extra = max(r[method]["extra_bytes"] for r in reports) / 2**20
            seconds = max(r[method]["seconds"] for r in reports)
            equal = "yes" if first["shard0_equals_shard1"] else ("no" if world > 1 else "—")
            print(
                f"| {method} | {world} | `{first['sha256'][:16]}…` | {equal} | {extra:.1f} MiB "
                f"(shard {reports[0]['shard_bytes'] / 2**20:.1f} MiB) | {seconds:.3f} |"
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]))
    else:
        main()
