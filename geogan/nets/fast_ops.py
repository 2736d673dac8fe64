"""Exact rewrites of four layers that compile to faster kernels, and `Kernels`, the choice of them.

Each rewrite computes the stock op's values and gradients (up to rounding) in shapes and layouts
that Inductor and cuDNN run fast; eager, the stock ops are faster. The nets run them only when
built with them (`build_nets(model, kernels=COMPILED)`, what `train.compile` does); what each
buys: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

LEVERS = ("instance_norm", "fold_pad", "pad_channels", "space_to_depth", "upsample")  # what `COMPILED` runs
# Exact rewrites left out of `COMPILED`: measured too small, or not measured yet (`bench_train --with`).
TRIED_LEVERS = ("norm_bands", "pad_layout")


@dataclass(frozen=True)
class Kernels:
    """Which rewrites the layers run; all off is the stock ops (`STOCK`), every one of `LEVERS` on is `COMPILED`."""

    instance_norm: bool = False  # mean and variance written out: stays in channels_last (run 11)
    norm_bands: bool = False  # with instance_norm: statistics per row band; 1.9% less GPU time, not kept (run 31)
    fold_pad: bool = False  # reflection padding with a backward of slices and adds (run 14)
    # with fold_pad: the padded output keeps a channels_last input's layout in the traced graph (run 42)
    pad_layout: bool = False
    pad_channels: bool = False  # conv channels zero-padded to multiples of 8 (run 14)
    space_to_depth: bool = False  # thin full-resolution convs on 2x2 pixel blocks (run 15)
    upsample: bool = False  # bilinear x2 written out as its stencil (run 14)

    def without(self, levers: Sequence[str]) -> Kernels:
        """These kernels with the named levers (of `LEVERS`) turned off."""
        return dataclasses.replace(self, **dict.fromkeys(_known(levers, LEVERS), False))

    def with_levers(self, levers: Sequence[str]) -> Kernels:
        """These kernels with the named levers (of `LEVERS` or `TRIED_LEVERS`) turned on."""
        return dataclasses.replace(self, **dict.fromkeys(_known(levers, LEVERS + TRIED_LEVERS), True))

    @property
    def name(self) -> str:
        """'stock', 'compiled', or 'compiled-without-<levers>+<tried levers>': what the run records."""
        off = [lever for lever in LEVERS if not getattr(self, lever)]
        tried = "".join(f"+{lever}" for lever in TRIED_LEVERS if getattr(self, lever))
        if len(off) == len(LEVERS):
            return "stock" + tried
        return "compiled" + (f"-without-{','.join(off)}" if off else "") + tried


def _known(levers: Sequence[str], allowed: tuple[str, ...]) -> Sequence[str]:
    """`levers`, or a ValueError naming those not in `allowed`."""
    unknown = set(levers) - set(allowed)
    if unknown:
        raise ValueError(f"unknown kernel levers {sorted(unknown)}; expected some of {list(allowed)}")
    return levers


STOCK = Kernels()
COMPILED = Kernels(instance_norm=True, fold_pad=True, pad_channels=True, space_to_depth=True, upsample=True)
CHANNEL_MULTIPLE = 8  # cuDNN's NHWC kernels want channel counts that are multiples of 8


def instance_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """`F.instance_norm` without affine or running stats, as a mean and variance over (H, W) in >= float32.

    `F.instance_norm` reshapes to (1, N*C, H, W) for a batch norm, which forces NCHW: with
    channels_last activations every norm cost a layout copy each way (the compiled step's
    largest kernel, run 11). Written out, the norm keeps the layout and fuses with its neighbours.
    """
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
    return ((xf - mean) * torch.rsqrt(var + eps)).to(x.dtype)


NORM_BAND_PIXELS = 4096  # pixels per partial statistic of `instance_norm_banded`


def norm_bands(height: int, width: int) -> int:
    """Row bands for one image's norm statistics: about NORM_BAND_PIXELS each, a divisor of `height`."""
    bands = max(1, height * width // NORM_BAND_PIXELS)
    while height % bands:
        bands -= 1
    return bands


def instance_norm_banded(x: torch.Tensor, eps: float) -> torch.Tensor:
    """`instance_norm` with its statistics, forward and backward, reduced per band of rows first.

    A (sample, channel) pair is one reduction over H x W: 384 reductions of 65,536 pixels for a
    16-channel batch of 24 at 256 px, too few to fill the GPU. Per band of rows there are
    `norm_bands(H, W)` times as many, each over about NORM_BAND_PIXELS pixels; the bands' means and
    variances combine exactly (equal band sizes: the variance is the bands' mean variance plus the
    variance of their means). The statistics are broadcast back per band, so autograd's reductions
    in the backward are per band too.
    """
    n, c, h, w = x.shape
    bands = norm_bands(h, w)
    if bands == 1:
        return instance_norm(x, eps)
    # Splitting H is a view in either memory format; the float copy keeps the input's layout.
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).view(n, c, bands, h // bands, w)
    band_var, band_mean = torch.var_mean(xf, dim=(3, 4), keepdim=True, correction=0)
    mean = band_mean.mean(dim=2, keepdim=True)
    var = band_var.mean(dim=2, keepdim=True) + (band_mean - mean).square().mean(dim=2, keepdim=True)
    per_band = (n, c, bands, 1, 1)
    y = (xf - mean.expand(per_band)) * torch.rsqrt(var + eps).expand(per_band)
    return y.view(n, c, h, w).to(x.dtype)


def reflection_pad_folded(x: torch.Tensor, pad: int, keep_layout: bool = False) -> torch.Tensor:
    """Reflection padding by `pad` on every side, whose backward folds the border back (see below).

    `keep_layout`: a channels_last input gives a channels_last output. Reflection padding's meta
    function, which sets the strides a compiled graph records, returns NCHW; the compiled backward
    then hands cuDNN's conv backward an NCHW padded input, which ATen copies to channels_last inside
    every such conv's backward (benchmarks/NOTES.md run 42: 2 ms of a 256 px step). Same values.
    """
    return _ReflectionPad2dFolded.apply(x, pad, keep_layout)


class _ReflectionPad2dFolded(torch.autograd.Function):
    """Reflection padding whose backward folds the mirrored border back with slices and adds.

    Inductor's own backward of `reflection_pad2d` writes its result in NCHW and copies it
    back to channels_last; slices, flips and adds keep the gradient's layout and fuse into
    one pointwise kernel. Measured alone it bought 1.01x (benchmarks/NOTES.md run 14: the
    cost named "pad backward" was the upsampling's scatter fused with it, see `Upsample2x`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: int, keep_layout: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.pad = pad
        y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return _keep_layout(y, x) if keep_layout else y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return _fold_reflected(_fold_reflected(grad, ctx.pad, dim=3), ctx.pad, dim=2), None, None


def _fold_reflected(grad: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """The gradient of reflect-padding by `pad` along `dim` (2 or 3): the centre plus each mirrored border."""
    n = grad.shape[dim] - 2 * pad  # the unpadded length; border row i (< pad) is input row pad - i
    centre = grad.narrow(dim, pad, n)
    low = grad.narrow(dim, 0, pad).flip(dim)  # lands on input rows 1 .. pad
    high = grad.narrow(dim, pad + n, pad).flip(dim)  # lands on input rows n - 1 - pad .. n - 2
    spread = (0, 0) if dim == 2 else ()
    return centre + F.pad(low, (*spread, 1, n - 1 - pad)) + F.pad(high, (*spread, n - 1 - pad, 1))



def conv2d_padded_channels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, multiple: int = CHANNEL_MULTIPLE,
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
                        channel_multiple: int = CHANNEL_MULTIPLE, channels_last: bool = False) -> torch.Tensor:
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



def upsample2x_stencil(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 (align_corners=False) as its fixed stencil, forward and backward one gather each.

    Each output row is 0.75 of its nearest input row plus 0.25 of the next nearest (edges
    clamped). Inductor lowers `F.interpolate`'s backward as an accumulating scatter
    (`index_put`, float32 atomics): in run 14's profile its kernels took about 14 ms of the step.
    """
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

