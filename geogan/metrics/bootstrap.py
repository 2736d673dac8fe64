"""95% intervals by a two-way bootstrap over sources and references, and the estimate they belong to.

The evaluation set crosses S sources with R references, so pairs sharing a source (or a
reference) are not independent: resampling pairs would understate the uncertainty. Each
replicate draws S sources and R references with replacement; a pair counts as often as its
source times its reference was drawn. Every metric of every method reuses the same replicates,
so the model and the baselines are compared on the same resampled sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric's value, its 95% interval (NaN when it has none) and the sample count it rests on."""

    value: float
    lo: float
    hi: float
    n: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resamples:
    """Bootstrap replicates: how often each source and each reference was drawn."""

    src: np.ndarray  # (B, S) counts
    ref: np.ndarray  # (B, R) counts


def draw_resamples(n_sources: int, n_references: int, replicates: int, seed: int) -> Resamples:
    """`replicates` draws of S sources and R references with replacement (seeded)."""
    rng = np.random.default_rng([seed, 16])
    src = rng.multinomial(n_sources, np.full(n_sources, 1 / n_sources), size=replicates)
    ref = rng.multinomial(n_references, np.full(n_references, 1 / n_references), size=replicates)
    return Resamples(src=src.astype(np.float64), ref=ref.astype(np.float64))


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    """The central 95% of the finite replicate values (NaN, NaN when there are none)."""
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(r, (1 - LEVEL) / 2)), float(np.quantile(r, 1 - (1 - LEVEL) / 2))


def pair_weights(resamples: Resamples, src_pos: np.ndarray, ref_pos: np.ndarray) -> np.ndarray:
    """(B, P) weight of every pair in every replicate: its source's count times its reference's."""
    return resamples.src[:, src_pos] * resamples.ref[:, ref_pos]


def pair_mean(values: np.ndarray, src_pos: np.ndarray, ref_pos: np.ndarray, resamples: Resamples,
              **extra: Any) -> Estimate:
    """Mean of a per-pair value over the finite pairs, with its two-way bootstrap interval.

    Args:
        values: (P,) per pair; NaN marks a pair where the metric is undefined (left out).
        src_pos, ref_pos: (P,) each pair's source and reference position in the evaluation set.
        resamples: the bootstrap replicates.
        extra: figures stored beside the estimate.
    Returns:
        Estimate with n = the number of finite pairs; value NaN when none is finite.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    ok = np.isfinite(v)
    if not ok.any():
        return Estimate(float("nan"), float("nan"), float("nan"), 0, dict(extra))
    w = pair_weights(resamples, src_pos[ok], ref_pos[ok])  # (B, P_ok)
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (w @ v[ok]) / total  # a replicate that drew no finite pair is NaN, left out
    lo, hi = percentile_interval(reps)
    return Estimate(float(v[ok].mean()), lo, hi, int(ok.sum()), dict(extra))


def unit_mean(values: np.ndarray, counts: np.ndarray, **extra: Any) -> Estimate:
    """Mean of a per-source (or per-reference) value, bootstrapped over those units alone.

    Args:
        values: (U,) per unit.
        counts: (B, U) the replicates' draws of the units (`Resamples.src` or `.ref`).
    """
    v = np.asarray(values, np.float64)
    reps = (counts @ v) / counts.sum(1)
    lo, hi = percentile_interval(reps)
    return Estimate(float(v.mean()), lo, hi, int(v.size), dict(extra))


def statistic_interval(statistic: Callable[[np.ndarray], float], resamples: Resamples, src_pos: np.ndarray,
                       ref_pos: np.ndarray) -> tuple[float, float]:
    """Interval of a statistic of pair weights (e.g. KID of the weighted outputs), one call per replicate.

    Args:
        statistic: maps (P,) pair weights (counts, summing to S x R) to a number.
    """
    w = pair_weights(resamples, src_pos, ref_pos)
    return percentile_interval(np.array([statistic(row) for row in w]))
