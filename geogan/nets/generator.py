"""The generator: transfer (flow, warp, mask, blend, refine), removal F, and the training cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn

from geogan.nets.flow import FlowNet, warp
from geogan.nets.layers import check_image_size
from geogan.nets.mask import MaskNet
from geogan.nets.refine import RefineNet
from geogan.nets.removal import RemovalNet


@dataclass
class TransferOutputs:
    """One attribute transfer G(x_a, x_b): everything in a's frame."""

    flow_ab: torch.Tensor  # (B, 2, H, W) grid units: b'(p) = b(p + flow_ab(p))
    x_warp: torch.Tensor  # (B, 3, H, W) b warped onto a's geometry, float32
    mask: torch.Tensor  # (B, 1, H, W) in (0, 1): attribute region
    x_blend: torch.Tensor  # (B, 3, H, W) m * b' + (1 - m) * a
    x_out: torch.Tensor  # (B, 3, H, W) refined blend: a wearing b's attribute


@dataclass
class CycleOutputs:
    """The whole training cycle of one forward (reference: fake_Ay, fake_Bx, fake_By, fake_Ax)."""

    x_a: torch.Tensor  # the inputs, carried so the losses have the reconstruction targets
    x_b: torch.Tensor
    flow_ab: torch.Tensor  # G(a, b): flow, warped b, mask (a's frame), blend, output a*
    x_warp: torch.Tensor
    mask: torch.Tensor
    x_blend: torch.Tensor
    x_out: torch.Tensor  # fake_Ay: target domain "has y"
    mask_b: torch.Tensor  # the blend mask carried back into b's frame (approximate inverse warp)
    x_removed: torch.Tensor  # F(b, mask_b), fake_Bx: target domain "no y"
    flow_rec: torch.Tensor  # G(F(b), a*): flow of the way back, warped a*, mask (b's frame)
    x_warp_rec: torch.Tensor
    mask_rec: torch.Tensor
    x_rec_b: torch.Tensor  # fake_By, should equal x_b: target domain "has y"
    x_rec_a: torch.Tensor  # F(a*, mask), fake_Ax, should equal x_a: target domain "no y"


class CycleBlocks(Protocol):
    """The two blocks the cycle calls twice each: the transfer G (there and back) and the removal F (on b and on a*).

    `Generator` is one; `geogan.training.build.CompiledBlocks` is a compiled one, each block one graph.
    """

    def transfer(self, x_a: torch.Tensor, x_b: torch.Tensor, refine_weight: float | torch.Tensor,
                 heat_a: torch.Tensor | None = None, heat_b: torch.Tensor | None = None) -> TransferOutputs: ...

    def remove(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class Generator(nn.Module):
    """Holds the flow, mask, refinement and removal nets.

    Args:
        ngf: base channel count of every sub-network.
        n_blocks: ResNet blocks in the flow, mask and removal bottlenecks (the refinement
            net has none, as in the reference).
        flow_scale: multiplier of the flow head (reference: 0.1).
        flow_extra_in: landmark heatmap channels given to the flow net (0 = RGB only).
    """

    def __init__(self, ngf: int, n_blocks: int, flow_scale: float = 0.1, flow_extra_in: int = 0):
        super().__init__()
        # Plain values only: saved with the weights so `load_generator` can rebuild the net.
        self.hparams = {"ngf": int(ngf), "n_blocks": int(n_blocks), "flow_scale": float(flow_scale),
                        "flow_extra_in": int(flow_extra_in)}
        self.flow = FlowNet(ngf, n_blocks, flow_scale=flow_scale, extra_in=flow_extra_in)
        self.mask = MaskNet(ngf, n_blocks)
        self.refine = RefineNet(ngf, 0)
        self.removal = RemovalNet(ngf, n_blocks)

    def transfer(self, x_a: torch.Tensor, x_b: torch.Tensor, refine_weight: float | torch.Tensor,
                 heat_a: torch.Tensor | None = None, heat_b: torch.Tensor | None = None) -> TransferOutputs:
        """Put b's instance of the attribute on a.

        Args:
            x_a: (B, 3, H, W) source without the attribute, in [-1, 1].
            x_b: (B, 3, H, W) reference with it.
            refine_weight: w of the refinement residual (0 disables it).
            heat_a, heat_b: (B, C, H, W) landmark heatmaps when the flow net takes them.
        Returns:
            TransferOutputs in a's frame.
        """
        flow_ab = self.flow(x_a, x_b, heat_a, heat_b)
        x_warp = warp(x_b, flow_ab)
        mask = self.mask(x_a, x_warp)
        x_blend = mask * x_warp + (1.0 - mask) * x_a
        x_out = self.refine(x_blend, mask, refine_weight)
        return TransferOutputs(flow_ab=flow_ab, x_warp=x_warp, mask=mask, x_blend=x_blend, x_out=x_out)

    def remove(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """F: (B, 3, H, W) image with the attribute, (B, 1, H, W) mask -> image without it."""
        return self.removal(x, mask)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, refine_weight: float | torch.Tensor,
                heat_a: torch.Tensor | None = None, heat_b: torch.Tensor | None = None,
                blocks: CycleBlocks | None = None) -> CycleOutputs:
        """The reference's whole cycle in one forward (so DDP sees one forward per backward).

        a* = G(a, b); F(b) with the blend mask carried into b's frame by -flow_ab;
        rec_b = G(F(b), a*) puts the attribute back on F(b) from a*; rec_a = F(a*, m).

        Args:
            x_a: (B, 3, H, W) sources without the attribute; x_b: references with it.
            refine_weight: w of the refinement residual (a float or a 0-dim tensor; 0 disables it).
            heat_a, heat_b: landmark heatmaps of a and b, when the flow net takes them.
            blocks: what runs the transfer and the removal (default: this net's own, eager or compiled with it).
        Returns:
            CycleOutputs.
        """
        check_image_size(x_a, "x_a")
        check_image_size(x_b, "x_b")
        blocks = self if blocks is None else blocks
        fwd = blocks.transfer(x_a, x_b, refine_weight, heat_a, heat_b)
        # -flow is the inverse warp only approximately (exact for a constant flow), as in the reference.
        mask_b = warp(fwd.mask, -fwd.flow_ab)
        x_removed = blocks.remove(x_b, mask_b)
        # The way back: F(b) has b's geometry (heat_b), a* has a's (heat_a).
        back = blocks.transfer(x_removed, fwd.x_out, refine_weight, heat_b, heat_a)
        x_rec_a = blocks.remove(fwd.x_out, fwd.mask)
        return CycleOutputs(
            x_a=x_a, x_b=x_b, flow_ab=fwd.flow_ab, x_warp=fwd.x_warp, mask=fwd.mask, x_blend=fwd.x_blend, x_out=fwd.x_out,
            mask_b=mask_b, x_removed=x_removed, flow_rec=back.flow_ab, x_warp_rec=back.x_warp,
            mask_rec=back.mask, x_rec_b=back.x_out, x_rec_a=x_rec_a,
        )
