"""The metric registry: every figure the evaluation reports, registered by name (after stylegan3's metric_main).

A metric reads per-pair observations (`geogan.evaluation.collect`) and returns an `Estimate` (value, 95%
bootstrap interval, sample count); its name carries that count (`transfer_success_1000`, `judge_fp_100`), so
figures from sets of different sizes are never confused. Metrics whose observations were not collected (no
judge, FID off, no dlib, real faces without ground truth) are left out. docs/metrics.md: what each one means.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from geogan.metrics.bootstrap import Estimate, Resamples, pair_mean, pair_weights, percentile_interval, unit_mean

IDENTITY_THRESHOLD = 0.6  # dlib's same-person distance (99.38% on LFW)
KID_SUBSET_SIZE = 1000  # at most; capped by the smaller set


@dataclass(frozen=True)
class Context:
    """How the pairs are laid out, and the bootstrap replicates every metric shares."""

    src_pos: np.ndarray  # (P,) source position of each pair
    ref_pos: np.ndarray  # (P,) reference position of each pair
    resamples: Resamples
    kid_subsets: int = 100
    seed: int = 0


@dataclass(frozen=True)
class MetricSpec:
    name: str
    needs: tuple[str, ...]  # observation keys it reads
    fn: Callable[[Mapping[str, np.ndarray], Context], Estimate]
    doc: str


_METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, needs: Sequence[str]) -> Callable:
    """Decorator: register `fn(observations, context) -> Estimate` under `name`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*[a-z]", name):
        raise ValueError(f"metric name '{name}': lower case, digits and _ (its sample count is appended)")

    def add(fn: Callable) -> Callable:
        if name in _METRICS:
            raise ValueError(f"metric '{name}' is registered twice")
        _METRICS[name] = MetricSpec(name, tuple(needs), fn, next(iter((fn.__doc__ or "").strip().splitlines()), ""))
        return fn

    return add


def list_metrics() -> list[MetricSpec]:
    """Every registered metric, in registration order."""
    return list(_METRICS.values())


def compute(observations: Mapping[str, np.ndarray], context: Context, names: Sequence[str] | None = None,
            ) -> dict[str, Estimate]:
    """Every metric (or those named) whose observations are present, keyed `<name>_<count>`.

    Raises:
        ValueError: an unknown name, or a named metric whose observations are missing.
    """
    unknown = [n for n in names or () if n not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {[m.name for m in list_metrics()]}")
    out: dict[str, Estimate] = {}
    for spec in list_metrics():
        missing = [k for k in spec.needs if k not in observations]
        if names is not None and spec.name not in names:
            continue
        if missing:
            if names is not None:
                raise ValueError(f"metric '{spec.name}' needs observations {missing}, which were not collected")
            continue
        est = spec.fn(observations, context)
        out[f"{spec.name}_{est.n}"] = est
    return out


def flat(estimates: Mapping[str, Estimate]) -> dict[str, float | None]:
    """`key`, `key_lo`, `key_hi` and `key_<extra>` as plain numbers, NaN as None (JSON null)."""
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)

    out: dict[str, float | None] = {}
    for key, est in estimates.items():
        out.update({key: num(est.value), f"{key}_lo": num(est.lo), f"{key}_hi": num(est.hi)})
        out.update({f"{key}_{k}": num(v) for k, v in est.extra.items() if isinstance(v, (int, float))})
    return out


def find(metrics: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """(key, value) of metric `name` in a flat dict whatever its sample count (`kid_a2b` finds `kid_a2b_1000`)."""
    pattern = re.compile(rf"{re.escape(name)}_\d+")
    keys = sorted(k for k in metrics if pattern.fullmatch(k))
    return (keys[0], metrics[keys[0]]) if keys else None


def tracking_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of an evaluation report for MLflow: the model's under their names, a baseline's
    as `<baseline>/<name>` (so `eval/kid_a2b_1000` sits beside `eval/copy_paste/kid_a2b_1000`)."""
    out: dict[str, float] = {}
    for method in ("model", "copy_paste", "do_nothing"):
        prefix = "" if method == "model" else f"{method}/"
        for key, value in report.get(method, {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[prefix + key] = float(value)
    if isinstance(report.get("train_steps"), int):
        out["train_steps"] = float(report["train_steps"])
    return out


# --- the metrics --------------------------------------------------------------------------

def _pairs(values: np.ndarray, c: Context, **extra: Any) -> Estimate:
    return pair_mean(values, c.src_pos, c.ref_pos, c.resamples, **extra)


@register_metric("transfer_success", needs=("p_out", "threshold"))
def _transfer_success(o, c):
    """Share of outputs a* the judge calls positive (read it against judge_fp)."""
    return _pairs((o["p_out"] >= o["threshold"]).astype(float), c)


@register_metric("removal_success", needs=("p_removed", "threshold"))
def _removal_success(o, c):
    """Share of removals F(b) the judge calls negative."""
    return _pairs((o["p_removed"] < o["threshold"]).astype(float), c)


@register_metric("judge_fp", needs=("p_src", "threshold"))
def _judge_fp(o, c):
    """The judge's positive rate on the untouched sources: what do-nothing's transfer success is."""
    return unit_mean((o["p_src"] >= o["threshold"]).astype(float), c.resamples.src)


@register_metric("judge_recall_references", needs=("p_ref", "threshold"))
def _judge_recall_references(o, c):
    """The judge's positive rate on the untouched references: the ceiling of transfer success."""
    return unit_mean((o["p_ref"] >= o["threshold"]).astype(float), c.resamples.ref)


def _fid(fake: np.ndarray, real: np.ndarray) -> Estimate:
    from geogan.metrics.fid import feature_stats, frechet_distance, frechet_distance_features

    if max(len(fake), len(real)) < fake.shape[1]:  # fewer images than dimensions: sample space is cheaper
        value = frechet_distance_features(real, fake)
    else:
        value = frechet_distance(*feature_stats(real), *feature_stats(fake))
    # No interval: FID is biased by the sample count, so a resample with duplicates is not comparable to it.
    return Estimate(value, float("nan"), float("nan"), len(fake), {"num_real": len(real)})


def _kid(fake: np.ndarray, real: np.ndarray, c: Context, weights: np.ndarray) -> Estimate:
    """KID with its std over subsets; the interval from `weights`, (B, len(fake)) bootstrap counts of the fakes."""
    from geogan.metrics.fid import kid, kid_bootstrap

    size = min(KID_SUBSET_SIZE, len(fake), len(real))
    mean, std = kid(real, fake, subsets=c.kid_subsets, subset_size=size, seed=c.seed)
    lo, hi = percentile_interval(kid_bootstrap(fake, real, weights))
    return Estimate(mean, lo, hi, len(fake), {"std": std, "subset_size": size, "num_real": len(real)})


@register_metric("fid_a2b", needs=("f_out", "f_real_with"))
def _fid_a2b(o, c):
    """FID of the outputs a* against the real test faces with the attribute (TF-Inception)."""
    return _fid(o["f_out"], o["f_real_with"])


@register_metric("kid_a2b", needs=("f_out", "f_real_with"))
def _kid_a2b(o, c):
    """KID of the outputs a* against the real test faces with the attribute, std over subsets."""
    return _kid(o["f_out"], o["f_real_with"], c, pair_weights(c.resamples, c.src_pos, c.ref_pos))


def _one_per_reference(c: Context) -> np.ndarray:
    """Index of the first pair of each reference, in reference order: F(b) depends on b alone."""
    order = np.argsort(c.ref_pos, kind="stable")
    first = np.unique(c.ref_pos[order], return_index=True)[1]
    return order[first]


@register_metric("fid_b2a", needs=("f_removed", "f_real_without"))
def _fid_b2a(o, c):
    """FID of the removals F(b), one per distinct reference, against the real test faces without the attribute."""
    return _fid(o["f_removed"][_one_per_reference(c)], o["f_real_without"])


@register_metric("kid_b2a", needs=("f_removed", "f_real_without"))
def _kid_b2a(o, c):
    """KID of the removals F(b), one per distinct reference, against the real test faces without the attribute.

    Counted once per reference, not once per pair: R copies of one image would pair with each
    other as "different" fakes and bias KID up (and its count would claim R times the evidence).
    The interval resamples references.
    """
    return _kid(o["f_removed"][_one_per_reference(c)], o["f_real_without"], c, c.resamples.ref)


def _image_counts(n: int, c: Context) -> np.ndarray:
    """(B, n) bootstrap draws of n independent images (as many replicates as the pairs', seeded)."""
    from geogan.metrics.bootstrap import draw_resamples

    return draw_resamples(n, 1, len(c.resamples.src), c.seed + 1).src


@register_metric("removal_standalone_success", needs=("p_removed_standalone", "threshold"))
def _removal_standalone_success(o, c):
    """Share of standalone removals F(b) (as `geogan remove`) of every real test face with it the judge calls negative."""
    v = (o["p_removed_standalone"] < o["threshold"]).astype(float)
    return unit_mean(v, _image_counts(len(v), c))


@register_metric("kid_b2a_standalone", needs=("f_removed_standalone", "f_real_without"))
def _kid_b2a_standalone(o, c):
    """KID of the standalone removals against the real test faces without the attribute; interval over removals."""
    fake = o["f_removed_standalone"]
    return _kid(fake, o["f_real_without"], c, _image_counts(len(fake), c))


@register_metric("mask_in_region", needs=("mask_in_region",))
def _mask_in_region(o, c):
    """Share of the mask's mass inside the attribute's landmark region (undefined for an empty mask)."""
    return _pairs(o["mask_in_region"], c)


@register_metric("change_outside_region", needs=("change_outside_region",))
def _change_outside_region(o, c):
    """Mean |a - a*| outside the attribute's landmark region, in [0, 1] intensity units."""
    return _pairs(o["change_outside_region"], c)


@register_metric("mask_area", needs=("mask_area",))
def _mask_area(o, c):
    """Mean of the mask over the image."""
    return _pairs(o["mask_area"], c)


@register_metric("identity_dist", needs=("identity_dist",))
def _identity_dist(o, c):
    """dlib face-embedding distance between source a and output a*."""
    return _pairs(o["identity_dist"], c)


@register_metric("identity_kept", needs=("identity_dist",))
def _identity_kept(o, c):
    """Share of pairs whose output stays the source's person (embedding distance < 0.6)."""
    d = o["identity_dist"]
    return _pairs(np.where(np.isfinite(d), (d < IDENTITY_THRESHOLD).astype(float), np.nan), c)


@register_metric("identity_dist_reference", needs=("identity_dist_reference",))
def _identity_dist_reference(o, c):
    """The same distance between source a and reference b (other people): the scale of a lost identity."""
    return _pairs(o["identity_dist_reference"], c)


@register_metric("instance_fidelity", needs=("instance_hit",))
def _instance_fidelity(o, c):
    """How often a*'s attribute crop is closest to its own reference's among the source's K references."""
    k = np.bincount(c.src_pos).astype(float)  # references per source
    return _pairs(o["instance_hit"], c, chance=float(np.mean(1 / k)))


@register_metric("landmark_err", needs=("landmark_err",))
def _landmark_err(o, c):
    """Landmark error of b' against a, in inter-ocular distances."""
    return _pairs(o["landmark_err"], c)


@register_metric("landmark_err_large_gap", needs=("landmark_err", "landmark_err_no_flow"))
def _landmark_err_large_gap(o, c):
    """Landmark error on the quarter of pairs with the largest pose gap (no-flow error)."""
    gap = o["landmark_err_no_flow"]
    return _pairs(np.where(gap >= np.quantile(gap, 0.75), o["landmark_err"], np.nan), c)


@register_metric("landmark_err_no_flow", needs=("landmark_err_no_flow",))
def _landmark_err_no_flow(o, c):
    """Landmark error of b itself against a: the pose gap a flow has to close."""
    return _pairs(o["landmark_err_no_flow"], c)


@register_metric("gt_psnr", needs=("gt_psnr",))
def _gt_psnr(o, c):
    """PSNR of a* against the exact ground truth (synthetic faces), capped at 100 dB."""
    return _pairs(o["gt_psnr"], c)


@register_metric("gt_l1_region", needs=("gt_l1_region",))
def _gt_l1_region(o, c):
    """L1 of a* against the exact ground truth inside the attribute's exact coverage (synthetic faces)."""
    return _pairs(o["gt_l1_region"], c)
