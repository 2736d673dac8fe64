"""GeoGAN's core formulas pinned on tiny tensors with hand-computed values.

The blend a* = m b' + (1 - m) a, what the removal net F gets in the cycle, each
classification term's target domain in G's loss (the local discriminator's too), D's labels for real images and the
LSGAN targets. The sub-networks are replaced by fixed functions (flow, mask, F, D), so
every expected number below follows from the formula alone.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from geogan.losses import local_generator_terms
from geogan.nets import Generator
from geogan.nets.generator import CycleOutputs
from geogan.training.steps import discriminator_terms, generator_terms

SIZE = 16  # the smallest image the nets accept
SHIFT = 2.0 / (SIZE - 1)  # one pixel in grid units (align_corners=True)


def softplus(x: float) -> float:
    """BCE-with-logits of logit x against label 0; against label 1 it is softplus(-x)."""
    return math.log1p(math.exp(x))


class FixedFlow(nn.Module):
    """A flow net whose answer is a constant shift of `dx` grid units in x; records its inputs."""

    def __init__(self, dx: float):
        super().__init__()
        self.dx, self.calls = dx, []

    def forward(self, x_a, x_b, heat_a=None, heat_b=None):
        self.calls.append((x_a.clone(), x_b.clone()))
        flow = torch.zeros(x_a.shape[0], 2, *x_a.shape[2:])
        flow[:, 0] = self.dx
        return flow


class FixedMask(nn.Module):
    """A mask net that always answers `mask`."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.mask = mask

    def forward(self, x_a, x_warp):
        return self.mask.expand(x_a.shape[0], -1, -1, -1)


class RecordingRemoval(nn.Module):
    """F that records (image, mask) and answers -image, so its outputs are known by hand."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, mask):
        self.calls.append((x.clone(), mask.clone()))
        return -x


class ConstantResidual(nn.Module):
    """A refinement body whose residual is r = atanh(0.5) everywhere: 2 tanh(r) = 1."""

    def forward(self, x):
        return torch.full((x.shape[0], 3, *x.shape[2:]), math.atanh(0.5))


def _column_ramp() -> torch.Tensor:
    """b: every pixel of column j holds j / 10 - 0.75 (so b shifted by a pixel differs from b)."""
    cols = torch.arange(SIZE, dtype=torch.float32) / 10 - 0.75
    return cols.view(1, 1, 1, SIZE).expand(1, 3, SIZE, SIZE).clone()


def _mask() -> torch.Tensor:
    """m = 0.25 on the left half, 1 on a 4x4 block on the right, 0 elsewhere; 0 on the border columns."""
    m = torch.zeros(1, 1, SIZE, SIZE)
    m[..., 1:8] = 0.25
    m[..., 4:8, 10:14] = 1.0
    return m


def _generator(mask: torch.Tensor) -> tuple[Generator, FixedFlow, RecordingRemoval]:
    gen = Generator(ngf=4, n_blocks=0)
    gen.flow, gen.mask = FixedFlow(SHIFT), FixedMask(mask)
    gen.refine.body = ConstantResidual()
    gen.removal = RecordingRemoval()
    return gen, gen.flow, gen.removal


def test_blend_is_mask_times_warped_reference_plus_rest_of_source():
    a, b, m = torch.full((1, 3, SIZE, SIZE), 0.5), _column_ramp(), _mask()
    gen, _, _ = _generator(m)
    out = gen.transfer(a, b, refine_weight=0.0)
    # Flow +1 pixel in x: b'(i, j) = b(i, j + 1), the last column repeated (border).
    b_warp = torch.cat([b[..., 1:], b[..., -1:]], dim=-1)
    torch.testing.assert_close(out.x_warp, b_warp, rtol=0, atol=1e-5)
    # Pixel (3, 4): m = 0.25, a = 0.5, b' = b(3, 5) = 0.5 - 0.75 = -0.25.
    # a* = 0.25 * -0.25 + 0.75 * 0.5 = 0.3125 (inverted: -0.0625; unwarped b: 0.2875).
    assert float(out.x_blend[0, 0, 3, 4]) == pytest.approx(0.3125, abs=1e-5)
    # Pixel (5, 11): m = 1, so a* = b' = b(5, 12) = 0.45; pixel (0, 15): m = 0, so a* = a = 0.5.
    assert float(out.x_blend[0, 1, 5, 11]) == pytest.approx(0.45, abs=1e-5)
    assert float(out.x_blend[0, 2, 0, 15]) == pytest.approx(0.5, abs=1e-6)
    torch.testing.assert_close(out.x_blend, m * b_warp + (1 - m) * a, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.x_out, out.x_blend)  # refinement off (w = 0)


def test_refinement_adds_its_residual_inside_the_mask():
    a, b, m = torch.full((1, 3, SIZE, SIZE), 0.5), _column_ramp(), _mask()
    gen, _, _ = _generator(m)
    out = gen.transfer(a, b, refine_weight=0.1)
    # a*_refined = blend + 2 tanh(r) w m = blend + 0.1 m: pixel (3, 4): 0.3125 + 0.025.
    assert float(out.x_out[0, 0, 3, 4]) == pytest.approx(0.3375, abs=1e-5)
    torch.testing.assert_close(out.x_out, out.x_blend + 0.1 * m, rtol=0, atol=1e-5)


def test_removal_gets_b_with_the_mask_carried_into_bs_frame_and_a_star_with_m():
    a, b, m = torch.full((1, 3, SIZE, SIZE), 0.5), _column_ramp(), _mask()
    gen, flow, removal = _generator(m)
    out = gen(a, b, 0.0)
    calls = {"F(b)": [c for c in removal.calls if torch.equal(c[0], b)],
             "F(a*)": [c for c in removal.calls if torch.equal(c[0], out.x_out)]}
    assert len(removal.calls) == 2 and all(len(v) == 1 for v in calls.values()), "F runs once on b and once on a*"
    # F(b): m carried back by -flow, i.e. one pixel the other way: mask_b(i, j) = m(i, j - 1).
    (_, mask_b), = calls["F(b)"]
    expected = torch.cat([m[..., :1], m[..., :-1]], dim=-1)
    assert float(mask_b[0, 0, 5, 14]) == pytest.approx(1.0, abs=1e-5) and float(mask_b[0, 0, 5, 10]) == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(mask_b, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.mask_b, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.x_removed, -b)  # F's answer on b
    # F(a*): the transfer's output with the transfer's own mask (a's frame); its answer is rec_a.
    (_, mask_a), = calls["F(a*)"]
    torch.testing.assert_close(mask_a, m)
    torch.testing.assert_close(out.x_rec_a, -out.x_out)
    # The way back puts the attribute from a* onto F(b): the flow net sees (F(b), a*), then
    # rec_b = m warp(a*) + (1 - m) F(b).
    assert len(flow.calls) == 2
    torch.testing.assert_close(flow.calls[1][0], out.x_removed)
    torch.testing.assert_close(flow.calls[1][1], out.x_out)
    a_star_warp = torch.cat([out.x_out[..., 1:], out.x_out[..., -1:]], dim=-1)
    torch.testing.assert_close(out.x_rec_b, m * a_star_warp + (1 - m) * out.x_removed, rtol=0, atol=1e-5)


class MeanDiscriminator(nn.Module):
    """One scale: the patch map is the image mean, the domain logit 10 x the image mean."""

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3))
        return [(mean.view(-1, 1, 1, 1).expand(-1, 1, 2, 2), 10 * mean)]


def _const(value: float, channels: int = 3) -> torch.Tensor:
    return torch.full((1, channels, SIZE, SIZE), value)


def _cycle(x_a: float, x_b: float, x_out: float, x_removed: float, x_rec_b: float, x_rec_a: float) -> CycleOutputs:
    """A cycle of constant images, zero flows and empty masks (landmark, TV and mask terms are 0)."""
    zero_flow, zero_mask = torch.zeros(1, 2, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE)
    return CycleOutputs(x_a=_const(x_a), x_b=_const(x_b), flow_ab=zero_flow, x_warp=_const(x_b), mask=zero_mask,
                        x_blend=_const(x_a), x_out=_const(x_out), mask_b=zero_mask, x_removed=_const(x_removed),
                        flow_rec=zero_flow, x_warp_rec=_const(x_out), mask_rec=zero_mask, x_rec_b=_const(x_rec_b),
                        x_rec_a=_const(x_rec_a))


def test_generator_terms_target_each_fake_at_its_domain():
    # D sees a* = 0.4, F(b) = -0.2, rec_b = 0.1, rec_a = 0.6: logits 4, -2, 1, 6 (chosen so that no
    # flip or swap of targets gives the same sum: all flipped would give 7.4608).
    out = _cycle(x_a=0.3, x_b=-0.1, x_out=0.4, x_removed=-0.2, x_rec_b=0.1, x_rec_a=0.6)
    lm = torch.zeros(1, 68, 2)
    terms = generator_terms(MeanDiscriminator(), out, lm, lm, SIZE, (), False)
    # Targets a* -> 1 (has y), F(b) -> 0, rec_b -> 1, rec_a -> 0; 4 roles x their mean = their sum.
    cls = softplus(-4) + softplus(-2) + softplus(-1) + softplus(6)
    assert float(terms["cls"]) == pytest.approx(cls, rel=1e-5) and cls == pytest.approx(6.4608, abs=1e-4)
    # LSGAN for G: every fake towards 1: 4 x mean((0.4-1)^2, (-0.2-1)^2, (0.1-1)^2, (0.6-1)^2) = 2.77.
    assert float(terms["adv"]) == pytest.approx(2.77, rel=1e-5)
    # Reconstruction: |rec_a - a| + |rec_b - b| = 0.3 + 0.2 (targets swapped: 0.9).
    assert float(terms["rec"]) == pytest.approx(0.5, rel=1e-5)
    assert float(terms["landmark"]) == 0.0 and float(terms["tv"]) == 0.0 and float(terms["mask"]) == 0.0


def test_generator_cls_domains_one_role_at_a_time():
    # Raise one fake's logit at a time: the loss falls where the role's target domain is 1, rises where it is 0.
    lm = torch.zeros(1, 68, 2)
    roles = ("x_out", "x_removed", "x_rec_b", "x_rec_a")
    domains = []
    for role in roles:
        values = {r: 0.0 for r in roles}
        low = generator_terms(MeanDiscriminator(), _cycle(0.0, 0.0, **{**values, role: -0.5}), lm, lm, SIZE, (), False)
        high = generator_terms(MeanDiscriminator(), _cycle(0.0, 0.0, **{**values, role: 0.5}), lm, lm, SIZE, (), False)
        domains.append(int(float(high["cls"]) < float(low["cls"])))
    assert domains == [1, 0, 1, 0]  # a*, F(b), rec_b, rec_a


def test_local_discriminator_terms_target_each_fake_crop_at_its_domain():
    # The local D's verdicts on the four fakes' region crops, in `fakes_of` order: logits 4, -2, 1, 6 as above.
    logit = torch.tensor([4.0, -2.0, 1.0, 6.0])
    patch = torch.tensor([0.4, -0.2, 0.1, 0.6]).view(4, 1, 1, 1)
    terms = local_generator_terms((patch, logit), n=1)
    assert float(terms["local_cls"]) == pytest.approx(softplus(-4) + softplus(-2) + softplus(-1) + softplus(6), rel=1e-5)
    assert float(terms["local_adv"]) == pytest.approx(2.77, rel=1e-5)


def test_discriminator_labels_reals_a_0_b_1_and_lsgan_targets():
    x_a, x_b = _const(0.3), _const(-0.1)  # logits 3 and -1
    fakes = [_const(v) for v in (0.4, -0.2, 0.1, 0.7)]
    lm = torch.zeros(1, 68, 2)
    terms = discriminator_terms(MeanDiscriminator(), x_a, x_b, fakes, lm, lm, (), False)
    # Real a is "no attribute" (0), real b "has it" (1); 2 roles x their mean = their sum.
    assert float(terms["cls"]) == pytest.approx(softplus(3) + softplus(1), rel=1e-5)  # 4.3618 (flipped: 0.3618)
    # LSGAN for D: reals towards 1, fakes towards 0, 0.5 each, 4 x:
    # 4 x (0.5 mean(0.49, 1.21) + 0.5 mean(0.16, 0.04, 0.01, 0.49)) = 4 x (0.425 + 0.0875) = 2.05.
    assert float(terms["adv"]) == pytest.approx(2.05, rel=1e-5)
