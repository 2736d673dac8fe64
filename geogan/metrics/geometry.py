"""Per-pair geometry, region and pixel figures: where the flow puts the reference's landmarks, where the mask sits, what else changed."""

from __future__ import annotations

import torch

from geogan.nets.flow import sample_at

LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
PSNR_CAP_DB = 100.0  # the PSNR of identical images (a finite number keeps means and intervals finite)


def interocular(lm_px: torch.Tensor) -> torch.Tensor:
    """Distance between the eye centres, (B, 68, 2) -> (B,), in the landmarks' own units."""
    return (lm_px[:, LEFT_EYE].mean(1) - lm_px[:, RIGHT_EYE].mean(1)).norm(dim=-1)


def warped_landmark_error(flow_ab: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor) -> torch.Tensor:
    """Landmark error of the warped reference b' against the source a, per sample.

    b' = b sampled at (p + flow(p)), so b's landmark p_b appears in b' at the p_a where
    p_a + flow(p_a) = p_b. The error is ||p_a + flow(p_a) - p_b|| averaged over the 68
    points and divided by a's inter-ocular distance (both in the same units, so the
    normalisation is resolution-free).

    Args:
        flow_ab: (B, 2, H, W) flow in [-1, 1] grid units.
        lm_a, lm_b: (B, 68, 2) landmarks in [-1, 1].
    Returns:
        (B,) normalised mean error; 0 is a perfect geometric alignment.
    """
    carried = lm_a + sample_at(flow_ab, lm_a)
    err = (carried - lm_b).norm(dim=-1).mean(1)
    return err / interocular(lm_a).clamp_min(1e-6)


def unwarped_landmark_error(lm_a: torch.Tensor, lm_b: torch.Tensor) -> torch.Tensor:
    """The same error with no flow at all: the pose gap the flow has to close."""
    return (lm_a - lm_b).norm(dim=-1).mean(1) / interocular(lm_a).clamp_min(1e-6)


def mask_in_region(mask: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of the mask's mass inside the region, per sample; NaN where the mask is empty (no mass to place).

    Args:
        mask: (B, 1, H, W) in [0, 1].
        region: (B, 1, H, W) 0/1 (e.g. `regions.box_mask` of the attribute's landmark box).
    """
    mass = mask.float().sum((1, 2, 3))
    inside = (mask.float() * region.float()).sum((1, 2, 3))
    return torch.where(mass > 0, inside / mass.clamp_min(1e-12), torch.full_like(mass, float("nan")))


def change_outside(x_a: torch.Tensor, x_out: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean |a - a*| (in [0, 1] intensity units) over the pixels outside the region, per sample.

    The region is the attribute's landmark box, not the model's own mask: a mask on the
    forehead that changes the forehead is caught here.
    """
    outside = 1 - region.float()  # (B, 1, H, W)
    diff = (x_a.float() - x_out.float()).abs().mean(1, keepdim=True) / 2
    return (diff * outside).sum((1, 2, 3)) / outside.sum((1, 2, 3)).clamp_min(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), per sample; identical images give PSNR_CAP_DB."""
    mse = ((x.float() - y.float()) ** 2).mean((1, 2, 3))
    return 10 * torch.log10(4.0 / mse.clamp_min(4.0 * 10 ** (-PSNR_CAP_DB / 10)))


def region_l1(x: torch.Tensor, y: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean |x - y| (in [0, 1] units) inside a (B, 1, H, W) region in [0, 1], per sample."""
    diff = (x.float() - y.float()).abs().mean(1, keepdim=True) / 2
    return (diff * region).sum((1, 2, 3)) / region.sum((1, 2, 3)).clamp_min(1e-6)
