"""The attribute removal net F: takes the attribute away from an image that has it."""

from __future__ import annotations

import torch
import torch.nn as nn

from geogan.nets.layers import UNet


class RemovalNet(nn.Module):
    """F on [image, mask] -> residual r; out = clamp(x + 2 tanh(r), -1, 1).

    As in the reference the residual is not multiplied by the mask: the mask is a hint
    of where the attribute is, and F may change anything it needs to.

    Args:
        ngf: base channel count.
        n_blocks: ResNet blocks in the bottleneck.
    """

    def __init__(self, ngf: int, n_blocks: int):
        super().__init__()
        self.body = UNet(4, 3, ngf, n_blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image with the attribute, (B, 1, H, W) mask in its frame -> (B, 3, H, W) in [-1, 1]."""
        r = self.body(torch.cat([x, mask.to(x.dtype)], dim=1))
        return torch.clamp(x + 2.0 * torch.tanh(r), -1.0, 1.0)
