"""GeoGAN losses: zero at their targets, the landmark geometry, and where gradients go."""

from __future__ import annotations

import pytest
import torch

from geogan.losses import (adv_loss_d, adv_loss_g, cls_loss, discriminator_losses, generator_losses, landmark_loss,
                           mask_loss, rec_loss, tv_loss)
from geogan.nets import FlowNet
from tests.helpers.training import tiny_context, tiny_nets


pytestmark = pytest.mark.usefixtures("one_thread")  # small convs: one thread is faster on a shared machine


WEIGHTS = tiny_context().weights  # params.yaml's loss weights


def _constant_flow(b: int, size: int, d: torch.Tensor) -> torch.Tensor:
    return d.view(1, 2, 1, 1).expand(b, 2, size, size).clone()


def test_landmark_loss_zero_for_the_true_displacement():
    size = 64
    lm_a = torch.rand(2, 68, 2) * 1.8 - 0.9
    d = torch.tensor([0.1, -0.05])
    assert float(landmark_loss(_constant_flow(2, size, d), lm_a, lm_a + d, size)) < 1e-10  # float rounding only
    # An affine displacement field is reproduced exactly by bilinear sampling.
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    field = torch.stack([0.1 * xs - 0.05 * ys + 0.02, 0.03 * xs + 0.08 * ys]).unsqueeze(0).expand(2, 2, size, size)
    disp = torch.stack([0.1 * lm_a[..., 0] - 0.05 * lm_a[..., 1] + 0.02, 0.03 * lm_a[..., 0] + 0.08 * lm_a[..., 1]], -1)
    assert float(landmark_loss(field, lm_a, lm_a + disp, size)) < 1e-9
    wrong = float(landmark_loss(torch.zeros(2, 2, size, size), lm_a, lm_a + d, size))
    assert wrong == pytest.approx(size * float((d**2).mean()), rel=1e-5)  # the documented formula


def test_landmark_loss_valid_mask_ignores_missing_points():
    size = 64
    lm_a = torch.rand(1, 68, 2) * 1.8 - 0.9
    lm_b = lm_a + 0.05
    valid = torch.ones(1, 68, dtype=torch.bool)
    valid[0, :10] = False
    lm_b_nan = lm_b.clone()
    lm_b_nan[0, :10] = float("nan")
    flow = torch.zeros(1, 2, size, size)
    got = landmark_loss(flow, lm_a, lm_b_nan, size, valid)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(float(landmark_loss(flow, lm_a[:, 10:], lm_b[:, 10:], size)), rel=1e-5)


def test_landmark_loss_trains_the_flow_net():
    torch.manual_seed(0)
    net = FlowNet(ngf=8, n_blocks=1)
    lm_a = torch.rand(2, 68, 2) * 1.8 - 0.9
    loss = landmark_loss(net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)), lm_a, lm_a + 0.1, 64)
    assert float(loss.detach()) > 0
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    assert float(net.out_conv.weight.grad.abs().sum()) > 0
    assert float(net.encoder.stem[1].weight.grad.abs().sum()) > 0


def test_tv_loss():
    assert float(tv_loss(_constant_flow(2, 32, torch.tensor([0.3, -0.2])), 32)) == 0.0
    assert float(tv_loss(torch.randn(2, 2, 32, 32) * 0.01, 32)) > 0


def test_adversarial_losses_zero_at_targets():
    ones, zeros = [torch.ones(2, 1, 8, 8), torch.ones(2, 1, 4, 4)], [torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4)]
    assert float(adv_loss_d(ones, zeros)) == 0.0
    assert float(adv_loss_g(ones)) == 0.0
    assert float(adv_loss_d(zeros, ones)) == pytest.approx(2.0)  # 2 scales x (0.5 + 0.5)
    assert float(adv_loss_g(zeros)) == pytest.approx(2.0)


def test_cls_loss_minimal_at_the_right_label():
    logits = [torch.tensor([4.0, -4.0]), torch.tensor([6.0, -6.0])]
    right = cls_loss(logits, torch.tensor([1.0, 0.0]))
    wrong = cls_loss(logits, torch.tensor([0.0, 1.0]))
    assert float(right) < 0.05 < float(wrong)
    # As a function of the logit, BCE is smallest at the label's end.
    grid = torch.linspace(-8, 8, 33)
    assert int(torch.stack([cls_loss([g.view(1)], 1.0) for g in grid]).argmin()) == 32
    assert int(torch.stack([cls_loss([g.view(1)], 0.0) for g in grid]).argmin()) == 0


def test_rec_and_mask_losses():
    x = torch.rand(2, 3, 8, 8)
    assert float(rec_loss(x, x)) == 0.0 and float(rec_loss(x, x + 0.5)) == pytest.approx(0.5)
    assert float(mask_loss(torch.zeros(2, 1, 8, 8))) == 0.0 and float(mask_loss(torch.full((1, 1, 4, 4), 0.25))) == 0.25


def _step_inputs(refine_weight: float):
    nets = tiny_nets(ngf=8, ndf=8, n_blocks=1, n_scales=3)
    n, size = 2, 64
    x_a, x_b = torch.rand(n, 3, size, size) * 2 - 1, torch.rand(n, 3, size, size) * 2 - 1
    lm_a = torch.rand(n, 68, 2) * 1.8 - 0.9
    out = nets.generator(x_a, x_b, refine_weight)
    return nets, out, n, size, lm_a, lm_a + 0.05


def test_generator_losses_reach_every_generator_parameter():
    nets, out, n, size, lm_a, lm_b = _step_inputs(0.1)
    nets.discriminator.requires_grad_(False)
    d_fake = nets.discriminator(torch.cat([out.x_out, out.x_removed, out.x_rec_b, out.x_rec_a]))
    total, logs = generator_losses(out, d_fake, n=n, lm_a=lm_a, lm_b=lm_b, size=size, weights=WEIGHTS)
    assert set(logs) == {"g/adv", "g/cls", "g/rec", "g/landmark", "g/tv", "g/mask", "g/total"}
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in logs.values())
    expected = sum(WEIGHTS[f"lambda_{k}"] * logs[f"g/{k}"] for k in ("adv", "cls", "rec", "landmark", "tv", "mask"))
    torch.testing.assert_close(logs["g/total"], expected)
    total.backward()
    for name, p in nets.generator.named_parameters():
        assert p.grad is not None, name
    for part in ("flow", "mask", "refine", "removal"):
        grads = [p.grad.abs().sum() for p in getattr(nets.generator, part).parameters()]
        assert float(sum(grads)) > 0, part
    assert all(p.grad is None for p in nets.discriminator.parameters())


def test_refine_weight_zero_still_gives_every_parameter_a_gradient():
    # DDP without find_unused_parameters needs a gradient (even a zero one) for every parameter.
    nets, out, n, size, lm_a, lm_b = _step_inputs(0.0)
    d_fake = nets.discriminator(torch.cat([out.x_out, out.x_removed, out.x_rec_b, out.x_rec_a]))
    total, _ = generator_losses(out, d_fake, n=n, lm_a=lm_a, lm_b=lm_b, size=size, weights=WEIGHTS)
    total.backward()
    assert all(p.grad is not None for p in nets.generator.parameters())
    assert float(sum(p.grad.abs().sum() for p in nets.generator.refine.parameters())) == 0.0


def test_discriminator_losses_on_detached_fakes():
    nets, out, n, _, _, _ = _step_inputs(0.1)
    fakes = torch.cat([f.detach() for f in (out.x_out, out.x_removed, out.x_rec_b, out.x_rec_a)])
    d_all = nets.discriminator(torch.cat([out.x_a, out.x_b, fakes]))
    total, logs = discriminator_losses(d_all, n_real_a=n, n_real_b=n, n_fake=4 * n, weights=WEIGHTS)
    assert set(logs) == {"d/adv", "d/cls", "d/total"}
    total.backward()
    assert all(p.grad is None for p in nets.generator.parameters())
    assert all(p.grad is not None for p in nets.discriminator.parameters())


def test_missing_weight_is_named():
    nets, out, n, _, _, _ = _step_inputs(0.1)
    d_all = nets.discriminator(torch.cat([out.x_a, out.x_b]))
    with pytest.raises(KeyError, match="lambda_cls"):
        discriminator_losses(d_all, n_real_a=n, n_real_b=n, n_fake=0, weights={"lambda_adv": 1.0})


def test_losses_are_fp32_under_bf16_autocast():
    nets, _, n, size, lm_a, lm_b = _step_inputs(0.1)
    x = torch.rand(n, 3, size, size) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nets.generator(x, x.flip(0), 0.1)
        d_fake = nets.discriminator(torch.cat([out.x_out, out.x_removed, out.x_rec_b, out.x_rec_a]))
        total, _ = generator_losses(out, d_fake, n=n, lm_a=lm_a, lm_b=lm_b, size=size, weights=WEIGHTS)
    assert total.dtype == torch.float32 and torch.isfinite(total)
