"""Distributed setup from torchrun's environment: the same command runs on 1 CPU, 1 GPU or N GPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process logs, writes files and talks to MLflow."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_from_env(device_name: str = "auto") -> DistEnv:
    """Join the process group if torchrun started us (RANK/WORLD_SIZE set), else run alone.

    NCCL on GPU, gloo on CPU. Each rank uses the GPU of its LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def shutdown(env: DistEnv) -> None:
    """Leave the process group (if any)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """Rank 0's decision, shared with every rank (e.g. 'stop now')."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(env: DistEnv, flag: bool) -> bool:
    """True on every rank if any rank raised the flag (e.g. a SIGTERM reached one pod)."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def first_over_ranks(env: DistEnv, step: int) -> int:
    """The smallest non-negative `step` over ranks, -1 if every rank has -1 (e.g. the first bad step)."""
    if not env.distributed:
        return step
    never = 2**62
    t = torch.tensor([step if step >= 0 else never], device=env.device, dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    first = int(t.item())
    return first if first != never else -1


def mean_over_ranks(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over ranks: per-rank mean losses of equal shards -> the global batch's loss."""
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / env.world_size


def params_in_sync(env: DistEnv, module: torch.nn.Module) -> bool:
    """Check that every rank holds the same weights (before a snapshot)."""
    if not env.distributed:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])
        lo, hi = flat.clone(), flat.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return bool(torch.equal(lo, hi))
