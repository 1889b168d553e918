"""One process per GPU under `torchrun` (DistributedDataParallel), or a single process.

`torchrun --nproc_per_node 8 train.py ...` sets RANK, WORLD_SIZE and LOCAL_RANK; each process
drives the GPU LOCAL_RANK, reads its own shard of every epoch's permutation, and DDP averages
gradients (NCCL on GPUs, gloo on CPU). Rank 0 alone logs, validates, writes checkpoints and
exports. Multi-host runs use the same variables (torchrun --nnodes ... --rdzv-endpoint ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fmr.errors import FmrError


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FmrError(f"--device {name}: no CUDA GPU is visible to torch on this machine")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str = "auto") -> Context:
    """Read torchrun's environment, pick the device, join the process group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        kwargs = {"device_id": chosen} if chosen.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return Context(rank, world_size, local_rank, chosen)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in a single process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_buffers(ctx: Context, module: torch.nn.Module) -> None:
    """Replace every floating-point buffer (batch-norm running statistics) by its mean over
    ranks. DDP copies rank 0's buffers at the start of each forward, but the forward then
    updates each rank's copy from its own shard, so ranks drift apart by the last step; the mean
    is what the model validated and exported at an epoch end should carry (as timm's
    `distribute_bn` does)."""
    if not ctx.distributed:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(ctx.world_size)


def all_gather_objects(ctx: Context, obj) -> list:
    """Every rank's `obj` (picklable), in rank order."""
    if not ctx.distributed:
        return [obj]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(ctx: Context, obj):
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def cleanup(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
