"""A model of another face framing, scored in the evaluation's frame (geogan.metrics.reframe)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geogan.metrics.baselines import do_nothing
from geogan.metrics.reframe import apply, fit_frames, frame_template, invert, reframed
from geogan.nets.flow import sample_at


def _similar(points: torch.Tensor, scale: float, angle: float, shift: tuple[float, float]) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]]) * scale
    return points @ rot.T + torch.tensor(shift)


def _template() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(68, 2, generator=g) * 0.8 - 0.4  # a face filling the middle of the model's frame


def _smooth_images(n: int, size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    phase = torch.arange(n * 3, dtype=torch.float32).view(n, 3, 1, 1)
    return 0.8 * torch.sin(1.5 * x + 2.0 * y + phase)  # low frequency: resampling loses little


def test_the_flow_carries_as_landmarks_onto_bs_exactly_when_both_are_similar_to_the_template():
    tpl = _template()
    lm_a = _similar(tpl, 0.6, 0.1, (0.05, -0.02)).unsqueeze(0)  # the face smaller in this frame than in the model's
    lm_b = _similar(tpl, 0.7, -0.2, (-0.1, 0.08)).unsqueeze(0)
    x = _smooth_images(2, 32)
    out = reframed(do_nothing, tpl, 64)(x[:1], x[1:], lm_a, lm_b)
    # Do-nothing's zero flow in the model's frame pairs equal model points, i.e. the similar landmarks.
    torch.testing.assert_close(lm_a + sample_at(out.flow, lm_a), lm_b, atol=1e-4, rtol=0)
    assert out.flow.shape == (1, 2, 32, 32) and float(out.mask.abs().max()) == 0.0


def test_the_round_trip_keeps_the_image_and_fills_what_the_models_frame_misses_with_the_source():
    tpl = _template()
    x = _smooth_images(2, 48)
    same = tpl.expand(2, -1, -1)  # the model's frame is this one, at twice the size
    out = reframed(do_nothing, tpl, 96)(x, x.flip(0), same, same)
    assert float((out.x_out - x).abs().mean()) < 0.01 and float((out.x_removed - x.flip(0)).abs().mean()) < 0.01
    small = _similar(tpl, 0.5, 0.0, (0.0, 0.0)).expand(2, -1, -1)  # faces half as big: it covers the middle only
    out = reframed(do_nothing, tpl, 96)(x, x.flip(0), small, small)
    corner = (slice(None), slice(None), slice(0, 4), slice(0, 4))
    assert torch.equal(out.x_out[corner], x[corner])  # outside the model's frame: the source, untouched


def test_a_methods_standalone_removal_is_reframed_too_and_the_template_is_the_mean_face():
    calls = []

    def method(x_a, x_b, lm_a, lm_b):
        return do_nothing(x_a, x_b, lm_a, lm_b)

    def remove_standalone(x_b, lm_b):
        calls.append(x_b.shape)
        return x_b

    method.remove_standalone = remove_standalone
    tpl = _template()
    lm = _similar(tpl, 0.5, 0.0, (0.0, 0.0)).unsqueeze(0)
    run = reframed(method, tpl, 64)
    assert run.remove_standalone(_smooth_images(1, 32), lm).shape == (1, 3, 32, 32) and calls == [(1, 3, 64, 64)]
    assert not hasattr(reframed(do_nothing, tpl, 64), "remove_standalone")
    theta = torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.5, -0.3]]])
    torch.testing.assert_close(apply(invert(theta), apply(theta, lm)), lm, atol=1e-5, rtol=0)
    px = np.stack([np.full((68, 2), 10.0), np.full((68, 2), 20.0), np.full((68, 2), np.nan)])
    assert torch.allclose(frame_template(px, 31), torch.zeros(68, 2))  # pixel 15 of 0..30 is the centre
    with pytest.raises(ValueError, match="no face"):
        frame_template(px[2:], 31)


def test_frames_are_fitted_on_the_finite_landmarks_and_a_face_without_any_keeps_the_models():
    tpl = _template()
    lm = _similar(tpl, 0.6, 0.3, (0.1, 0.0)).repeat(3, 1, 1)
    lm[1, :10] = float("nan")  # a few points missing: the rest still give the same similarity
    lm[2] = float("nan")  # no detection at all
    theta = fit_frames(tpl, lm)
    torch.testing.assert_close(theta[1], theta[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(theta[2], torch.eye(2, 3))
    torch.testing.assert_close(apply(theta[:1], tpl.unsqueeze(0)), lm[:1], atol=1e-5, rtol=0)
