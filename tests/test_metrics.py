"""Known answers for every reported metric, the bootstrap on known cases, and the metric registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geogan.evaluation import instance_hits
from geogan.landmarks.regions import attribute_box, box_mask
from geogan.metrics import geometry, registry
from geogan.metrics.bootstrap import draw_resamples, pair_mean, unit_mean
from geogan.metrics.registry import Context, compute, find, flat, register_metric


def _face_landmarks(batch: int = 1, iod: float = 0.5) -> torch.Tensor:
    """(B, 68, 2) landmarks whose eye centres are `iod` apart on a horizontal line."""
    lm = torch.zeros(batch, 68, 2)
    lm[:, 36:42] = torch.tensor([-iod / 2, -0.2])
    lm[:, 42:48] = torch.tensor([iod / 2, -0.2])
    lm[:, 48:55] = torch.stack([torch.linspace(-0.2, 0.2, 7), torch.full((7,), 0.4)], -1)
    lm[:, 31:36] = torch.stack([torch.linspace(-0.1, 0.1, 5), torch.full((5,), 0.2)], -1)
    return lm


# ---------------------------------------------------------------- geometry: known answers

def test_landmark_error_of_a_constant_flow_is_its_length_over_the_interocular_distance():
    lm_a = _face_landmarks(iod=0.5)
    shift = torch.tensor([0.03, -0.04])  # length 0.05
    lm_b = lm_a + shift
    flow_exact = shift.view(1, 2, 1, 1).expand(1, 2, 33, 33)
    assert float(geometry.warped_landmark_error(flow_exact, lm_a, lm_b)) == pytest.approx(0.0, abs=1e-6)
    none = torch.zeros(1, 2, 33, 33)
    assert float(geometry.warped_landmark_error(none, lm_a, lm_b)) == pytest.approx(0.05 / 0.5, rel=1e-5)
    assert float(geometry.unwarped_landmark_error(lm_a, lm_b)) == pytest.approx(0.1, rel=1e-5)
    # The same gap on a face twice as large (eyes twice as far apart) is half the error.
    big_a = _face_landmarks(iod=1.0)
    assert float(geometry.warped_landmark_error(none, big_a, big_a + shift)) == pytest.approx(0.05, rel=1e-5)


def test_mask_in_region_and_change_outside_on_masks_of_ones_and_zeros():
    lm = _face_landmarks(2)
    region = box_mask(attribute_box(lm, (31, 32, 33, 34, 35, 48, 54), (0.1, 0.1)), 32)
    share = float(region[0].mean())
    ones, zeros = torch.ones(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)
    assert geometry.mask_in_region(ones, region).tolist() == pytest.approx([share, share])
    assert geometry.mask_in_region(region, region).tolist() == [1.0, 1.0]
    assert all(math.isnan(v) for v in geometry.mask_in_region(zeros, region).tolist())  # undefined, not 0
    x_a = torch.zeros(2, 3, 32, 32)
    assert geometry.change_outside(x_a, x_a, region).tolist() == [0.0, 0.0]
    everywhere = x_a + 0.5  # |a - a*| = 0.5 in [-1, 1] = 0.25 in [0, 1]
    assert geometry.change_outside(x_a, everywhere, region).tolist() == pytest.approx([0.25, 0.25])
    inside_only = x_a + 0.5 * region
    assert geometry.change_outside(x_a, inside_only, region).tolist() == [0.0, 0.0]


def test_psnr_is_capped_for_identical_images_and_exact_otherwise():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert geometry.psnr(x, x).tolist() == [geometry.PSNR_CAP_DB] * 2
    # mse 0.04 with peak-to-peak 2: 10 log10(4 / 0.04) = 20 dB
    assert geometry.psnr(x, x + 0.2).tolist() == pytest.approx([20.0, 20.0], rel=1e-5)
    region = torch.ones(2, 1, 8, 8)
    assert geometry.region_l1(x, x + 0.2, region).tolist() == pytest.approx([0.1, 0.1], rel=1e-5)


def test_instance_hits_know_which_reference_each_output_copied():
    crops_ref = np.eye(3)  # three references, far apart
    src_pos, ref_pos = np.repeat([0, 1], 3), np.tile([0, 1, 2], 2)
    copied = crops_ref[ref_pos] + 0.01  # every a* wears its own reference
    assert instance_hits(copied, crops_ref, src_pos, ref_pos).tolist() == [1.0] * 6
    swapped = crops_ref[(ref_pos + 1) % 3]  # every a* wears the next reference
    assert instance_hits(swapped, crops_ref, src_pos, ref_pos).tolist() == [0.0] * 6
    same = np.zeros((6, 3))  # a* = a: one output per source, equidistant from all: chance 1/3
    assert instance_hits(same, crops_ref, src_pos, ref_pos).tolist() == pytest.approx([1 / 3] * 6)


# ---------------------------------------------------------------- bootstrap: known cases

def test_bootstrap_of_two_sources_gives_the_exact_percentiles():
    # Pairs depend only on their source (0 or 1): the replicate mean is the share of source 1 drawn,
    # 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4: the central 95% is [0, 1].
    values = np.array([0.0, 0.0, 1.0, 1.0])
    src_pos, ref_pos = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    est = pair_mean(values, src_pos, ref_pos, draw_resamples(2, 2, 4000, seed=0))
    assert (est.value, est.lo, est.hi, est.n) == (0.5, 0.0, 1.0, 4)


def test_bootstrap_interval_matches_the_two_way_standard_error():
    rng = np.random.default_rng(0)
    s, r = 60, 40
    a, b = rng.normal(0, 1.0, s), rng.normal(0, 0.5, r)  # source and reference effects
    src_pos, ref_pos = np.repeat(np.arange(s), r), np.tile(np.arange(r), s)
    est = pair_mean(a[src_pos] + b[ref_pos], src_pos, ref_pos, draw_resamples(s, r, 4000, seed=1))
    se = math.sqrt(a.var() / s + b.var() / r)  # the mean's standard error under the crossed design
    assert (est.hi - est.lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.1)
    # Resampling pairs as if independent would have given an interval about 5x too narrow.
    assert (est.hi - est.lo) > 4 * 1.96 * np.std(a[src_pos] + b[ref_pos]) / math.sqrt(s * r)


def test_constant_values_give_a_zero_width_interval_and_nan_pairs_are_left_out():
    src_pos, ref_pos = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    res = draw_resamples(3, 2, 200, seed=0)
    est = pair_mean(np.array([0.3, 0.3, np.nan, 0.3, 0.3, 0.3]), src_pos, ref_pos, res)
    assert (est.value, est.lo, est.hi, est.n) == pytest.approx((0.3, 0.3, 0.3, 5))
    assert math.isnan(pair_mean(np.full(6, np.nan), src_pos, ref_pos, res).value)
    per_source = unit_mean(np.array([1.0, 0.0, 0.0]), res.src)
    assert per_source.value == pytest.approx(1 / 3) and per_source.n == 3 and per_source.lo == 0.0


# ---------------------------------------------------------------- the registry

def _context(s: int = 4, r: int = 3) -> Context:
    src_pos, ref_pos = np.repeat(np.arange(s), r), np.tile(np.arange(r), s)
    return Context(src_pos, ref_pos, draw_resamples(s, r, 300, seed=0))


def test_fixed_judge_probabilities_give_known_transfer_removal_and_false_positive_rates():
    ctx = _context()
    p_out = np.tile([0.9, 0.2, 0.6], 4)  # the judge's threshold is 0.5: 2 of 3 references transfer
    obs = {"p_out": p_out, "p_removed": np.tile([0.1, 0.6, 0.7], 4), "p_src": np.array([0.6, 0.1, 0.1, 0.1]),
           "p_ref": np.array([0.9, 0.6, 0.3]), "threshold": np.float64(0.5)}
    out = flat(compute(obs, ctx))
    assert out["transfer_success_12"] == pytest.approx(2 / 3)
    assert out["removal_success_12"] == pytest.approx(1 / 3)
    assert out["judge_fp_4"] == 0.25 and out["judge_recall_references_3"] == pytest.approx(2 / 3)
    # The threshold is the judge's (chosen on val), not 0.5: at 0.65 every verdict moves with it.
    out = flat(compute({**obs, "threshold": np.float64(0.65)}, ctx))
    assert out["transfer_success_12"] == pytest.approx(1 / 3) and out["removal_success_12"] == pytest.approx(2 / 3)
    assert out["judge_fp_4"] == 0.0 and out["judge_recall_references_3"] == pytest.approx(1 / 3)


def test_names_carry_sample_counts_and_absent_observations_leave_metrics_out():
    ctx = _context()
    obs = {"landmark_err": np.linspace(0.1, 0.2, 12), "landmark_err_no_flow": np.linspace(0.3, 0.9, 12),
           "mask_in_region": np.full(12, np.nan)}
    out = flat(compute(obs, ctx))
    assert {"landmark_err_12", "landmark_err_large_gap_3", "landmark_err_no_flow_12"} <= out.keys()
    assert out["mask_in_region_0"] is None  # an empty mask everywhere: undefined, written as null
    assert not any(k.startswith(("transfer_success", "kid_", "gt_")) for k in out)
    assert find(out, "landmark_err") == ("landmark_err_12", out["landmark_err_12"])
    assert find(out, "landmark_err_large_gap")[0] == "landmark_err_large_gap_3" and find(out, "kid_a2b") is None
    with pytest.raises(ValueError, match="needs observations"):
        compute(obs, ctx, names=["transfer_success"])
    with pytest.raises(ValueError, match="unknown metric"):
        compute(obs, ctx, names=["accuracy"])


def test_removal_realism_counts_each_reference_once():
    """F(b) depends on b alone: kid_b2a over 12 pairs of 3 references equals KID of the 3 distinct removals."""
    from geogan.metrics.fid import kid

    ctx = _context()  # 4 sources x 3 references
    rng = np.random.default_rng(0)
    removals, real = rng.normal(size=(3, 8)), rng.normal(0.5, 1.0, size=(20, 8))
    obs = {"f_removed": removals[ctx.ref_pos], "f_real_without": real}
    out = flat(compute(obs, ctx, names=["kid_b2a", "fid_b2a"]))
    assert {"kid_b2a_3", "fid_b2a_3"} <= out.keys(), out.keys()
    assert out["kid_b2a_3"] == pytest.approx(kid(real, removals, subsets=ctx.kid_subsets, subset_size=3, seed=ctx.seed)[0])
    assert out["kid_b2a_3_num_real"] == 20


def test_standalone_removal_counts_each_real_face_once_with_an_interval_over_faces():
    from geogan.metrics.fid import kid

    ctx = _context()  # the pairs' layout does not enter: these figures rest on the real faces alone
    rng = np.random.default_rng(1)
    removals, real = rng.normal(size=(5, 8)), rng.normal(0.5, 1.0, size=(20, 8))
    obs = {"p_removed_standalone": np.array([0.1, 0.9, 0.2, 0.3, 0.49]), "threshold": np.float64(0.5),
           "f_removed_standalone": removals, "f_real_without": real}
    out = flat(compute(obs, ctx, names=["removal_standalone_success", "kid_b2a_standalone"]))
    assert out["removal_standalone_success_5"] == pytest.approx(0.8)
    assert 0.2 <= out["removal_standalone_success_5_lo"] < 0.8 < out["removal_standalone_success_5_hi"] <= 1.0
    assert out["kid_b2a_standalone_5"] == pytest.approx(kid(real, removals, subsets=ctx.kid_subsets, subset_size=5,
                                                             seed=ctx.seed)[0])


def test_every_registered_metric_is_documented_and_names_are_unique():
    specs = registry.list_metrics()
    assert len({m.name for m in specs}) == len(specs) and all(m.doc for m in specs)
    text = (registry.__file__.rsplit("/geogan/", 1)[0] + "/docs/metrics.md")
    doc = open(text, encoding="utf-8").read()
    missing = [m.name for m in specs if f"`{m.name}" not in doc]
    assert not missing, f"docs/metrics.md does not explain {missing}"
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("transfer_success", needs=())(lambda o, c: None)
    with pytest.raises(ValueError, match="sample count"):
        register_metric("kid_a2b_1000", needs=())  # the count is appended, never part of the name


def test_identity_kept_counts_distances_under_dlibs_threshold():
    ctx = _context(2, 2)
    out = flat(compute({"identity_dist": np.array([0.1, 0.59, 0.61, np.nan])}, ctx))
    assert out["identity_kept_3"] == pytest.approx(2 / 3) and out["identity_dist_3"] == pytest.approx(1.30 / 3)


def test_instance_fidelity_beside_chance_the_largest_gap_quarter_and_the_mask_area():
    ctx = _context(4, 3)  # 12 pairs, K = 3 references per source
    obs = {"instance_hit": np.tile([1.0, 1.0, 0.0], 4), "landmark_err": np.arange(12) / 100,
           "landmark_err_no_flow": np.arange(12.0), "mask_area": np.full(12, 0.25)}
    out = flat(compute(obs, ctx))
    assert out["instance_fidelity_12"] == pytest.approx(2 / 3) and out["instance_fidelity_12_chance"] == pytest.approx(1 / 3)
    # The quarter with the largest pose gap: pairs 9, 10 and 11, whose errors are 0.09, 0.10 and 0.11.
    assert out["landmark_err_large_gap_3"] == pytest.approx(0.10) and out["landmark_err_12"] == pytest.approx(0.055)
    assert out["mask_area_12"] == 0.25
