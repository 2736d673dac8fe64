"""The refinement (hallucination) net: an appearance residual inside the mask of the blend."""

from __future__ import annotations

import torch
import torch.nn as nn

from geogan.nets.layers import UNet


class RefineNet(nn.Module):
    """[x_blend, mask.detach()] -> residual r; out = clamp(x_blend + 2 tanh(r) w m, -1, 1).

    The mask is detached as in the reference: the refinement must not move the mask to
    make its own job easier. The net always runs, even for w = 0, so every parameter
    takes part in every step (DistributedDataParallel needs that; it costs little).

    Args:
        ngf: base channel count.
        n_blocks: ResNet blocks in the bottleneck (the reference uses none).
    """

    def __init__(self, ngf: int, n_blocks: int = 0):
        super().__init__()
        self.body = UNet(4, 3, ngf, n_blocks)

    def forward(self, x_blend: torch.Tensor, mask: torch.Tensor, refine_weight: float | torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, 1, H, W), w -> refined image (B, 3, H, W) in [-1, 1]."""
        m = mask.detach()
        r = self.body(torch.cat([x_blend, m.to(x_blend.dtype)], dim=1))
        return torch.clamp(x_blend + 2.0 * torch.tanh(r) * refine_weight * m, -1.0, 1.0)
