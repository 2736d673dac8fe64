"""Gradients averaged over ranks by one all-reduce of a flat buffer after each backward (`train.grad_sync: flat`).

DistributedDataParallel overlaps its all-reduce with backward by cutting each compiled graph at its gradient
buckets (Dynamo's DDP optimiser). On the 128 px recipe, compiled and replayed as CUDA graphs, DDP kept 85.3% of
twice the one-GPU step and this 96.6% (benchmarks/NOTES.md runs 20 and 29, 2 H200s joined by NVLink). `flat`
compiles the plain modules, the graphs one process has, and averages each net's gradients with one collective
after its backward: the same mean gradient as DDP's, with nothing hidden behind backward (75 MB a step here).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def memory_order_view(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor's elements in memory order: no copy for contiguous or channels_last tensors."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)  # NHWC is contiguous: reshape is a view
    raise ValueError(f"gradient of shape {tuple(t.shape)} and strides {t.stride()} is neither contiguous nor channels_last")


class FlatGradSync:
    """Average `module`'s gradients over the process group with one all-reduce per call.

    Built once per net: rank 0's parameters are broadcast to every rank (as DDP does when it wraps a
    module), so all ranks start from the same weights. Call it after backward and before the
    optimiser's step; parameters without a gradient on this step count as zero.
    """

    def __init__(self, module: torch.nn.Module):
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) > 1:
            raise ValueError(f"FlatGradSync needs one parameter dtype, got {sorted(map(str, dtypes))}")
        self.world_size = dist.get_world_size()
        self.average_in_collective = dist.get_backend() == "nccl"  # gloo has no ReduceOp.AVG
        with torch.no_grad():
            for p in self.params:
                dist.broadcast(p, src=0)

    def __call__(self) -> None:
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        views = [memory_order_view(g) for g in grads]
        flat = torch.cat(views)
        if self.average_in_collective:
            dist.all_reduce(flat, op=dist.ReduceOp.AVG)
        else:
            dist.all_reduce(flat)
            flat.div_(self.world_size)
        torch._foreach_copy_(views, flat.split(self.sizes))
