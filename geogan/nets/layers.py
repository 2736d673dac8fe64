"""Shared building blocks: conv blocks, reflect-padded ResNet blocks, a skip encoder and decoder.

All normalisation is InstanceNorm without affine parameters and without running
statistics (as the reference), so train and eval modes compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

N_DOWN = 3  # stride-2 convs in every encoder: ngf -> 8 ngf, H -> H / 8


class InstanceNorm(nn.Module):
    """InstanceNorm over H, W without affine parameters or running statistics.

    Eager, this is `F.instance_norm`. Under `torch.compile` it is written out as a mean and
    variance over (H, W) in (at least) float32: `F.instance_norm` reshapes to (1, N*C, H, W) for a batch
    norm, which forces NCHW, so with channels_last activations every norm cost a layout copy
    each way (the compiled step's largest kernel, benchmarks/NOTES.md run 11); written out, the
    norm stays in the activations' layout and fuses with its neighbours. Same function, no
    parameters or buffers, so checkpoints are those of `nn.InstanceNorm2d`.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return F.instance_norm(x, eps=self.eps)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
        return ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


def conv_block(in_ch: int, out_ch: int, kernel: int, stride: int = 1, reflect: bool = False) -> nn.Sequential:
    """Conv -> InstanceNorm -> ReLU; `reflect` pads by reflection instead of zeros."""
    pad = kernel // 2
    if reflect:
        layers: list[nn.Module] = [nn.ReflectionPad2d(pad), nn.Conv2d(in_ch, out_ch, kernel, stride)]
    else:
        layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, padding=pad)]
    return nn.Sequential(*layers, InstanceNorm(), nn.ReLU(inplace=True))


class ResnetBlock(nn.Module):
    """x + (pad, conv3, IN, ReLU, pad, conv3, IN) with reflection padding."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), InstanceNorm(), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), InstanceNorm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet_blocks(ch: int, n_blocks: int) -> nn.Sequential:
    """`n_blocks` ResNet blocks at `ch` channels (an empty Sequential is the identity)."""
    return nn.Sequential(*[ResnetBlock(ch) for _ in range(n_blocks)])


class Encoder(nn.Module):
    """7x7 conv (ngf) then three stride-2 3x3 convs (2, 4, 8 ngf), returning every scale.

    forward(x (B, in_ch, H, W)) -> [f0 (B, ngf, H), f1 (2ngf, H/2), f2 (4ngf, H/4), f3 (8ngf, H/8)].
    """

    def __init__(self, in_ch: int, ngf: int):
        super().__init__()
        self.stem = conv_block(in_ch, ngf, 7, reflect=True)
        self.down = nn.ModuleList(conv_block(ngf * 2**i, ngf * 2 ** (i + 1), 3, stride=2) for i in range(N_DOWN))
        self.out_ch = ngf * 2**N_DOWN

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for layer in self.down:
            feats.append(layer(feats[-1]))
        return feats


class Decoder(nn.Module):
    """Mirror of `Encoder`: at each scale concatenate the skip, 1x1 conv, upsample x2, 3x3 conv.

    `skip_sources` is how many encoders' features are concatenated at each skip (1 for a
    plain U-Net, 2 for the Siamese flow net). The bottleneck input has 8 ngf channels.
    The 1x1 conv runs before the bilinear upsampling (the reference upsamples first):
    both are linear and the bilinear weights sum to 1, so the function is the same and
    the 1x1 conv costs 4x fewer FLOPs.
    """

    def __init__(self, ngf: int, out_ch: int, skip_sources: int = 1):
        super().__init__()
        k = 1 + skip_sources
        self.reduce = nn.ModuleList()
        self.refine = nn.ModuleList()
        for i in range(N_DOWN):
            ch_in, ch_out = ngf * 2 ** (N_DOWN - i), ngf * 2 ** (N_DOWN - i - 1)
            self.reduce.append(nn.Conv2d(ch_in * k, ch_out, 1))
            self.refine.append(conv_block(ch_out, ch_out, 3, reflect=True))
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf * k, out_ch, 7))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """x: (B, 8ngf, H/8, W/8) bottleneck; skips: the encoder list (deepest last). Returns (B, out_ch, H, W)."""
        for i in range(N_DOWN):
            y = self.reduce[i](torch.cat([x, skips[N_DOWN - i]], dim=1))
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.refine[i](y)
        return self.head(torch.cat([x, skips[0]], dim=1))


class UNet(nn.Module):
    """Encoder -> n_blocks ResNet blocks -> Decoder: the body of the mask, refine and removal nets."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int, n_blocks: int):
        super().__init__()
        self.encoder = Encoder(in_ch, ngf)
        self.blocks = resnet_blocks(self.encoder.out_ch, n_blocks)
        self.decoder = Decoder(ngf, out_ch, skip_sources=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return self.decoder(self.blocks(feats[-1]), feats)


def check_image_size(x: torch.Tensor, name: str) -> None:
    """Raise a clear error unless x is (B, C, H, W) with H, W multiples of 8 and >= 16."""
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2**N_DOWN or w % 2**N_DOWN or min(h, w) < 16:
        raise ValueError(f"{name}: height and width must be multiples of 8 and at least 16, got {h}x{w}")
