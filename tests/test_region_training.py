"""The landmark-anchored training terms: the local discriminator, region-sparing cutout, the mask prior, EMA."""

from __future__ import annotations

import torch

from geogan.landmarks.regions import RegionSpec, attribute_box, box_mask
from geogan.losses import local_generator_terms
from geogan.training.augment import diff_augment
from geogan.training.ema import GeneratorEma, ema_decay_at
from geogan.training.steps import RegionView, fake_landmarks, train_step
from tests.helpers.training import random_batch, tiny_context, tiny_nets, tiny_state

EYES = RegionSpec(points=tuple(range(36, 48)), margin=(0.3, 0.3), crop_hw=(8, 16))


def _level_landmarks(n: int) -> torch.Tensor:
    """Landmarks of upright faces: the eyes level at y = -0.2, everything else near the centre."""
    g = torch.Generator().manual_seed(0)
    lm = torch.rand(n, 68, 2, generator=g) * 0.4 - 0.2
    lm[:, 36:42] = torch.tensor([-0.3, -0.2])
    lm[:, 42:48] = torch.tensor([0.3, -0.2])
    return lm


def _state(local_ndf: int):
    return tiny_state(n_scales=2, local_ndf=local_ndf)


def test_step_with_every_region_term_trains_both_discriminators():
    state = _state(local_ndf=8)
    batch = random_batch(0, n=2, size=32)
    batch.lm_a, batch.lm_b = _level_landmarks(2), _level_landmarks(2).flip(0)
    view = RegionView(EYES, local_d=True, spare_cutout=True, mask_prior=True)
    ctx = tiny_context(region=view, loss={"lambda_mask_region": 1.0}, d_augment=("color", "translation", "cutout"))
    local_before = [p.detach().clone() for p in state.disc.local.parameters()]
    logs = train_step(state, batch, ctx)
    for name in ("d/local_adv", "d/local_cls", "g/local_adv", "g/local_cls", "g/mask_region"):
        assert name in logs and torch.isfinite(logs[name]), name
    # D's update moved the local discriminator; its total counts the local terms
    assert any(not torch.equal(a, b) for a, b in zip(local_before, state.disc.local.parameters()))
    d_sum = sum(ctx.weights[f"lambda_{k}"] * logs[f"d/{k}"] for k in ("adv", "cls", "local_adv", "local_cls"))
    torch.testing.assert_close(logs["d/total"], d_sum)


def test_without_region_terms_the_step_is_unchanged():
    state = _state(local_ndf=0)
    logs = train_step(state, random_batch(1, n=2, size=32), tiny_context())
    assert not any("local" in k or "region" in k for k in logs)


def test_fake_landmarks_follow_each_fakes_geometry():
    lm_a, lm_b = torch.zeros(1, 68, 2), torch.ones(1, 68, 2)
    # fakes_of order: a* (a's frame), F(b) (b's), rec_b (b's), rec_a (a's)
    assert [int(x.sum() > 0) for x in fake_landmarks(lm_a, lm_b)] == [0, 1, 1, 0]


def test_local_generator_targets_are_the_fakes_domains():
    n = 2
    # a logit of +20 says "has the attribute"; G wants a* and rec_b to have it, F(b) and rec_a not
    right = torch.tensor([20.0] * n + [-20.0] * n + [20.0] * n + [-20.0] * n)
    patch = torch.ones(4 * n, 1, 2, 2)  # LSGAN: D(fake) = 1 is what G wants
    terms = local_generator_terms((patch, right), n)
    assert float(terms["local_cls"]) < 1e-6 and float(terms["local_adv"]) == 0.0
    assert float(local_generator_terms((patch, -right), n)["local_cls"]) > 70  # 4 roles x ~20 each


def test_cutout_spares_the_region():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 32, 32)
    spare = box_mask(attribute_box(_level_landmarks(64), EYES.points, EYES.margin), 32)
    out = diff_augment(x, ("cutout",), spare)
    assert torch.equal(out * spare, spare.expand_as(out))  # nothing in the region was zeroed
    assert (out == 0).any()  # ... while cutout still cut elsewhere
    assert (diff_augment(x, ("cutout",)) * spare == 0).any()  # without sparing it does cut the region


def test_ema_trails_the_weights_and_its_schedule():
    gen = tiny_nets(ngf=4, ndf=4, n_scales=1).generator
    ema = GeneratorEma(gen)
    start = [p.detach().clone() for p in gen.parameters()]
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(1.0)
    ema.update(gen, 0.9)
    for e, s in zip(ema.module.parameters(), start):
        torch.testing.assert_close(e, s + 0.1)  # 0.9 * old + 0.1 * (old + 1)
    assert ema_decay_at(0, 0.999) == 0.1 and ema_decay_at(10**6, 0.999) == 0.999
    assert not any(p.requires_grad for p in ema.module.parameters())
