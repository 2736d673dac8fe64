"""The geometry-aware flow: a Siamese FlowNet, the bilinear warp and landmark heatmaps.

Conventions (shared with the losses and metrics): a flow is (B, 2, H, W) in normalised
[-1, 1] grid units, channel 0 = x, channel 1 = y, with align_corners=True semantics
(pixel centres at -1 and +1, so one pixel is 2 / (W - 1)). Warping samples the
reference at p + flow(p): b'(p) = b(p + flow(p)). The reference code relied on the
pre-1.3 grid_sample default, which was align_corners=True; it is passed explicitly here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geogan.nets.layers import Decoder, Encoder, conv_block, resnet_blocks

# Landmark groups of the iBUG 68-point layout, one heatmap channel each.
LANDMARK_GROUPS: tuple[tuple[int, int], ...] = (
    (0, 17),   # jaw
    (17, 27),  # eyebrows
    (27, 36),  # nose
    (36, 48),  # eyes
    (48, 68),  # mouth
)
HEATMAP_CHANNELS = len(LANDMARK_GROUPS)


class FlowNet(nn.Module):
    """Predicts the flow that warps b onto a's geometry from the pair (a, b).

    A shared-weight (Siamese) encoder runs on a and on b; their skips are concatenated
    per scale; a 3x3 conv and `n_blocks` ResNet blocks form the bottleneck; the decoder
    outputs 2 channels with no activation, multiplied by `flow_scale` (reference: / 10).

    Args:
        ngf: base channel count.
        n_blocks: ResNet blocks in the bottleneck.
        flow_scale: output multiplier.
        extra_in: extra input channels concatenated to each image's RGB (landmark heatmaps).
    """

    def __init__(self, ngf: int, n_blocks: int, flow_scale: float = 0.1, extra_in: int = 0):
        super().__init__()
        self.extra_in = int(extra_in)
        self.flow_scale = float(flow_scale)
        self.encoder = Encoder(3 + self.extra_in, ngf)
        ch = self.encoder.out_ch
        self.merge = conv_block(2 * ch, ch, 3)
        self.blocks = resnet_blocks(ch, n_blocks)
        self.decoder = Decoder(ngf, 2, skip_sources=2)

    @property
    def out_conv(self) -> nn.Conv2d:
        """The last conv (initialised near zero so training starts from an identity warp)."""
        return self.decoder.head[-1]

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, heat_a: torch.Tensor | None = None,
                heat_b: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) x 2 [+ (B, extra_in, H, W) x 2] -> flow_ab (B, 2, H, W) in grid units."""
        if self.extra_in:
            if heat_a is None or heat_b is None:
                raise ValueError(f"FlowNet was built with extra_in={self.extra_in} (flow_inputs: rgb+landmarks): "
                                 "pass heat_a and heat_b from landmark_heatmaps()")
            x_a = torch.cat([x_a, heat_a.to(x_a.dtype)], dim=1)
            x_b = torch.cat([x_b, heat_b.to(x_b.dtype)], dim=1)
        n = x_a.shape[0]
        # One encoder pass over both images: shared weights, InstanceNorm is per sample.
        feats = self.encoder(torch.cat([x_a, x_b], dim=0))
        skips = [torch.cat([f[:n], f[n:]], dim=1) for f in feats]
        x = self.blocks(self.merge(skips[-1]))
        return self.decoder(x, skips) * self.flow_scale


def _grid_coords(n: int, device: torch.device | None) -> torch.Tensor:
    """Pixel centres 0..n-1 in [-1, 1] (align_corners=True), correctly rounded to float32."""
    return (torch.arange(n, device=device, dtype=torch.float64) * (2.0 / (n - 1)) - 1.0).float()


def identity_grid(batch: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """The sampling grid of the identity warp: (B, H, W, 2), [..., 0] = x, [..., 1] = y, in [-1, 1].

    Coordinates are computed in float64 and rounded once to float32 (half the error of a
    float32 linspace). grid_sample maps them back to pixels in float32, so even the
    identity warp interpolates with weights of about 1e-7 (max error 6e-6 at 64 px,
    3e-5 at 256 px on images in [-1, 1]): exact only up to float32 rounding.
    """
    ys = _grid_coords(height, device)
    xs = _grid_coords(width, device)
    grid = torch.stack([xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)], dim=-1)
    return grid.unsqueeze(0).expand(batch, height, width, 2)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp: out(p) = image(p + flow(p)), borders replicated.

    Runs in float32 (bf16 grid coordinates would be off by up to a pixel at 256 px).

    Args:
        image: (B, C, H, W).
        flow: (B, 2, H, W) in grid units.
    Returns:
        (B, C, H, W) float32.
    """
    b, _, h, w = flow.shape
    grid = identity_grid(b, h, w, flow.device) + flow.float().permute(0, 2, 3, 1)  # (B, H, W, 2)
    # A NaN in the grid makes the CPU grid_sample kernels index out of bounds and segfault
    # (pytorch/pytorch#24823): zero it here, so a diverged flow reaches the loss guard
    # (the landmark and TV losses still see the NaN flow) instead of killing the process.
    grid = torch.nan_to_num(grid, nan=0.0)
    return F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


def sample_at(field: torch.Tensor, points_norm: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a field at points: (B, C, H, W), (B, P, 2) in [-1, 1] -> (B, P, C) float32."""
    grid = points_norm.float().unsqueeze(2)  # (B, P, 1, 2)
    out = F.grid_sample(field.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2)


def _group_matrix(device: torch.device | None) -> torch.Tensor:
    """(G, 68) one-hot: which landmark belongs to which heatmap channel."""
    g = torch.zeros(HEATMAP_CHANNELS, 68, device=device)
    for i, (lo, hi) in enumerate(LANDMARK_GROUPS):
        g[i, lo:hi] = 1.0
    return g


def landmark_heatmaps(landmarks_norm: torch.Tensor, size: int, sigma: float | None = None) -> torch.Tensor:
    """Gaussian landmark heatmaps, one channel per facial part (jaw, brows, nose, eyes, mouth).

    Each point adds exp(-d^2 / 2 sigma^2); a channel is the sum over its points, clamped
    to 1. The Gaussian is separable, so a channel is one batched matmul of (P, H) and
    (P, W) profiles: no (B, 68, H, W) tensor and no loop over points. Missing points
    (NaN rows) contribute nothing.

    Args:
        landmarks_norm: (B, 68, 2) (x, y) in [-1, 1] (align_corners=True).
        size: output height and width in pixels.
        sigma: Gaussian width in pixels; default size / 40 (1.6 px at 64, 6.4 px at 256).
    Returns:
        (B, HEATMAP_CHANNELS, size, size) float32 in [0, 1].
    """
    if landmarks_norm.dim() != 3 or landmarks_norm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks_norm: expected (B, 68, 2), got {tuple(landmarks_norm.shape)}")
    sigma = float(sigma) if sigma is not None else size / 40.0
    lm = landmarks_norm.float()
    present = torch.isfinite(lm).all(dim=-1)  # (B, 68)
    px = (torch.where(present.unsqueeze(-1), lm, torch.zeros_like(lm)) + 1.0) * ((size - 1) / 2.0)  # pixels
    coords = torch.arange(size, device=lm.device, dtype=torch.float32)  # (S,)
    gx = torch.exp(-((coords.view(1, 1, -1) - px[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, 68, S)
    gy = torch.exp(-((coords.view(1, 1, -1) - px[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, 68, S)
    weight = _group_matrix(lm.device).unsqueeze(0) * present.unsqueeze(1).float()  # (B, G, 68)
    # (B, G, 68, S)^T @ (B, G, 68, S) summed over points -> (B, G, S_y, S_x)
    heat = torch.einsum("bgp,bpy,bpx->bgyx", weight, gy, gx)
    return heat.clamp(max=1.0)
