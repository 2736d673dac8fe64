"""Checks of params values at load: numbers in their ranges, regions and populations; one line naming the key.

Types are checked while the config is built (`geogan.config`); here each number is held
to what it means: sizes, steps and intervals are positive, fractions and probabilities
lie in [0, 1], weights are not negative. `RANGES` lists every numeric key, and a test
fails on a numeric key that has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; open ends exclude the bound."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
BETA = Range(0, 1, high_open=True)  # Adam's moment coefficients, an EMA's decay: 1 would never move

RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE,
    "data.resolution": POSITIVE, "data.synthetic_identities": POSITIVE, "data.synthetic_images_per_identity": POSITIVE,
    "data.min_image_size": POSITIVE, "data.workers": POSITIVE,
    "landmarks.batch_size": POSITIVE,
    "split.test_fraction": FRACTION, "split.val_fraction": FRACTION, "split.max_per_domain": NON_NEGATIVE,
    "model.ngf": POSITIVE, "model.ndf": POSITIVE, "model.n_blocks": NON_NEGATIVE, "model.n_scales": POSITIVE,
    "model.flow_scale": POSITIVE, "model.local_ndf": NON_NEGATIVE,
    "loss.lambda_adv": NON_NEGATIVE, "loss.lambda_cls": NON_NEGATIVE, "loss.lambda_rec": NON_NEGATIVE,
    "loss.lambda_landmark": NON_NEGATIVE, "loss.lambda_tv": NON_NEGATIVE, "loss.lambda_mask": NON_NEGATIVE,
    "loss.refine_weight": NON_NEGATIVE, "loss.refine_start_step": NON_NEGATIVE, "loss.mask_warmup_steps": NON_NEGATIVE,
    "loss.lambda_local_adv": NON_NEGATIVE, "loss.lambda_local_cls": NON_NEGATIVE, "loss.lambda_mask_region": NON_NEGATIVE,
    "train.steps": POSITIVE, "train.batch_size": POSITIVE, "train.lr_g": POSITIVE, "train.lr_d": POSITIVE,
    "train.beta1": BETA, "train.beta2": BETA, "train.lr_decay_every": NON_NEGATIVE,
    "train.lr_decay_g": POSITIVE, "train.lr_decay_d": POSITIVE,
    "train.checkpoint_every": POSITIVE, "train.log_every": POSITIVE, "train.image_every": POSITIVE,
    "train.seed": NON_NEGATIVE, "train.ema_decay": BETA,
    "judge.width": POSITIVE, "judge.max_steps": POSITIVE, "judge.eval_every": POSITIVE, "judge.patience": POSITIVE,
    "judge.batch_size": POSITIVE, "judge.lr": POSITIVE, "judge.weight_decay": NON_NEGATIVE,
    "evaluate.sources": POSITIVE, "evaluate.references": POSITIVE, "evaluate.bootstrap": POSITIVE,
    "evaluate.batch_size": POSITIVE, "evaluate.kid_subsets": POSITIVE, "evaluate.copy_paste_feather": NON_NEGATIVE,
    "promote.min_transfer_success": FRACTION, "promote.max_kid_vs_copy_paste": POSITIVE,
    "promote.min_identity_kept": FRACTION, "promote.max_landmark_error": NON_NEGATIVE,
}


def range_errors(cfg: Any, source: str) -> list[str]:
    """One message per value outside its range, naming the key (keys the config lacks are skipped)."""
    errors = []
    for key, allowed in RANGES.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part, None)
        if isinstance(node, (int, float)) and not isinstance(node, bool) and not allowed.holds(node):
            errors.append(f"{source}: '{key}' must be {allowed}, got {node!r}")
    return errors


def region_errors(cfg: Any, source: str) -> list[str]:
    """Every attribute needs a region of valid landmark points, two margins and two crop fractions."""
    errors = [f"{source}: 'regions' has no entry for attribute '{attribute}' (has {sorted(cfg.regions)}); "
              "give its landmark points, margin and crop" for attribute in cfg.attributes if attribute not in cfg.regions]
    for name, region in cfg.regions.items():
        key = f"regions.{name}"
        if len(region.points) < 2 or any(not 0 <= p < 68 for p in region.points):
            errors.append(f"{source}: '{key}.points' must list at least 2 iBUG-68 indices in [0, 67], got {list(region.points)}")
        if len(region.margin) != 2 or any(m < 0 for m in region.margin):
            errors.append(f"{source}: '{key}.margin' must be two non-negative numbers, got {list(region.margin)}")
        if len(region.crop) != 2 or any(not 0 < c <= 1 for c in region.crop):
            errors.append(f"{source}: '{key}.crop' must be two fractions in (0, 1], got {list(region.crop)}")
    return errors


def population_errors(cfg: Any, source: str) -> list[str]:
    """Population mappings name listed attributes and their expressions parse (columns: checked by the split)."""
    from geogan.data.population import PopulationError, parse_population

    keyed = {"split.populations": cfg.split.populations, "split.match": cfg.split.match,
             "evaluate.populations": cfg.evaluate.populations, "judge.confusions": cfg.judge.confusions}
    errors = [f"{source}: '{key}.{attribute}': not one of the attributes {list(cfg.attributes)}"
              for key, mapping in keyed.items() for attribute in mapping if attribute not in cfg.attributes]
    for key in ("split.populations", "evaluate.populations"):
        for attribute, expr in keyed[key].items():
            try:
                parse_population(expr)
            except PopulationError as e:
                errors.append(f"{source}: '{key}.{attribute}': {e}")
    return errors
