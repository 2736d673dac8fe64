"""The two baselines every model is scored beside, and the output bundle every method returns.

- *do-nothing*: a* = a and F(b) = b, mask empty, no flow: what any model must beat.
- *copy-paste*: b's attribute region aligned to a by a least-squares similarity on the region's
  landmarks (Umeyama), pasted with a fixed feathered mask of a's landmark region; removal pastes
  a's region into b the same way. A model that does not beat it is not doing GeoGAN's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geogan.landmarks.regions import attribute_box, eye_axis, soft_box_mask
from geogan.nets.flow import identity_grid, warp


@dataclass(frozen=True)
class MethodOutputs:
    """What a method (a generator or a baseline) makes of a batch of pairs, all in [-1, 1] unless said."""

    x_warp: torch.Tensor  # (B, 3, S, S) b in a's geometry
    mask: torch.Tensor  # (B, 1, S, S) in [0, 1]: where a* takes b'
    x_out: torch.Tensor  # (B, 3, S, S) a*
    flow: torch.Tensor  # (B, 2, S, S) grid units: b' = b sampled at p + flow(p)
    x_removed: torch.Tensor  # (B, 3, S, S) F(b)


def do_nothing(x_a: torch.Tensor, x_b: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor) -> MethodOutputs:
    """a* = a, F(b) = b."""
    b, _, h, w = x_a.shape
    return MethodOutputs(x_warp=x_b, mask=x_a.new_zeros(b, 1, h, w), x_out=x_a, flow=x_a.new_zeros(b, 2, h, w),
                         x_removed=x_b)


def similarity(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The least-squares similarity (scale, rotation, shift; no reflection) taking points p to q (Umeyama 1991).

    Args:
        p, q: (B, K, 2) corresponding points, K >= 2.
    Returns:
        (B, 2, 3) affine matrices [s R | t] with s R p + t ~ q.
    """
    p, q = p.double(), q.double()
    mu_p, mu_q = p.mean(1, keepdim=True), q.mean(1, keepdim=True)
    pc, qc = p - mu_p, q - mu_q
    cov = qc.transpose(1, 2) @ pc / p.shape[1]  # (B, 2, 2)
    u, sv, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    sign = torch.stack([torch.ones_like(d), d], -1)  # (B, 2)
    rot = u @ torch.diag_embed(sign) @ vt
    scale = (sv * sign).sum(-1) / pc.pow(2).sum((1, 2)).div(p.shape[1]).clamp_min(1e-12)
    a = scale.view(-1, 1, 1) * rot
    t = mu_q.transpose(1, 2) - a @ mu_p.transpose(1, 2)  # (B, 2, 1)
    return torch.cat([a, t], dim=2).float()


def apply_affine(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Affine maps theta (B, 2, 3) applied to points (B, K, 2): A p + t."""
    return points @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)


def affine_flow(theta: torch.Tensor, size: int) -> torch.Tensor:
    """The flow (B, 2, S, S) that samples at theta(p): flow(p) = A p + t - p, in grid units."""
    grid = identity_grid(theta.shape[0], size, size, theta.device).flatten(1, 2)  # (B, S*S, 2) as (x, y)
    return (apply_affine(theta, grid) - grid).view(-1, size, size, 2).permute(0, 3, 1, 2)


def _paste(x_to: torch.Tensor, x_from: torch.Tensor, lm_to: torch.Tensor, lm_from: torch.Tensor,
           points: tuple[int, ...], margin: tuple[float, float], feather: float) -> tuple[torch.Tensor, ...]:
    """x_from's region aligned onto x_to and pasted: (flow, warped, mask, result)."""
    flow = affine_flow(similarity(lm_to[:, list(points)], lm_from[:, list(points)]), x_to.shape[-1])
    warped = warp(x_from, flow)
    _, _, iod = eye_axis(lm_to.float())
    mask = soft_box_mask(attribute_box(lm_to, points, margin), x_to.shape[-1], feather * iod)
    return flow, warped, mask, mask * warped + (1 - mask) * x_to


def copy_paste(x_a: torch.Tensor, x_b: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor, points: tuple[int, ...],
               margin: tuple[float, float], feather: float) -> MethodOutputs:
    """b's region similarity-aligned onto a (a*), and a's region onto b (F(b)).

    Args:
        x_a, x_b: (B, 3, S, S) sources and references in [-1, 1].
        lm_a, lm_b: (B, 68, 2) their landmarks in [-1, 1].
        points, margin: the attribute's landmark region (`params.yaml` regions).
        feather: the mask fades to 0 over this many inter-ocular distances inside the region's edge.
    """
    flow, x_warp, mask, x_out = _paste(x_a, x_b, lm_a, lm_b, points, margin, feather)
    *_, x_removed = _paste(x_b, x_a, lm_b, lm_a, points, margin, feather)
    return MethodOutputs(x_warp=x_warp, mask=mask, x_out=x_out, flow=flow, x_removed=x_removed)
