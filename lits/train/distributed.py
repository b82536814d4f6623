"""Process-group setup for DDP under torchrun, and the few collectives the training loop needs.

torchrun starts one process per GPU (or per CPU worker) and tells each who it is through environment variables:
RANK (0 .. WORLD_SIZE-1, global), LOCAL_RANK (index on its node: the GPU to use), WORLD_SIZE, MASTER_ADDR/PORT.
Without them (plain `python train.py`) nothing is initialised and every helper below degrades to the
single-process no-op, so the loop has one code path.

Backends: NCCL on CUDA, gloo on CPU (`trainer.dist_backend=auto`).
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lits.core.device import resolve_device
from lits.core.errors import LitsError


@dataclass(frozen=True)
class Context:
    """Who this process is in the job, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # we initialised the process group (so we tear it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    try:
        world = int(os.getenv("WORLD_SIZE", "1"))
        rank = int(os.getenv("RANK", "0"))
        local = int(os.getenv("LOCAL_RANK", str(rank)))
    except ValueError:
        raise LitsError(
            "RANK / WORLD_SIZE / LOCAL_RANK must be integers; start distributed runs with torchrun"
        ) from None
    return rank, world, local


def setup(device_name: str = "auto", backend: str = "auto", timeout_min: float = 30.0) -> Context:
    """Initialise the default process group from torchrun's variables (when WORLD_SIZE > 1) and pick the device.

    A process group that already exists (a caller set it up) is used as is and left alone by teardown().
    """
    rank, world, local = env_ranks()
    if dist.is_available() and dist.is_initialized():
        device = resolve_device(device_name, local)
        return Context(dist.get_rank(), dist.get_world_size(), local, device, dist.get_backend(), owns_group=False)
    device = resolve_device(device_name, local)
    if world <= 1:
        return Context(0, 1, 0, device)
    if not dist.is_available():
        raise LitsError("this PyTorch build has no torch.distributed; run without torchrun")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise LitsError("trainer.dist_backend=nccl needs CUDA devices; use trainer.dist_backend=gloo (or auto) on CPU")
    if backend not in ("nccl", "gloo"):
        raise LitsError(f"trainer.dist_backend={backend}: choose auto, nccl or gloo")
    kwargs = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # bind the communicator to this rank's GPU up front
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=float(timeout_min)), **kwargs)
    return Context(rank, world, local, device, backend, owns_group=True)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src` on every rank (pickled internally: only for objects this job made itself)."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place sum or max over ranks (no-op in a single process)."""
    if _active():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks whose gradient flows into this rank's `x` only, scaled by world_size.

    The value is the global sum on every rank. The gradient: DDP averages gradients over ranks, so scaling the local
    path by world_size makes DDP's average equal the gradient of the global quantity (what one process would get on
    the concatenated batch). No collective runs in backward.
    """
    if not _active():
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total + (x - x.detach()) * dist.get_world_size()
