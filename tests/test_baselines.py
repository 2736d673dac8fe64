"""The baselines: the similarity fit is exact, do-nothing is the identity, copy-paste checked against the exact ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geogan.metrics.baselines import affine_flow, copy_paste, do_nothing, similarity
from geogan.nets.flow import sample_at
from tests.helpers.data import make_tiny_data
from tests.helpers.params import tiny_config


def test_similarity_recovers_scale_rotation_and_shift():
    p = torch.rand(3, 12, 2) - 0.5
    angle = torch.tensor([0.0, 0.3, -1.2])
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], 1)
    scale, shift = torch.tensor([1.0, 1.3, 0.7]), torch.tensor([[0.1, -0.2], [0.0, 0.05], [-0.3, 0.3]])
    q = scale.view(-1, 1, 1) * p @ rot.transpose(1, 2) + shift.unsqueeze(1)
    theta = similarity(p, q)
    assert torch.allclose(theta[:, :, :2], scale.view(-1, 1, 1) * rot, atol=1e-5)
    assert torch.allclose(theta[:, :, 2], shift, atol=1e-5)
    flow = affine_flow(theta, 41)  # the flow samples b where the similarity sends a's points
    assert torch.allclose(p + sample_at(flow, p), q, atol=1e-4)
    mirrored = p * torch.tensor([-1.0, 1.0])  # a reflection is not a similarity: the fit keeps det > 0
    assert torch.linalg.det(similarity(p, mirrored)[:, :, :2]).gt(0).all()


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Synthetic faces with exact landmarks and exact ground truth, and a few held-out pairs per attribute."""
    from geogan.data.dataset import load_prepared
    from geogan.data.synthetic import load_synthetic

    data = make_tiny_data(tmp_path_factory.mktemp("faces"), attributes=("Mustache", "Eyeglasses"), identities=40)
    prepared = load_prepared(data.prepared, data.landmarks)
    pairs = {}
    for attr, path in data.splits.items():
        split = json.loads(path.read_text())
        a = (split["test"]["A"] + split["train"]["A"])[:10]
        b = (split["test"]["B"] + split["train"]["B"])[:5]
        pairs[attr] = (np.repeat(a, len(b)), np.tile(b, len(a)))
    return prepared, load_synthetic(data.prepared)[0], pairs


def _observe(faces, attribute: str, method):
    from geogan.evaluation import EvalInputs, collect

    prepared, synthetic_faces, pairs = faces
    inputs = EvalInputs.for_pairs(prepared.images, prepared.landmarks, *pairs[attribute], attribute,
                                  tiny_config().regions[attribute], faces=synthetic_faces, progress=False)
    return collect(method, inputs, "test")[0]


@pytest.mark.parametrize("attribute", ["Mustache", "Eyeglasses"])
def test_copy_paste_moves_the_references_instance_onto_the_source(faces, attribute):
    region = tiny_config().regions[attribute]
    paste = _observe(faces, attribute, lambda a, b, la, lb: copy_paste(a, b, la, lb, region.points, region.margin, 0.15))
    nothing = _observe(faces, attribute, do_nothing)
    # Inside the attribute's exact coverage, a* is closer to the truth (a wearing b's instance) than a is. Not by
    # a fixed factor: the synthetic lenses are translucent, so the paste brings b's skin through them as well.
    assert paste["gt_l1_region"].mean() < nothing["gt_l1_region"].mean()
    # The similarity on exact landmarks closes most of the pose gap; doing nothing closes none of it.
    assert paste["landmark_err"].mean() < 0.5 * nothing["landmark_err"].mean()
    assert np.array_equal(nothing["landmark_err"], nothing["landmark_err_no_flow"])
    # The pasted crops resemble their own reference; a* = a is at chance (1 / 5 references).
    assert paste["instance_hit"].mean() > 0.4 and nothing["instance_hit"].mean() == pytest.approx(0.2)
    assert (paste["mask_in_region"] == 1).all() and (paste["change_outside_region"] == 0).all()
    assert np.isnan(nothing["mask_in_region"]).all() and (nothing["change_outside_region"] == 0).all()


def test_do_nothing_returns_its_inputs_and_copy_paste_of_a_face_onto_itself_changes_little(faces):
    prepared, _, pairs = faces
    from geogan.data.dataset import to_model_landmarks
    from geogan.model import to_tensor

    rows = pairs["Mustache"][0][:4]
    x = to_tensor(np.asarray(prepared.images[rows]))
    lm = to_model_landmarks(torch.from_numpy(prepared.landmarks[rows]), x.shape[-1])
    out = do_nothing(x, x.flip(0), lm, lm.flip(0))
    assert torch.equal(out.x_out, x) and torch.equal(out.x_removed, x.flip(0)) and out.mask.sum() == 0
    region = tiny_config().regions["Mustache"]
    self_paste = copy_paste(x, x, lm, lm, region.points, region.margin, 0.15)
    assert self_paste.flow.abs().max() < 1e-5 and (self_paste.x_out - x).abs().max() < 1e-4
    assert math.isclose(float(self_paste.mask.max()), 1.0)
