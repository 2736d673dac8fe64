"""The mask net: where in the warped reference the attribute is.

Deviation from the reference code, on purpose: the reference predicts the mask from the
*unwarped* a and b (a Siamese encoder), although the mask is used in a's frame to blend
the *warped* b'. Following the paper ("the mask net finds the attribute region m in the
warped b'"), ours sees a and b' together, so the mask and the pixels it selects are
already aligned.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from geogan.nets.layers import UNet


class MaskNet(nn.Module):
    """concat(x_a, x_warp) (6 channels) -> encoder, n_blocks ResNet blocks, decoder -> sigmoid mask.

    Args:
        ngf: base channel count.
        n_blocks: ResNet blocks in the bottleneck.
    """

    def __init__(self, ngf: int, n_blocks: int):
        super().__init__()
        self.body = UNet(6, 1, ngf, n_blocks)

    def forward(self, x_a: torch.Tensor, x_warp: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) source, (B, 3, H, W) warped reference -> mask (B, 1, H, W) in (0, 1), a's frame."""
        x = torch.cat([x_a, x_warp.to(x_a.dtype)], dim=1)
        return torch.sigmoid(self.body(x))
