"""GeoGAN's networks and `build_nets`, the one place they are constructed and initialised."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from geogan.config import ModelConfig
from geogan.nets.discriminator import Discriminator
from geogan.nets.fast_ops import COMPILED, STOCK, Kernels
from geogan.nets.flow import HEATMAP_CHANNELS, FlowNet, landmark_heatmaps, sample_at, warp
from geogan.nets.generator import CycleOutputs, Generator, TransferOutputs
from geogan.nets.layers import use_kernels

FLOW_INPUTS = ("rgb", "rgb+landmarks")
INIT_STD = 0.02
FLOW_OUT_STD = 1e-3

__all__ = [
    "COMPILED", "CycleOutputs", "Discriminator", "FLOW_INPUTS", "FlowNet", "Generator", "HEATMAP_CHANNELS", "Kernels", "Nets", "STOCK",
    "TransferOutputs", "build_nets", "count_parameters", "flow_extra_channels", "init_weights",
    "landmark_heatmaps", "sample_at", "warp",
]


@dataclass
class Nets:
    """The trainable networks."""

    generator: Generator
    discriminator: Discriminator


def flow_extra_channels(flow_inputs: str) -> int:
    """Extra flow-net input channels for the `model.flow_inputs` option."""
    if flow_inputs == "rgb":
        return 0
    if flow_inputs == "rgb+landmarks":
        return HEATMAP_CHANNELS
    raise ValueError(f"flow_inputs must be one of {list(FLOW_INPUTS)}, got {flow_inputs!r}")


def init_weights(module: nn.Module, std: float = INIT_STD) -> None:
    """Every conv weight ~ N(0, std), every bias 0 (pix2pix/CycleGAN init), in module order.

    The reference kept PyTorch's default init; with InstanceNorm after nearly every conv
    the scale hardly matters, and a fixed rule keeps runs comparable across versions.
    Draws from the global torch RNG, so `torch.manual_seed` makes it deterministic.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_nets(model: ModelConfig, kernels: Kernels = STOCK) -> Nets:
    """Build and initialise the generator and the discriminator of the `model` section.

    All convs are N(0, 0.02) except the flow head's last conv, N(0, 1e-3): training starts
    from a near-identity warp (flow of about 0.1 px) without zeroing the gradients that
    reach the rest of the flow net. Call `torch.manual_seed` first for identical weights.

    Args:
        model: network sizes (ngf, ndf, n_blocks, n_scales, flow_scale, flow_inputs, local_ndf).
        kernels: which layer kernels run: `STOCK` (eager) or `COMPILED` (exact rewrites that
            compile to faster kernels, `geogan.nets.fast_ops`); the weights are the same.
    Returns:
        Nets(generator, discriminator) on the CPU, in training mode.
    """
    generator = Generator(model.ngf, model.n_blocks, flow_scale=model.flow_scale,
                          flow_extra_in=flow_extra_channels(model.flow_inputs))
    discriminator = Discriminator(model.ndf, model.n_scales, local_ndf=model.local_ndf)
    init_weights(generator)
    nn.init.normal_(generator.flow.out_conv.weight, 0.0, FLOW_OUT_STD)
    init_weights(discriminator)
    for net in (generator, discriminator):
        use_kernels(net, kernels)
    return Nets(generator=generator, discriminator=discriminator)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

