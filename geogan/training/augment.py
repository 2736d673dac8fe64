"""Differentiable augmentation of everything the discriminator sees (DiffAugment, Zhao et al., NeurIPS 2020).

With a few dozen images of a domain, D memorises the real set and its domain head stops telling
G anything; the same random, differentiable transforms on every image D sees (real and fake, in
both updates) prevent that while G's gradients pass through. Draws come from torch's RNG on the
device (checkpointed, so resume stays exact). Policies (`train.d_augment`): `color`,
`translation` (up to 1/8 of the image), `cutout` (half the side, optionally sparing the region).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

def diff_augment(x: torch.Tensor, policy: tuple[str, ...], spare: torch.Tensor | None = None) -> torch.Tensor:
    """Augment a batch (B, C, H, W) in [-1, 1]; each image gets its own draw. Identity when `policy` is empty.

    Args:
        x: the images.
        policy: the transforms, in order.
        spare: optional (B, 1, H, W) 0/1 region that cutout leaves untouched (a small attribute it
            would otherwise erase while its label stays); cutout then runs before any translation,
            so the region is where the landmarks say.
    """
    if spare is not None and "cutout" in policy:
        policy = tuple(p for p in policy if p != "translation") + (("translation",) if "translation" in policy else ())
    for name in policy:
        x = _cutout(x, spare=spare) if name == "cutout" else _AUGMENTS[name](x)
    return x


def _uniform(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=torch.float32).to(x.dtype) * (hi - lo) + lo


def _color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)  # brightness: +-0.5 in [-1, 1] units, half of DiffAugment's +-0.5 on [0, 1]
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    # Whole-pixel shifts through an affine grid (nearest, zero padding): one kernel, differentiable in x.
    # Built from Python scalars only: a torch.tensor([...], device=cuda) would be a blocking host copy.
    max_x, max_y = int(w * ratio + 0.5), int(h * ratio + 0.5)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = torch.randint(-max_x, max_x + 1, (b,), device=x.device) * (2.0 / w)
    theta[:, 1, 2] = torch.randint(-max_y, max_y + 1, (b,), device=x.device) * (2.0 / h)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, ratio: float = 0.5, spare: torch.Tensor | None = None) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() * 2 < ch) & ((xs - cx).abs() * 2 < cw)  # (B, H, W)
    keep = (~inside).unsqueeze(1).to(x.dtype)
    if spare is not None:
        keep = torch.maximum(keep, spare.to(x.dtype))
    return x * keep


_AUGMENTS = {"color": _color, "translation": _translation, "cutout": _cutout}
