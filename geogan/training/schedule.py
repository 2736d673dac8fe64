"""Schedules as pure functions of the step (so resuming at any step is exact)."""

from __future__ import annotations


def lr_at(step: int, base_lr: float, decay_every: int, decay: float) -> float:
    """Step decay: base_lr * decay ** (step // decay_every); constant when decay_every == 0."""
    if decay_every <= 0:
        return base_lr
    return base_lr * decay ** (step // decay_every)


def refine_weight_at(step: int, weight: float, start_step: int) -> float:
    """The refinement residual's weight w: off before `start_step` (the reference waits 10 epochs)."""
    return weight if step >= start_step else 0.0


def mask_weight_at(step: int, weight: float, warmup_steps: int) -> float:
    """lambda_mask ramped linearly from 0 over `warmup_steps`: the sparsity prior would otherwise drive
    the mask to 0 before D's domain head has learnt what the attribute looks like."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, step / warmup_steps)
