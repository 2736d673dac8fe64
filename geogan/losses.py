"""GeoGAN's losses as pure functions, and the two helpers that weight them in one place.

Every term is a scalar float32 tensor (even under bf16 autocast) and never calls `.item()`, so
nothing here waits on the device. Terms are batch means; the helpers multiply by the number of
image roles the reference sums over (four fakes, two reals, two reconstructions, two flows, two
masks), so the same `lambda_*` values give the reference's balance of terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geogan.nets.flow import sample_at
from geogan.nets.generator import CycleOutputs

# One discriminator output per scale: (patch map (B, 1, h, w), domain logit (B,)).
DOutputs = Sequence[tuple[torch.Tensor, torch.Tensor]]

LOSS_NAMES_G = ("adv", "cls", "rec", "landmark", "tv", "mask")  # always; plus local_adv, local_cls, mask_region when on
LOSS_NAMES_D = ("adv", "cls")  # plus local_adv, local_cls with the local discriminator
N_FAKE_ROLES = 4  # x_out, x_removed, x_rec_b, x_rec_a, concatenated in this order
FAKE_DOMAINS = (1.0, 0.0, 1.0, 0.0)  # their target domains: 1 = has the attribute (built on the device below)


def adv_loss_d(patches_real: Sequence[torch.Tensor], patches_fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN loss of D, summed over scales: 0.5 mean (D(real) - 1)^2 + 0.5 mean D(fake)^2."""
    loss = torch.zeros((), device=patches_real[0].device)
    for real, fake in zip(patches_real, patches_fake, strict=True):
        loss = loss + 0.5 * (real.float() - 1.0).pow(2).mean() + 0.5 * fake.float().pow(2).mean()
    return loss


def adv_loss_g(patches_fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN loss of G, summed over scales: mean (D(fake) - 1)^2."""
    loss = torch.zeros((), device=patches_fake[0].device)
    for fake in patches_fake:
        loss = loss + (fake.float() - 1.0).pow(2).mean()
    return loss


def cls_loss(logits: Sequence[torch.Tensor], target: float | torch.Tensor) -> torch.Tensor:
    """Domain-classification BCE (with logits, for stability), summed over scales.

    Args:
        logits: per scale, (B,) logits of "has the attribute".
        target: a float for the whole batch, or a (B,) tensor of 0/1 labels.
    """
    loss = torch.zeros((), device=logits[0].device)
    for logit in logits:
        logit = logit.float()
        tgt = target.to(logit) if isinstance(target, torch.Tensor) else torch.full_like(logit, float(target))
        loss = loss + F.binary_cross_entropy_with_logits(logit, tgt)
    return loss


def rec_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reconstruction: mean |x - y|."""
    return (x.float() - y.float()).abs().mean()


def landmark_loss(flow_ab: torch.Tensor, lm_a_norm: torch.Tensor, lm_b_norm: torch.Tensor, size: int,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """The flow must carry a's landmarks onto b's: flow(p_a) = p_b - p_a.

    Exactly: size * mean over (valid) points and both coordinates of
    (flow_ab sampled bilinearly at p_a - (p_b - p_a))^2, all in [-1, 1] grid units.
    The reference computes 256 * MSE (hard-coded 256, its training size); at 256 px this
    is the same number, and `lambda_landmark` = 10 is its outer weight.

    Args:
        flow_ab: (B, 2, H, W) flow in grid units.
        lm_a_norm, lm_b_norm: (B, 68, 2) landmarks in [-1, 1].
        size: image size in pixels.
        valid: optional (B, 68) bool; False points (e.g. NaN, not detected) are ignored.
    """
    lm_a, lm_b = lm_a_norm.float(), lm_b_norm.float()
    if valid is not None:
        keep = valid.unsqueeze(-1) & torch.isfinite(lm_a) & torch.isfinite(lm_b)  # (B, 68, 2)
        lm_a = torch.where(keep, lm_a, torch.zeros_like(lm_a))
        lm_b = torch.where(keep, lm_b, torch.zeros_like(lm_b))
    err = (sample_at(flow_ab, lm_a) - (lm_b - lm_a)).pow(2)  # (B, 68, 2)
    if valid is None:
        return size * err.mean()
    w = keep.float()
    return size * (err * w).sum() / w.sum().clamp_min(1.0)


def tv_loss(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Flow smoothness: mean squared x- plus y-differences of flow * size (0 for a constant flow).

    The reference clamps each squared gradient at 1e-3 from below, which only adds a
    constant and zeroes small gradients; we leave it out.
    """
    f = flow.float() * size
    dx = f[..., :, 1:] - f[..., :, :-1]
    dy = f[..., 1:, :] - f[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def mask_loss(mask: torch.Tensor) -> torch.Tensor:
    """Mask sparsity: mean |m| (L1 towards 0)."""
    return mask.float().abs().mean()


def _weighted_total(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    total = torch.zeros((), device=next(iter(losses.values())).device)
    for name, value in losses.items():
        key = f"lambda_{name}"
        if key not in weights:
            raise KeyError(f"loss weights: missing '{key}' (have {sorted(weights)})")
        total = total + float(weights[key]) * value
    return total


def _logs(losses: dict[str, torch.Tensor], total: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    logs = {f"{prefix}/{k}": v.detach() for k, v in losses.items()}
    logs[f"{prefix}/total"] = total.detach()
    return logs


def weigh(losses: dict[str, torch.Tensor], weights: dict[str, float], prefix: str,
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total of unweighted terms, and the detached logs `<prefix>/<name>` + `<prefix>/total`.

    Kept apart from the terms so the terms can run compiled while the weights (which
    change during warm-ups) stay plain floats outside the graph: no recompilation.
    """
    total = _weighted_total(losses, weights)
    return total, _logs(losses, total, prefix)


def generator_losses(out: CycleOutputs, d_fake: DOutputs, n: int, lm_a: torch.Tensor, lm_b: torch.Tensor,
                     size: int, weights: dict[str, float], lm_valid: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's weighted objective over the whole cycle (`generator_loss_terms`, weighted).

    Args:
        out: the generator's CycleOutputs (it carries the real x_a, x_b: reconstruction targets).
        d_fake: D's outputs on cat([x_out, x_removed, x_rec_b, x_rec_a]) (4n images, that order).
        n: pairs in the batch.
        lm_a, lm_b: (n, 68, 2) landmarks of a and b in [-1, 1].
        size: image size in pixels.
        weights: `lambda_<name>` for every name in LOSS_NAMES_G.
        lm_valid: optional (n, 68) bool of landmarks to use.
    Returns:
        (weighted total, {"g/<name>": unweighted detached tensor, ..., "g/total": ...}).
    """
    return weigh(generator_loss_terms(out, d_fake, n, lm_a, lm_b, size, lm_valid), weights, "g")


def generator_loss_terms(out: CycleOutputs, d_fake: DOutputs, n: int, lm_a: torch.Tensor, lm_b: torch.Tensor,
                         size: int, lm_valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """G's unweighted terms, one per name in LOSS_NAMES_G (arguments as `generator_losses`)."""
    patches = [p for p, _ in d_fake]
    logits = [c for _, c in d_fake]
    # Built on the device from the pattern (1, 0, 1, 0): a torch.tensor(...) here would be a
    # host-to-device copy, which waits for the device, in every step.
    roles = torch.arange(N_FAKE_ROLES * n, device=logits[0].device) // n
    domains = (roles % 2 == 0).float()  # (4n,) target domains of x_out, x_removed, x_rec_b, x_rec_a
    losses = {
        "adv": N_FAKE_ROLES * adv_loss_g(patches),
        "cls": N_FAKE_ROLES * cls_loss(logits, domains),
        "rec": rec_loss(out.x_rec_a, out.x_a) + rec_loss(out.x_rec_b, out.x_b),
        "landmark": landmark_loss(out.flow_ab, lm_a, lm_b, size, lm_valid),
        "tv": tv_loss(out.flow_ab, size) + tv_loss(out.flow_rec, size),
        "mask": mask_loss(out.mask) + mask_loss(out.mask_rec),
    }
    return losses


def local_generator_terms(d_local: tuple[torch.Tensor, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """G's terms from the local discriminator on the four fakes' region crops (same roles as the global D).

    Args:
        d_local: (patch map (4n, 1, h, w), domain logit (4n,)) on the crops of cat([x_out, x_removed, x_rec_b, x_rec_a]).
        n: pairs in the batch.
    """
    patch, logit = d_local
    roles = torch.arange(N_FAKE_ROLES * n, device=logit.device) // n
    domains = (roles % 2 == 0).float()  # x_out and x_rec_b should have the attribute, the others not
    return {"local_adv": N_FAKE_ROLES * adv_loss_g([patch]), "local_cls": N_FAKE_ROLES * cls_loss([logit], domains)}


def discriminator_losses(d_all: DOutputs, n_real_a: int, n_real_b: int, n_fake: int, weights: dict[str, float],
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's weighted objective on one forward over cat([x_a, x_b, fakes]).

    Real a is classified "no attribute" (0), real b "has it" (1); fakes only enter the
    LSGAN term (detach them before D's forward). Role counts as the reference: two real
    terms and four fake terms at 0.5 each, i.e. 4 x `adv_loss_d`; two real cls terms.

    Args:
        d_all: D's outputs on the concatenation (n_real_a + n_real_b + n_fake images).
        n_real_a, n_real_b, n_fake: how many of each, in that order.
        weights: `lambda_adv` and `lambda_cls`.
    Returns:
        (weighted total, {"d/adv": ..., "d/cls": ..., "d/total": ...} detached tensors).
    """
    return weigh(discriminator_loss_terms(d_all, n_real_a, n_real_b, n_fake), weights, "d")


def discriminator_loss_terms(d_all: DOutputs, n_real_a: int, n_real_b: int, n_fake: int) -> dict[str, torch.Tensor]:
    """D's unweighted terms, one per name in LOSS_NAMES_D (arguments as `discriminator_losses`)."""
    n_real = n_real_a + n_real_b
    patches_real = [p[:n_real] for p, _ in d_all]
    patches_fake = [p[n_real:n_real + n_fake] for p, _ in d_all]
    logits_real = [c[:n_real] for _, c in d_all]
    device = logits_real[0].device
    labels = torch.cat([torch.zeros(n_real_a, device=device), torch.ones(n_real_b, device=device)])
    losses = {
        "adv": 4.0 * adv_loss_d(patches_real, patches_fake),
        "cls": 2.0 * cls_loss(logits_real, labels),
    }
    return losses
