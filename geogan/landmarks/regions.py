"""Attribute regions anchored on the 68 landmarks: an oriented box in the face's own frame, as a mask or a crop.

The box is aligned with the eye axis, spans the chosen landmark points and is widened by
margins in units of the inter-ocular distance, so it follows the face's pose and scale.
Everything works in the [-1, 1] grid units of `geogan.nets.flow` (align_corners=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)  # iBUG-68: image-left eye, image-right eye


@dataclass(frozen=True)
class Box:
    """Oriented boxes, one per sample: centre, unit axes (along and across the eyes) and half-extents."""

    centre: torch.Tensor  # (B, 2)
    along: torch.Tensor  # (B, 2) unit vector from the image-left eye to the image-right eye
    across: torch.Tensor  # (B, 2) unit vector perpendicular to it, pointing down the face
    half: torch.Tensor  # (B, 2) half-extents along `along` and `across`


def eye_axis(lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 68, 2) landmarks -> (along (B, 2), across (B, 2), inter-ocular distance (B,))."""
    gap = lm[:, RIGHT_EYE].mean(1) - lm[:, LEFT_EYE].mean(1)
    iod = gap.norm(dim=-1).clamp_min(1e-6)
    along = gap / iod.unsqueeze(-1)
    across = torch.stack([-along[:, 1], along[:, 0]], dim=-1)  # +90 degrees: down when the eyes are level
    return along, across, iod


def attribute_box(lm: torch.Tensor, points: tuple[int, ...], margin: tuple[float, float]) -> Box:
    """The box around `points` in the eye-aligned frame, widened by `margin` x inter-ocular distance.

    Args:
        lm: (B, 68, 2) landmarks in [-1, 1] (finite).
        points: iBUG-68 indices that the attribute covers (e.g. brows and eyes for glasses).
        margin: (along, across) widening on each side, in inter-ocular distances.
    """
    lm = lm.float()
    along, across, iod = eye_axis(lm)
    sel = lm[:, list(points)]  # (B, P, 2)
    s = (sel * along.unsqueeze(1)).sum(-1)  # (B, P) coordinates in the eye-aligned frame
    t = (sel * across.unsqueeze(1)).sum(-1)
    s_lo, s_hi = s.min(1).values, s.max(1).values
    t_lo, t_hi = t.min(1).values, t.max(1).values
    widen = torch.tensor(margin, dtype=lm.dtype, device=lm.device) * iod.unsqueeze(-1)  # (B, 2)
    half = torch.stack([(s_hi - s_lo) / 2, (t_hi - t_lo) / 2], dim=-1) + widen
    centre = along * ((s_hi + s_lo) / 2).unsqueeze(-1) + across * ((t_hi + t_lo) / 2).unsqueeze(-1)
    return Box(centre=centre, along=along, across=across, half=half)


def box_mask(box: Box, size: int) -> torch.Tensor:
    """(B, 1, size, size) float mask: 1 inside the box, 0 outside (pixel centres tested)."""
    coords = torch.linspace(-1.0, 1.0, size, device=box.centre.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1).view(1, size, size, 2) - box.centre.view(-1, 1, 1, 2)
    s = (grid * box.along.view(-1, 1, 1, 2)).sum(-1).abs()
    t = (grid * box.across.view(-1, 1, 1, 2)).sum(-1).abs()
    inside = (s <= box.half[:, 0].view(-1, 1, 1)) & (t <= box.half[:, 1].view(-1, 1, 1))
    return inside.unsqueeze(1).float()


def box_crop(x: torch.Tensor, box: Box, out_hw: tuple[int, int]) -> torch.Tensor:
    """Resample each image's box to an upright (B, C, h, w) crop (bilinear, differentiable in x).

    The crop's x axis runs along the eyes and its y axis down the face, so a tilted face
    gives an upright crop.
    """
    # Output grid point (u, v) in [-1, 1]^2 maps to centre + u * half_s * along + v * half_t * across.
    theta = torch.stack([
        torch.stack([box.half[:, 0] * box.along[:, 0], box.half[:, 1] * box.across[:, 0], box.centre[:, 0]], -1),
        torch.stack([box.half[:, 0] * box.along[:, 1], box.half[:, 1] * box.across[:, 1], box.centre[:, 1]], -1),
    ], dim=1)  # (B, 2, 3)
    h, w = out_hw
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], h, w], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def crop_size(crop: tuple[float, float], size: int) -> tuple[int, int]:
    """A crop's (h, w) in pixels from its (h, w) fractions of the image size (at least 8 each)."""
    return max(8, round(crop[0] * size)), max(8, round(crop[1] * size))


def soft_box_mask(box: Box, size: int, feather: torch.Tensor) -> torch.Tensor:
    """(B, 1, size, size) mask: 1 inside the box shrunk by `feather`, fading linearly to 0 at its edge.

    Args:
        box: the boxes.
        size: the image size.
        feather: (B,) fade width in grid units (0 gives `box_mask` up to pixels on the edge).
    """
    coords = torch.linspace(-1.0, 1.0, size, device=box.centre.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1).view(1, size, size, 2) - box.centre.view(-1, 1, 1, 2)
    s = (grid * box.along.view(-1, 1, 1, 2)).sum(-1).abs()
    t = (grid * box.across.view(-1, 1, 1, 2)).sum(-1).abs()
    f = feather.float().clamp_min(1e-6).view(-1, 1, 1)
    inside_s = ((box.half[:, 0].view(-1, 1, 1) - s) / f).clamp(0, 1)
    inside_t = ((box.half[:, 1].view(-1, 1, 1) - t) / f).clamp(0, 1)
    return (inside_s * inside_t).unsqueeze(1)


@dataclass(frozen=True)
class RegionSpec:
    """What the training step needs of one attribute's region: points, margins and crop size in pixels."""

    points: tuple[int, ...]
    margin: tuple[float, float]
    crop_hw: tuple[int, int]

    @classmethod
    def from_config(cls, region: Any, size: int) -> "RegionSpec":
        """From a `regions.<attr>` config entry (`geogan.config.RegionConfig`) at an image size."""
        return cls(tuple(region.points), (float(region.margin[0]), float(region.margin[1])), crop_size(tuple(region.crop), size))


def outside_mass(mask: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean mask value outside a (B, 1, H, W) 0/1 region, over the batch (a scalar)."""
    return (mask.float() * (1.0 - region)).mean()
