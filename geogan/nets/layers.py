"""Shared building blocks: conv blocks, reflect-padded ResNet blocks, a skip encoder and decoder.

All normalisation is InstanceNorm without affine parameters and without running
statistics (as the reference), so train and eval modes compute the same function. Four
layers (InstanceNorm, ReflectionPad, Conv2d, Upsample2x) run the stock ops, or the exact
rewrites of `geogan.nets.fast_ops` when built with other `Kernels` (`use_kernels`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from geogan.nets import fast_ops
from geogan.nets.fast_ops import STOCK, Kernels

N_DOWN = 3  # stride-2 convs in every encoder: ngf -> 8 ngf, H -> H / 8


class InstanceNorm(nn.Module):
    """InstanceNorm over H, W without affine parameters or running statistics.

    No parameters or buffers, so checkpoints are those of `nn.InstanceNorm2d`.
    """

    def __init__(self, eps: float = 1e-5, kernels: Kernels = STOCK):
        super().__init__()
        self.eps = eps
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels.instance_norm and self.kernels.norm_bands:
            return fast_ops.instance_norm_banded(x, self.eps)
        if self.kernels.instance_norm:
            return fast_ops.instance_norm(x, self.eps)
        return F.instance_norm(x, eps=self.eps)


class ReflectionPad(nn.Module):
    """`nn.ReflectionPad2d(pad)`; with `kernels.fold_pad`, a backward that keeps channels_last."""

    def __init__(self, pad: int, kernels: Kernels = STOCK):
        super().__init__()
        self.pad = pad
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels.fold_pad:
            return fast_ops.reflection_pad_folded(x, self.pad, self.kernels.pad_layout)
        return F.pad(x, (self.pad,) * 4, mode="reflect")

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that, with the compiled kernels, runs thin layers in shapes cuDNN runs fast: the same function.

    - `kernels.space_to_depth`, for layers that `fit_blocks` (stride-1 unpadded convs with an
      odd kernel of 5 or more and at most 16 input or output channels: G's full-resolution
      7x7 stems and heads; a 16-channel 3x3 ran slower on blocks, run 15):
      `space_to_depth_conv` when H and W are even.
    - `kernels.pad_channels`: channel counts that are not multiples of 8 are zero-padded
      (`conv2d_padded_channels`).
    The parameters keep their shapes, so checkpoints are those of `nn.Conv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 kernels: Kernels = STOCK, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.kernels = kernels
        k = self.kernel_size
        self.fits_blocks = (self.stride == (1, 1) and self.padding == (0, 0) and self.dilation == (1, 1)
                            and self.groups == 1 and k[0] == k[1] and k[0] % 2 == 1 and k[0] >= 5
                            and min(in_channels, out_channels) <= 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels, multiple = self.kernels, fast_ops.CHANNEL_MULTIPLE if self.kernels.pad_channels else 0
        if self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(x)
        # The nets' layout (build_training converts weights): traced activations' strides say less.
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last)
        if kernels.space_to_depth and self.fits_blocks and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
            return fast_ops.space_to_depth_conv(x, self.weight, self.bias, multiple, channels_last)
        if multiple and (self.in_channels % multiple or self.out_channels % multiple):
            return fast_ops.conv2d_padded_channels(x, self.weight, self.bias, multiple, channels_last,
                                                   stride=self.stride, padding=self.padding, dilation=self.dilation)
        return super().forward(x)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling (align_corners=False); with `kernels.upsample`, written out as its stencil."""

    def __init__(self, kernels: Kernels = STOCK):
        super().__init__()
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels.upsample:
            return fast_ops.upsample2x_stencil(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def use_kernels(module: nn.Module, kernels: Kernels) -> None:
    """Set the kernels of every kernel-choosing layer in `module` (what `build_nets` does with its argument)."""
    for m in module.modules():
        if isinstance(m, (InstanceNorm, ReflectionPad, Conv2d, Upsample2x)):
            m.kernels = kernels


def conv_block(in_ch: int, out_ch: int, kernel: int, stride: int = 1, reflect: bool = False) -> nn.Sequential:
    """Conv -> InstanceNorm -> ReLU; `reflect` pads by reflection instead of zeros."""
    pad = kernel // 2
    if reflect:
        layers: list[nn.Module] = [ReflectionPad(pad), Conv2d(in_ch, out_ch, kernel, stride)]
    else:
        layers = [Conv2d(in_ch, out_ch, kernel, stride, padding=pad)]
    return nn.Sequential(*layers, InstanceNorm(), nn.ReLU(inplace=True))


class ResnetBlock(nn.Module):
    """x + (pad, conv3, IN, ReLU, pad, conv3, IN) with reflection padding."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            ReflectionPad(1), nn.Conv2d(ch, ch, 3), InstanceNorm(), nn.ReLU(inplace=True),
            ReflectionPad(1), nn.Conv2d(ch, ch, 3), InstanceNorm(),
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
        self.upsample = Upsample2x()
        self.head = nn.Sequential(ReflectionPad(3), Conv2d(ngf * k, out_ch, 7))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """x: (B, 8ngf, H/8, W/8) bottleneck; skips: the encoder list (deepest last). Returns (B, out_ch, H, W)."""
        for i in range(N_DOWN):
            y = self.reduce[i](torch.cat([x, skips[N_DOWN - i]], dim=1))
            x = self.refine[i](self.upsample(y))
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
