"""Multi-scale patch discriminator with a domain-classification head per scale."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geogan.nets.layers import Conv2d, InstanceNorm

DILATIONS = (2, 4, 6)


class ScaleDiscriminator(nn.Module):
    """Three stride-2 3x3 convs, parallel dilated convs merged by 1x1, then two heads.

    Channels ndf, 2 ndf, 4 ndf, then min(8 ndf, 512) as in the reference. The first conv
    has no norm (pix2pixHD habit); the dilated convs pad by their dilation so even a 2x2
    map (the coarsest scale at 64 px) keeps its size. Unlike the reference, a LeakyReLU
    follows the dilated branches and the merge: without them the dilated convs, the
    1x1 merge and the heads collapse into one linear map.
    """

    def __init__(self, ndf: int):
        super().__init__()
        c1, c2, c3 = ndf, 2 * ndf, 4 * ndf
        c4 = min(8 * ndf, 512)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.trunk = nn.Sequential(
            Conv2d(3, c1, 3, 2, 1), act(),
            nn.Conv2d(c1, c2, 3, 2, 1), InstanceNorm(), act(),
            nn.Conv2d(c2, c3, 3, 2, 1), InstanceNorm(), act(),
        )
        self.dilated = nn.ModuleList(nn.Conv2d(c3, c4, 3, padding=d, dilation=d) for d in DILATIONS)
        self.merge = nn.Sequential(nn.Conv2d(len(DILATIONS) * c4, c4, 1), act())
        self.patch_head = Conv2d(c4, 1, 3, padding=1)
        self.cls_head = Conv2d(c4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> patch map (B, 1, H/8, W/8), domain logit (B,)."""
        h = self.trunk(x)
        h = self.merge(torch.cat([F.leaky_relu(conv(h), 0.2) for conv in self.dilated], dim=1))
        return self.patch_head(h), self.cls_head(h).mean(dim=(1, 2, 3))


class LocalDiscriminator(nn.Module):
    """Judges the attribute's landmark-anchored crop alone: three stride-2 3x3 convs, then the two heads.

    Seeing only the brows and eyes (or the upper lip), it cannot score hair, beards or
    gender, and a blob painted outside the region cannot fool it.
    """

    def __init__(self, ndf: int):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.trunk = nn.Sequential(
            Conv2d(3, ndf, 3, 2, 1), act(),
            nn.Conv2d(ndf, 2 * ndf, 3, 2, 1), InstanceNorm(), act(),
            nn.Conv2d(2 * ndf, 4 * ndf, 3, 2, 1), InstanceNorm(), act(),
            nn.Conv2d(4 * ndf, 4 * ndf, 3, 1, 1), InstanceNorm(), act(),
        )
        self.patch_head = Conv2d(4 * ndf, 1, 3, padding=1)
        self.cls_head = Conv2d(4 * ndf, 1, 3, padding=1)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, h, w) crops -> patch map (B, 1, h/8, w/8), domain logit (B,)."""
        h = self.trunk(crops)
        return self.patch_head(h), self.cls_head(h).mean(dim=(1, 2, 3))


class Discriminator(nn.Module):
    """`n_scales` discriminators on the image and its 2x, 4x, ... average-pooled versions.

    Args:
        ndf: base channel count.
        n_scales: number of scales (reference: 3).
        local_ndf: base channels of the local attribute discriminator (0 = none).
    """

    def __init__(self, ndf: int, n_scales: int = 3, local_ndf: int = 0):
        super().__init__()
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        self.scales = nn.ModuleList(ScaleDiscriminator(ndf) for _ in range(n_scales))
        self.local = LocalDiscriminator(local_ndf) if local_ndf > 0 else None

    def forward(self, x: torch.Tensor, crops: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, 3, H, W) in [-1, 1] -> per scale (patch (B, 1, h, w) LSGAN map, cls_logit (B,)).

        With `crops` (the attribute regions of the same images), the local discriminator's
        output is appended as the last entry: one forward, so DDP reduces all of D at once.
        """
        outs = []
        for i, disc in enumerate(self.scales):
            if i:
                # The reference's pooling: 3x3 window, stride 2, padding not counted.
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(disc(x))
        if crops is not None:
            if self.local is None:
                raise ValueError("region crops given, but the discriminator was built without a local part (model.local_ndf 0)")
            outs.append(self.local(crops))
        return outs
