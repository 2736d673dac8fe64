"""Shared building blocks: conv blocks, reflect-padded ResNet blocks, a skip encoder and decoder.

All normalisation is InstanceNorm without affine parameters and without running
statistics (as the reference), so train and eval modes compute the same function.

Under `torch.compile` some layers run as exact rewrites that compile to faster kernels
(InstanceNorm, ReflectionPad, Conv2d, Upsample2x; benchmarks/NOTES.md runs 11, 14, 15):
same values and gradients, same parameters; eager runs the stock ops.
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


class _ReflectionPad2dFolded(torch.autograd.Function):
    """Reflection padding whose backward folds the mirrored border back with slices and adds.

    Inductor's own backward of `reflection_pad2d` writes its result in NCHW and copies it
    back to channels_last; slices, flips and adds keep the gradient's layout and fuse into
    one pointwise kernel. Measured alone it bought 1.01x (benchmarks/NOTES.md run 14: the
    cost named "pad backward" was the upsampling's scatter fused with it, see `Upsample2x`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: int) -> torch.Tensor:  # type: ignore[override]
        ctx.pad = pad
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _fold_reflected(_fold_reflected(grad, ctx.pad, dim=3), ctx.pad, dim=2), None


def _fold_reflected(grad: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """The gradient of reflect-padding by `pad` along `dim` (2 or 3): the centre plus each mirrored border."""
    n = grad.shape[dim] - 2 * pad  # the unpadded length; border row i (< pad) is input row pad - i
    centre = grad.narrow(dim, pad, n)
    low = grad.narrow(dim, 0, pad).flip(dim)  # lands on input rows 1 .. pad
    high = grad.narrow(dim, pad + n, pad).flip(dim)  # lands on input rows n - 1 - pad .. n - 2
    spread = (0, 0) if dim == 2 else ()
    return centre + F.pad(low, (*spread, 1, n - 1 - pad)) + F.pad(high, (*spread, n - 1 - pad, 1))


class ReflectionPad(nn.Module):
    """`nn.ReflectionPad2d(pad)`; while compiling, with a backward that keeps channels_last (see above).

    `fold_backward` exists so the benchmark can measure the stock backward beside it.
    """

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad
        self.fold_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_backward and torch.compiler.is_compiling():
            return _ReflectionPad2dFolded.apply(x, self.pad)
        return F.pad(x, (self.pad,) * 4, mode="reflect")

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


def conv2d_padded_channels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, multiple: int = 8,
                           channels_last: bool = False, **conv_args) -> torch.Tensor:
    """`F.conv2d` with input and output channels zero-padded to `multiple` (the output sliced back): same values.

    cuDNN's NHWC kernels want channel counts that are multiples of 8: it pads 3-channel
    inputs itself on every call (`nhwcAddPadding`) and runs 1-3 channel outputs on slow
    generic kernels (benchmarks/NOTES.md run 14). `channels_last` puts input and weight in that
    layout for cuDNN (else it converts them itself on every call).
    """
    out_ch, in_ch = weight.shape[:2]
    pad_in, pad_out = (-in_ch % multiple, -out_ch % multiple) if multiple else (0, 0)
    if pad_in or pad_out:
        weight = F.pad(weight, (0, 0, 0, 0, 0, pad_in, 0, pad_out))
        bias = F.pad(bias, (0, pad_out)) if bias is not None else None
    if pad_in:
        x = F.pad(x, (0, 0, 0, 0, 0, pad_in))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, weight, bias, **conv_args)
    return y[:, :out_ch] if pad_out else y


def space_to_depth_weight(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, k, k), k odd -> (4O, 4C, (k+1)/2, (k+1)/2): the same conv acting on 2x2 pixel blocks.

    Output block channel o*4 + oy*2 + ox (`pixel_shuffle`'s order) at block (i, j) is output
    pixel (2i + oy, 2j + ox); input channel c*4 + dy*2 + dx (`pixel_unshuffle`'s) is pixel
    (2i + dy, 2j + dx). Tap (a, b) of the block conv reaches pixel offset (2a + dy, 2b + dx),
    i.e. original tap (2a + dy - oy, 2b + dx - ox) where that lies inside the kernel, else 0.
    """
    o, c, k, _ = weight.shape
    kb = (k + 1) // 2
    blocks = []
    for oy in (0, 1):
        for ox in (0, 1):
            shifted = F.pad(weight, (ox, 1 - ox, oy, 1 - oy))  # (O, C, 2kb, 2kb): tap u holds weight[u - oy]
            blocks.append(shifted.view(o, c, kb, 2, kb, 2).permute(0, 1, 3, 5, 2, 4).reshape(o, 4 * c, kb, kb))
    return torch.stack(blocks, dim=1).reshape(4 * o, 4 * c, kb, kb)


def space_to_depth_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        channel_multiple: int = 8, channels_last: bool = False) -> torch.Tensor:
    """A stride-1, unpadded conv with an odd kernel, computed as a conv over 2x2 pixel blocks (H, W even).

    A thin full-resolution conv (a 7x7 from 3 channels, or to 1-3 channels) runs on cuDNN at a
    few percent of the GPU's rate: tiles mostly empty. On blocks the same function has 4x the
    channels at a quarter of the pixels and a (k+1)/2 kernel: (1 + 1/k)^2 the FLOPs (zero taps
    included) on well-shaped kernels (benchmarks/NOTES.md run 15). `channels_last` keeps the
    blocks, block weight and output in that layout (the shuffles' own outputs are NCHW).
    """
    y = conv2d_padded_channels(F.pixel_unshuffle(x, 2), space_to_depth_weight(weight),
                               bias.repeat_interleave(4) if bias is not None else None, channel_multiple, channels_last)
    y = F.pixel_shuffle(y, 2)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that, while compiling, runs thin layers in shapes cuDNN runs fast: the same function.

    - `space_to_depth` (set for stride-1 unpadded convs with an odd kernel of 5 or more and at
      most 16 input or output channels: G's full-resolution 7x7 stems and heads; a 16-channel
      3x3 ran slower on blocks, run 15): `space_to_depth_conv` when H and W are even.
    - otherwise channel counts that are not multiples of `channel_multiple` are zero-padded
      (`conv2d_padded_channels`).
    The parameters keep their shapes, so checkpoints are those of `nn.Conv2d`; eager runs
    the stock conv. The benchmark turns each off (`channel_multiple` = 0, `space_to_depth` False)
    to measure it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.channel_multiple = 8
        k = self.kernel_size
        self.space_to_depth = (self.stride == (1, 1) and self.padding == (0, 0) and self.dilation == (1, 1)
                               and self.groups == 1 and k[0] == k[1] and k[0] % 2 == 1 and k[0] >= 5
                               and min(in_channels, out_channels) <= 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() or self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(x)
        # The nets' layout (build_training converts weights): traced activations' strides say less.
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last)
        if self.space_to_depth and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
            return space_to_depth_conv(x, self.weight, self.bias, self.channel_multiple, channels_last)
        if self.channel_multiple and (self.in_channels % self.channel_multiple or self.out_channels % self.channel_multiple):
            return conv2d_padded_channels(x, self.weight, self.bias, self.channel_multiple, channels_last,
                                          stride=self.stride, padding=self.padding, dilation=self.dilation)
        return super().forward(x)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling (align_corners=False); while compiling, written out as its fixed stencil.

    Each output row is 0.75 of its nearest input row plus 0.25 of the next nearest (edges
    clamped). Inductor lowers `F.interpolate`'s backward as an accumulating scatter
    (`index_put`, float32 atomics): in run 14's profile its kernels (fused with the pad
    backward) took about 14 ms of the step. Written out, forward and backward are each one
    gather kernel that keeps the layout. `written_out` = False restores the stock op (the
    benchmark's switch).
    """

    def __init__(self):
        super().__init__()
        self.written_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.written_out and torch.compiler.is_compiling()):
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return _Upsample2xStencil.apply(x)


class _Upsample2xStencil(torch.autograd.Function):
    """Bilinear x2 (half-pixel centres, edges clamped) and its adjoint, both as rolls and selects."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _keep_layout(_linear_up2(_linear_up2(x, 2), 3), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _keep_layout(_linear_up2_adjoint(_linear_up2_adjoint(grad, 3), 2), grad)


def _keep_layout(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return y.contiguous(memory_format=torch.channels_last) if like.is_contiguous(memory_format=torch.channels_last) else y


def _row_index(n: int, dim: int, ndim: int, device: torch.device) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = n
    return torch.arange(n, device=device).view(shape)


def _linear_up2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear x2 along `dim`: out[2i] = .75 x[i] + .25 x[i-1], out[2i+1] = .75 x[i] + .25 x[i+1], edges clamped."""
    n = x.shape[dim]
    i = _row_index(n, dim, x.dim(), x.device)
    even = 0.75 * x + 0.25 * torch.where(i == 0, x, x.roll(1, dim))
    odd = 0.75 * x + 0.25 * torch.where(i == n - 1, x, x.roll(-1, dim))
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def _linear_up2_adjoint(grad: torch.Tensor, dim: int) -> torch.Tensor:
    """The adjoint of `_linear_up2` (its backward): each input row collects the four output rows that read it."""
    n = grad.shape[dim] // 2
    g = grad.unflatten(dim, (n, 2))
    g_even, g_odd = g.select(dim + 1, 0), g.select(dim + 1, 1)
    i = _row_index(n, dim, g_even.dim(), grad.device)
    # Row i is read at .25 by out[2i+2] (even, next) and out[2i-1] (odd, previous); at the clamped
    # edges the missing neighbour is the row itself: out[0] and out[2n-1] read only row 0 / n-1.
    next_even = torch.where(i == n - 1, g_odd, g_even.roll(-1, dim))
    prev_odd = torch.where(i == 0, g_even, g_odd.roll(1, dim))
    return 0.75 * (g_even + g_odd) + 0.25 * (next_even + prev_odd)


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
