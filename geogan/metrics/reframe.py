"""Score a generator trained on another face framing on an evaluation set framed otherwise.

A CelebA-HQ model (whole 1024 px squares, trained at 256 px) and CelebA's evaluation sets (aligned crops at
128 px) frame faces differently. Each face is carried into the model's frame by the landmark similarity that
takes the model's mean landmarks onto its own, the model runs there, and what it returns is carried back, so
the judge, the regions and the landmarks measure it in the evaluation's frame. The round trip resamples
every pixel twice: score `reframed(do_nothing)` beside it for the floor that alone costs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from geogan.data.dataset import to_model_landmarks
from geogan.evaluation import Method
from geogan.metrics.baselines import MethodOutputs, similarity
from geogan.metrics.baselines import apply_affine as apply
from geogan.nets.flow import identity_grid, sample_at


def frame_template(landmarks_px: np.ndarray, size: int) -> torch.Tensor:
    """(68, 2) mean landmarks in [-1, 1] of a model's training faces ((N, 68, 2) pixels at `size`; NaN faces skipped)."""
    lm = np.asarray(landmarks_px, np.float64)
    keep = np.isfinite(lm).all(axis=(1, 2))
    if not keep.any():
        raise ValueError("frame_template: no face with all 68 landmarks")
    return to_model_landmarks(torch.from_numpy(lm[keep].mean(0)), size).float()


def invert(theta: torch.Tensor) -> torch.Tensor:
    """The inverse of affine maps (B, 2, 3)."""
    a_inv = torch.linalg.inv(theta[:, :, :2].double())
    return torch.cat([a_inv, -a_inv @ theta[:, :, 2:].double()], dim=2).float()


def resample(image: torch.Tensor, theta: torch.Tensor, size: int, padding: str = "border") -> torch.Tensor:
    """out(p) = image(theta(p)) on a size x size grid: theta maps the output's frame into the image's."""
    grid = apply(theta, identity_grid(image.shape[0], size, size, image.device).flatten(1, 2)).view(-1, size, size, 2)
    return F.grid_sample(image.float(), grid, mode="bilinear", padding_mode=padding, align_corners=True)


def fit_frames(template: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) similarities taking the template onto each face's landmarks, on its finite points alone.

    A face with fewer than two finite points (no detection) keeps the identity: its frame is taken as the model's.
    """
    tpl = template.to(landmarks).expand(len(landmarks), -1, -1)
    ok = torch.isfinite(landmarks).all(-1)  # (B, 68)
    theta = torch.eye(2, 3, device=landmarks.device).repeat(len(landmarks), 1, 1)
    whole = ok.all(-1)
    if whole.any():
        theta[whole] = similarity(tpl[whole], landmarks[whole])
    for i in torch.nonzero(~whole & (ok.sum(-1) >= 2)).flatten().tolist():  # rare: a few points missing
        theta[i] = similarity(tpl[i:i + 1, ok[i]], landmarks[i:i + 1, ok[i]])[0]
    return theta


def reframed(method: Method, template: torch.Tensor, size: int) -> Method:
    """`method` (working in the frame whose mean landmarks are `template`, at `size` px) as a method of this frame."""

    def into_model(x: torch.Tensor, lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        theta = fit_frames(template, lm)  # model frame -> this frame
        return resample(x, theta, size), apply(invert(theta), lm), theta

    def backwards(theta: torch.Tensor, s: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Carries model-frame images into this frame (s px); where the model's frame does not reach, `fill`."""
        inv = invert(theta)
        inside = resample(torch.ones(len(theta), 1, size, size, device=theta.device), inv, s, padding="zeros")
        return lambda y, fill: inside * resample(y, inv, s) + (1 - inside) * fill

    def run(x_a: torch.Tensor, x_b: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor) -> MethodOutputs:
        s = x_a.shape[-1]
        xa_m, la_m, th_a = into_model(x_a, lm_a)
        xb_m, lb_m, th_b = into_model(x_b, lm_b)
        out = method(xa_m, xb_m, la_m, lb_m)
        # The flow, point by point: p here -> P in a's model frame -> P + flow(P) in b's model frame -> b's frame here.
        grid = identity_grid(len(x_a), s, s, x_a.device).flatten(1, 2)  # (B, s*s, 2)
        p_model = apply(invert(th_a), grid)
        q_here = apply(th_b, p_model + sample_at(out.flow, p_model))
        flow = (q_here - grid).view(-1, s, s, 2).permute(0, 3, 1, 2)
        back_a, back_b = backwards(th_a, s), backwards(th_b, s)
        return MethodOutputs(x_warp=back_a(out.x_warp, x_a), mask=back_a(out.mask, torch.zeros_like(x_a[:, :1])),
                             x_out=back_a(out.x_out, x_a), flow=flow, x_removed=back_b(out.x_removed, x_b))

    standalone = getattr(method, "remove_standalone", None)
    if standalone is not None:
        def remove_standalone(x_b: torch.Tensor, lm_b: torch.Tensor) -> torch.Tensor:
            xb_m, lb_m, th_b = into_model(x_b, lm_b)
            return backwards(th_b, x_b.shape[-1])(standalone(xb_m, lb_m), x_b)

        run.remove_standalone = remove_standalone
    return run
