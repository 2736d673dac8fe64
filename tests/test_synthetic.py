"""Synthetic faces: determinism, exact landmarks, attribute locality, true transfers, dataset files."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from geogan.data.synthetic import (
    INSTANCE_ATTRIBUTES,
    SYNTHETIC_ATTRIBUTES,
    EyeglassesStyle,
    MustacheStyle,
    SyntheticFace,
    attribute_mask,
    attribute_mask_for,
    face_from_dict,
    face_landmarks,
    face_to_dict,
    labels,
    load_synthetic,
    render,
    render_transfer,
    sample_dataset,
    with_attribute,
    write_synthetic_dataset,
)
from geogan.data.synthetic.geometry import FACE_CENTRE_DY
from geogan.data.synthetic.raster import raster
from tests.helpers.params import ROOT


@pytest.fixture(scope="module")
def faces() -> list[SyntheticFace]:
    return sample_dataset(12, 3, seed=7)


def _wearing(faces: list[SyntheticFace], attribute: str) -> list[SyntheticFace]:
    return [f for f in faces if labels(f)[attribute]]


def test_sampling_is_deterministic_and_count_independent():
    a, b = sample_dataset(5, 3, seed=1), sample_dataset(5, 3, seed=1)
    assert a == b
    assert sample_dataset(3, 3, seed=1) == a[:9]  # a face never depends on the dataset's size
    assert sample_dataset(5, 3, seed=2) != a
    with pytest.raises(ValueError, match="n_identities"):
        sample_dataset(0, 3, seed=1)


def test_identity_params_and_styles_are_per_identity(faces):
    identity_fields = ["skin_color", "hair_color", "hair_style", "face_width", "jaw_width", "eye_size", "nose_length"]
    by_id: dict[int, list[SyntheticFace]] = {}
    for f in faces:
        by_id.setdefault(f.identity, []).append(f)
    assert sorted(by_id) == list(range(12)) and all(len(v) == 3 for v in by_id.values())
    for same in by_id.values():
        for name in identity_fields:
            assert len({getattr(f.face, name) for f in same}) == 1, name
        assert len({(f.face.rotation, f.face.yaw, f.face.smile) for f in same}) == 3  # pose/expression vary
        for attr in ("mustache", "eyeglasses"):
            assert len({getattr(f, attr) for f in same} - {None}) <= 1  # one instance per person
    many = sample_dataset(200, 3, seed=0)
    for attribute in INSTANCE_ATTRIBUTES:
        rate = np.mean([labels(f)[attribute] for f in many])
        assert 0.28 < rate < 0.42, (attribute, rate)


def test_render_is_deterministic_and_seed_dependent(faces):
    for size in (64, 100, 128):
        img = render(faces[0], size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert render(faces[0], size).tobytes() == img.tobytes()
    other = sample_dataset(12, 3, seed=8)[0]
    assert not np.array_equal(render(other, 64), render(faces[0], 64))


def test_rasteriser_fills_pixel_centres_inside():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:30, 0:30].astype(float)
    for _ in range(40):
        poly = rng.uniform(-4, 34, (int(rng.integers(3, 9)), 2))
        winding = np.zeros((30, 30), int)
        for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
            crosses = (np.minimum(y0, y1) <= yy) & (yy < np.maximum(y0, y1))
            xc = x0 + (yy - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1.0)
            winding += np.where(crosses & (xc < xx), 1 if y1 > y0 else -1, 0)
        got = np.zeros((30, 30), bool)
        box = raster(poly, 30, 30)
        if box is not None:
            r0, c0, inside = box
            got[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
        assert np.array_equal(got, winding != 0)


def test_landmarks_shape_and_order(faces):
    for f in faces[:6]:
        lm = face_landmarks(f.face, 64)
        assert lm.shape == (68, 2) and lm.dtype == np.float32
        assert np.all((lm > 0) & (lm < 63))
        # iBUG order, in the face's own frame: chin below the eyes, mouth below the nose, left before right.
        up = np.array([math.sin(f.face.rotation), -math.cos(f.face.rotation)])
        height = lm @ up
        assert height[8] < height[33] < height[27] and height[57] < height[51] < height[33]
        right = np.array([math.cos(f.face.rotation), math.sin(f.face.rotation)])
        assert (lm[36] @ right) < (lm[39] @ right) < (lm[42] @ right) < (lm[45] @ right)
        assert (lm[0] @ right) < (lm[8] @ right) < (lm[16] @ right)


def test_landmarks_move_exactly_with_the_pose(faces):
    face, size = faces[1].face, 96
    lm = face_landmarks(face, size).astype(np.float64)
    shifted = face_landmarks(dataclasses.replace(face, tx=face.tx + 0.05, ty=face.ty - 0.03), size)
    np.testing.assert_allclose(shifted, lm + [0.05 * size, -0.03 * size], atol=1e-4)
    # Rotation turns the landmarks about the face-frame origin's pixel position.
    delta = 0.2
    origin = np.array([(size - 1) / 2 + face.tx * size, (size - 1) / 2 + (FACE_CENTRE_DY + face.ty) * size])
    rot = np.array([[math.cos(delta), -math.sin(delta)], [math.sin(delta), math.cos(delta)]])
    turned = face_landmarks(dataclasses.replace(face, rotation=face.rotation + delta), size)
    np.testing.assert_allclose(turned, (lm - origin) @ rot.T + origin, atol=1e-4)
    # Doubling the image size doubles the coordinates about the half-pixel corner: x' + 0.5 = 2 (x + 0.5).
    np.testing.assert_allclose(face_landmarks(face, 2 * size), 2 * (lm + 0.5) - 0.5, atol=1e-4)


@pytest.mark.parametrize("size", [64, 128])
def test_landmarks_are_where_the_eyes_are_drawn(faces, size):
    """The iris is drawn centred on the mean of each eye's landmarks: its coverage-weighted
    centroid (from two renders differing only in iris colour) must match to a small fraction
    of a pixel, which also checks the pixel-centre convention (an off-by-half error is 0.375 px)."""
    yy, xx = np.mgrid[0:size, 0:size]
    for f in faces[:8]:
        p = dataclasses.replace(f.face, yaw=0.0)  # yaw is non-linear; the centroid argument needs an affine map
        a = render(SyntheticFace(0, dataclasses.replace(p, iris_color=(255, 0, 0))), size).astype(float)
        b = render(SyntheticFace(0, dataclasses.replace(p, iris_color=(0, 0, 255))), size).astype(float)
        weight = np.abs(a - b).sum(axis=-1)
        lm = face_landmarks(p, size)
        axis = lm[45] - lm[36]
        side = (xx - lm[27, 0]) * axis[0] + (yy - lm[27, 1]) * axis[1]
        for eye, mask in ((lm[36:42], side < 0), (lm[42:48], side >= 0)):
            w = weight * mask
            centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
            assert np.abs(centroid - eye.mean(axis=0)).max() < 0.15
            cx, cy = np.round(eye.mean(axis=0)).astype(int)
            assert weight[cy - 1 : cy + 2, cx - 1 : cx + 2].max() > 0  # the iris ring (round the pupil) is here
        # The chin landmark lies on the face outline: skin above it, not skin below it.
        skin = np.array(p.skin_color, float)
        down = np.array([-math.sin(p.rotation), math.cos(p.rotation)]) * size * 0.04
        above, below = np.round(lm[8] - down).astype(int), np.round(lm[8] + down).astype(int)
        assert np.abs(a[above[1], above[0]] - skin).max() <= 2
        assert np.abs(a[below[1], below[0]] - skin).max() > 2


@pytest.mark.parametrize("attribute", INSTANCE_ATTRIBUTES)
@pytest.mark.parametrize("size", [64, 128])
def test_attribute_changes_only_its_region(faces, attribute, size):
    wearing = _wearing(faces, attribute)
    assert wearing
    for f in wearing[:4]:
        with_it, without = render(f, size), render(with_attribute(f, attribute, None), size)
        changed = np.any(with_it != without, axis=-1)
        mask = attribute_mask(f, attribute, size)
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() == 1.0
        assert changed.sum() > 0.002 * size * size  # clearly visible
        assert not np.any(changed & (mask == 0))  # nothing outside the region (no dilation needed)
        assert not np.any(attribute_mask(with_attribute(f, attribute, None), attribute, size))


def test_attribute_mask_follows_the_landmarks(faces):
    size = 128
    for f in _wearing(faces, "Mustache")[:3]:
        lm, mask = face_landmarks(f.face, size), attribute_mask(f, "Mustache", size)
        mid = np.round((lm[33] + lm[51]) / 2).astype(int)  # between nose base and upper lip
        assert mask[mid[1] - 1 : mid[1] + 2, mid[0] - 3 : mid[0] + 4].max() > 0
    for f in _wearing(faces, "Eyeglasses")[:3]:
        lm, mask = face_landmarks(f.face, size), attribute_mask(f, "Eyeglasses", size)
        for corner in (36, 39, 42, 45):  # the lenses cover the eyes
            x, y = np.round(lm[corner]).astype(int)
            assert mask[y, x] > 0
    smile = attribute_mask(faces[0], "Smiling", size)
    x, y = np.round(face_landmarks(faces[0].face, size)[[51, 57]].mean(axis=0)).astype(int)
    assert smile[y, x] == 1.0


@pytest.mark.parametrize("attribute", INSTANCE_ATTRIBUTES)
def test_render_transfer_is_target_wearing_reference_instance(faces, attribute):
    reference = _wearing(faces, attribute)[0]
    target = next(f for f in faces if f.identity != reference.identity and not labels(f)[attribute])
    style = getattr(reference, attribute.lower())
    truth = render_transfer(target, reference, attribute, 64)
    assert np.array_equal(truth, render(with_attribute(target, attribute, style), 64))
    assert not np.array_equal(truth, render(target, 64))
    changed = np.any(truth != render(target, 64), axis=-1)
    assert not np.any(changed & (attribute_mask_for(target, style, attribute, 64) == 0))
    np.testing.assert_array_equal(
        attribute_mask_for(target, style, attribute, 64),
        attribute_mask(with_attribute(target, attribute, style), attribute, 64),
    )
    np.testing.assert_array_equal(  # the reference face may stand for its instance
        attribute_mask_for(target, reference, attribute, 64), attribute_mask_for(target, style, attribute, 64)
    )
    with pytest.raises(ValueError, match="does not wear"):
        render_transfer(reference, target, attribute, 64)
    with pytest.raises(ValueError, match="no instance style"):
        render_transfer(target, reference, "Smiling", 64)


def test_labels(faces):
    assert SYNTHETIC_ATTRIBUTES == ("Mustache", "Eyeglasses", "Smiling")
    for f in faces:
        lab = labels(f)
        assert set(lab) == set(SYNTHETIC_ATTRIBUTES)
        assert lab["Mustache"] == (f.mustache is not None) and lab["Eyeglasses"] == (f.eyeglasses is not None)
        assert lab["Smiling"] == (f.face.smile >= 0.5)


def test_dict_round_trip_is_exact(faces):
    for f in faces:
        back = face_from_dict(json.loads(json.dumps(face_to_dict(f))))
        assert back == f
        assert isinstance(back.face.skin_color, tuple)
        assert render(back, 32).tobytes() == render(f, 32).tobytes()
    d = face_to_dict(faces[0])
    d["face"]["nose_size"] = 1.0
    with pytest.raises(ValueError, match="nose_size"):
        face_from_dict(d)
    styled = SyntheticFace(3, faces[0].face, MustacheStyle("pencil", (1, 2, 3), 0.5, 0.1, 0.0, 0.0, 0),
                           EyeglassesStyle("rect", (4, 5, 6), 0.05, 1.3, 0.7, (7, 8, 9), 0.2))
    assert face_from_dict(json.loads(json.dumps(face_to_dict(styled)))) == styled


def test_write_synthetic_dataset(tmp_path):
    out = tmp_path / "prepared"
    report = write_synthetic_dataset(out, 4, 3, resolution=48, seed=5, progress=False)
    n = 12
    assert report["images"] == n and report["skipped"] == 0 and report["source"] == "synthetic"
    names = {"images.npy", "manifest.csv", "synthetic.json", "landmarks_exact.npy", "report.json"}
    assert {p.name for p in out.iterdir()} == names
    assert not [p for p in tmp_path.iterdir() if p.name != "prepared"]  # no temp leftovers
    images = np.load(out / "images.npy")
    landmarks = np.load(out / "landmarks_exact.npy")
    assert images.shape == (n, 48, 48, 3) and images.dtype == np.uint8
    assert landmarks.shape == (n, 68, 2) and landmarks.dtype == np.float32
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "image", "identity", "Eyeglasses", "Mustache", "Smiling", "partition"]
    faces, meta = load_synthetic(out)
    assert meta["resolution"] == 48 and meta["seed"] == 5 and faces == sample_dataset(4, 3, seed=5)
    for i, (row, face) in enumerate(zip(rows, faces)):
        assert int(row["index"]) == i and row["identity"] == str(face.identity) and row["partition"] == ""
        assert {a: int(row[a]) for a in SYNTHETIC_ATTRIBUTES} == labels(face)
        assert np.array_equal(images[i], render(face, 48))
        assert np.array_equal(landmarks[i], face_landmarks(face.face, 48))
    assert report["attributes"] == {a: sum(labels(f)[a] for f in faces) for a in SYNTHETIC_ATTRIBUTES}
    again = tmp_path / "again"
    write_synthetic_dataset(again, 4, 3, resolution=48, seed=5, progress=False)
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.slow
def test_the_default_dataset_renders_every_face(tmp_path):
    """params.yaml's own synthetic settings: every face rendered, landmarks inside the image."""
    from geogan.config import load_config

    cfg = load_config(ROOT / "params.yaml")
    d = cfg.data
    report = write_synthetic_dataset(tmp_path / "prepared", d.synthetic_identities, d.synthetic_images_per_identity,
                                     resolution=d.resolution, seed=cfg.seed, progress=False)
    n = d.synthetic_identities * d.synthetic_images_per_identity
    images = np.load(tmp_path / "prepared" / "images.npy")
    landmarks = np.load(tmp_path / "prepared" / "landmarks_exact.npy")
    assert images.shape == (n, d.resolution, d.resolution, 3) and images.dtype == np.uint8
    assert landmarks.shape == (n, 68, 2) and ((landmarks >= 0) & (landmarks < d.resolution)).all()
    print(f"{n} faces at {d.resolution} px in {report['seconds']:.1f} s")  # a figure to read, not to assert


@pytest.mark.slow
def test_parallel_rendering_gives_the_same_bytes(tmp_path):
    write_synthetic_dataset(tmp_path / "one", 40, 2, resolution=32, seed=4, progress=False, workers=1)
    write_synthetic_dataset(tmp_path / "two", 40, 2, resolution=32, seed=4, progress=False, workers=2)
    for name in ("images.npy", "manifest.csv", "synthetic.json", "landmarks_exact.npy", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
