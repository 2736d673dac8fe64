"""Landmark-anchored attribute regions: known boxes, masks and crops; config validation."""

from __future__ import annotations

import math

import pytest
import torch

from geogan.config import ConfigError, config_from_dict
from geogan.landmarks.regions import attribute_box, box_crop, box_mask, crop_size
from tests.helpers.params import tiny_params_dict


def _level_face(eye_y: float = -0.2, eye_dx: float = 0.4) -> torch.Tensor:
    """(1, 68, 2) landmarks: eyes level at eye_y, centres at -/+ eye_dx/2; every other point at the origin."""
    lm = torch.zeros(1, 68, 2)
    lm[0, 36:42] = torch.tensor([-eye_dx / 2, eye_y])
    lm[0, 42:48] = torch.tensor([eye_dx / 2, eye_y])
    return lm


def test_level_box_is_the_points_extent_plus_margins():
    lm = _level_face()
    lm[0, 10] = torch.tensor([0.1, 0.5])  # a third point below the eyes
    box = attribute_box(lm, (36, 42, 10), margin=(0.5, 0.25))  # margins in inter-ocular distances (0.4)
    # extent along x: -0.2 .. 0.2, plus 0.2 each side; along y: -0.2 .. 0.5, plus 0.1 each side
    torch.testing.assert_close(box.half, torch.tensor([[0.4, 0.45]]))
    torch.testing.assert_close(box.centre, torch.tensor([[0.0, 0.15]]))
    torch.testing.assert_close(box.along, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(box.across, torch.tensor([[0.0, 1.0]]))


def test_mask_area_matches_the_box():
    size = 201  # pixel centres on a 0.01 grid
    lm = _level_face()
    lm[0, 0], lm[0, 1] = torch.tensor([-0.205, -0.305]), torch.tensor([0.205, -0.095])  # edges between pixel centres
    mask = box_mask(attribute_box(lm, (0, 1), margin=(0.0, 0.0)), size)
    assert mask.shape == (1, 1, size, size)
    assert int(mask.sum()) == 41 * 21  # inclusive pixel centres on both axes
    assert mask[0, 0, 80, 100] == 1 and mask[0, 0, 100, 100] == 0  # (x 0, y -0.2) inside; (0, 0) outside


def test_crop_is_upright_on_a_rotated_face():
    size = 129
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    image = torch.stack([xx, yy, xx * yy]).unsqueeze(0)  # each pixel holds its own coordinates
    lm = _level_face()
    lm[0, 30] = torch.tensor([0.0, 0.3])
    box = attribute_box(lm, (36, 42, 30), margin=(0.1, 0.1))
    upright = box_crop(image, box, (16, 24))
    angle = math.radians(30)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    lm_rot = lm @ rot.T
    # the same face turned by 30 degrees: the crop of the turned image is the upright crop, turned
    crop_rot = box_crop(image, attribute_box(lm_rot, (36, 42, 30), margin=(0.1, 0.1)), (16, 24))
    expected_xy = torch.einsum("ij,bjhw->bihw", rot, upright[:, :2])
    torch.testing.assert_close(crop_rot[:, :2], expected_xy, atol=1e-5, rtol=0)


def test_crop_size_from_fractions():
    assert crop_size((0.25, 0.5), 128) == (32, 64)
    assert crop_size((0.01, 0.01), 64) == (8, 8)


def test_config_needs_a_region_for_every_attribute():
    params = tiny_params_dict()
    del params["regions"]["Mustache"]
    with pytest.raises(ConfigError, match=r"'regions' has no entry for attribute 'Mustache'"):
        config_from_dict(params)


@pytest.mark.parametrize("key, value, message", [
    ("points", [3], r"regions.Eyeglasses.points' must list at least 2"),
    ("points", [17, 68], r"regions.Eyeglasses.points' must list at least 2 iBUG-68 indices in \[0, 67\]"),
    ("margin", [0.1], r"regions.Eyeglasses.margin' must be two non-negative numbers"),
    ("crop", [0.5, 1.5], r"regions.Eyeglasses.crop' must be two fractions in \(0, 1\]"),
])
def test_bad_region_named(key, value, message):
    params = tiny_params_dict()
    params["regions"]["Eyeglasses"][key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(params)
