"""DiffAugment for D and the mask-weight warm-up: what they change and that gradients pass."""

from __future__ import annotations

import pytest
import torch

from geogan.config import ConfigError
from geogan.training.augment import diff_augment
from geogan.training.schedule import mask_weight_at
from tests.helpers.params import tiny_config


def _images(n: int = 16, size: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 2 - 1


def test_no_policy_is_the_identity():
    x = _images()
    assert diff_augment(x, ()) is x


def test_translation_moves_whole_pixels_with_zero_padding():
    x = _images(64, 32) * 0.5 + 0.6  # strictly positive, so zero padding is recognisable
    torch.manual_seed(1)
    y = diff_augment(x, ("translation",))
    assert y.shape == x.shape
    moved = 0
    for xi, yi in zip(x, y):
        found = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                shifted = torch.roll(xi, shifts=(dy, dx), dims=(1, 2))
                inner = yi[:, 4:-4, 4:-4]
                if torch.equal(inner, shifted[:, 4:-4, 4:-4]):
                    found, moved = True, moved + ((dy, dx) != (0, 0))
                    break
            if found:
                break
        assert found, "not a whole-pixel shift of at most 1/8 of the image"
    assert moved >= 48, f"only {moved} of 64 images moved"
    assert (y == 0).any(), "no zero padding"


def test_cutout_zeroes_a_quarter_of_each_image_at_most():
    x = _images(32) * 0.5 + 0.6
    y = diff_augment(x, ("cutout",))
    zero_share = (y == 0).all(dim=1).float().mean(dim=(1, 2))
    assert ((zero_share > 0.05) & (zero_share <= 0.25 + 1e-6)).all(), zero_share
    assert torch.equal(y[y != 0], x[y != 0])


def test_color_draws_per_image_and_passes_gradients():
    x = _images().requires_grad_(True)
    y = diff_augment(x, ("color", "translation", "cutout"))
    per_image_shift = (y - x).detach().mean(dim=(1, 2, 3))
    assert per_image_shift.std() > 0.05, "every image got the same colour draw"
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_mask_weight_ramps_linearly_then_stays():
    assert [mask_weight_at(s, 0.1, 4) for s in (0, 2, 4, 100)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert mask_weight_at(0, 0.1, 0) == 0.1


def test_unknown_policy_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train.d_augment\[1\].*must be one of"):
        tiny_config(**{"train.d_augment": ["color", "rotate"]})
