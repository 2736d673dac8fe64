"""Landmark backends: dlib on real faces, exact/precomputed tables, and the batched FAN path.

Real faces from ../shared/data/celebahq-200 (CelebA-HQ: non-commercial research use only). The
dlib 68-point model was trained on iBUG 300-W (non-commercial). FAN tests run face-alignment's
real network code with *random* weights (no 2DFAN4 weights offline): they check shapes,
batching and agreement with face-alignment's own per-image call, never landmark accuracy.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.params import tiny_section
from geogan.landmarks import LandmarkError, build_backend, extract_landmarks

FIVE_FACES = ("000004.jpg", "000009.jpg", "000014.jpg", "000016.jpg", "000025.jpg")
# dlib's 5-point model points -> the same places among the 68: outer/inner corner of the
# image-right eye, outer/inner corner of the image-left eye, bottom of the nose.
FIVE_TO_68 = (45, 42, 36, 39, 33)
NO_FA = "face-alignment not installed (pip install face-alignment==1.5.0): FAN backend tests skipped"


def load_faces(shared: Path, names=FIVE_FACES) -> np.ndarray:
    return np.stack([np.asarray(Image.open(shared / "images" / n).convert("RGB")) for n in names])


def write_prepared(folder: Path, images: np.ndarray, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    names = names or [f"img{i}.jpg" for i in range(len(images))]
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "image", "identity", "partition", "Mustache"])
        w.writerows([i, n, "", "", 0] for i, n in enumerate(names))
    return folder


# --- dlib --------------------------------------------------------------------------------------

def test_dlib_landmarks_lie_on_real_faces(shared_faces: Path) -> None:
    """68 points on 5 CelebA-HQ faces checked against two references.

    1. CelebA-HQ's alignment (Karras et al. 2018) levels the eyes and centres them horizontally;
       on these 256 px images eye centres sit at about 0.48 H (median over the 200 faces).
       So: eye points in the upper 55% of the image, inside the detector box and above the
       nose tip; eye centres level within 5% of the width, their midpoint within 4% of the centre.
    2. dlib's 5-point predictor, a separately trained model (dlib's own 7198-face CC0 set, not
       iBUG 300-W), as the reference annotation for 5 matching points: mean error under 0.05
       inter-ocular distances over the faces, each face under 0.10 (measured: about 0.024 mean,
       0.064 worst here). Both use the same detector box, which check 1 covers.
    """
    import dlib
    import face_recognition_models

    images = load_faces(shared_faces)
    backend = build_backend(tiny_section("landmarks", backend="dlib"), Path("."))
    landmarks, boxes = backend.detect_with_boxes(images)
    assert landmarks.shape == (5, 68, 2) and landmarks.dtype == np.float32
    assert np.isfinite(landmarks).all(), "dlib missed one of the five frontal faces"
    five = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    errors = []
    for image, lm, box in zip(images, landmarks, boxes):
        h, w = image.shape[:2]
        eyes = lm[36:48]
        assert (eyes[:, 1] < 0.55 * h).all() and (eyes[:, 1] < lm[30, 1]).all()
        assert ((eyes >= box[:2]) & (eyes <= box[2:])).all()
        left, right = lm[36:42].mean(0), lm[42:48].mean(0)
        assert abs(left[1] - right[1]) < 0.05 * w and abs((left[0] + right[0]) / 2 - w / 2) < 0.04 * w
        rect = dlib.rectangle(*(int(v) for v in box))
        ref = np.array([(p.x, p.y) for p in five(np.ascontiguousarray(image), rect).parts()], dtype=np.float32)
        errors.append(np.linalg.norm(lm[list(FIVE_TO_68)] - ref, axis=1).mean() / np.linalg.norm(right - left))
    assert max(errors) < 0.10 and np.mean(errors) < 0.05, errors


def test_extract_with_dlib_counts_missing_faces(shared_faces: Path, tmp_path: Path) -> None:
    faces = load_faces(shared_faces, FIVE_FACES[:3])
    small = np.stack([np.asarray(Image.fromarray(f).resize((128, 128), Image.LANCZOS)) for f in faces])
    blank = np.full((1, 128, 128, 3), 127, dtype=np.uint8)  # no face to find
    prepared = write_prepared(tmp_path / "prepared", np.concatenate([small[:2], blank, small[2:]]),
                              ["a.jpg", "b.jpg", "blank.jpg", "c.jpg"])
    report = extract_landmarks(tiny_section("landmarks", backend="dlib", batch_size=3), prepared, tmp_path / "lm", progress=False)
    assert (report["backend"], report["images"], report["found"], report["missing"]) == ("dlib", 4, 3, 1)
    assert report["missing_images"] == ["blank.jpg"]
    lm = np.load(tmp_path / "lm" / "landmarks.npy")
    assert lm.shape == (4, 68, 2) and lm.dtype == np.float32
    assert np.isnan(lm[2]).all() and np.isfinite(lm[[0, 1, 3]]).all()
    assert json.loads((tmp_path / "lm" / "report.json").read_text())["missing"] == 1


# --- exact and precomputed ---------------------------------------------------------------------

def test_exact_copies_and_refuses_real_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    prepared = write_prepared(tmp_path / "p", images)
    with pytest.raises(LandmarkError, match="only on the synthetic dataset"):
        build_backend(tiny_section("landmarks", backend="exact"), prepared)
    table = rng.uniform(0, 16, (3, 68, 2)).astype(np.float32)
    np.save(prepared / "landmarks_exact.npy", table)
    extract_landmarks(tiny_section("landmarks", backend="exact"), prepared, tmp_path / "lm", progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "lm" / "landmarks.npy"), table)
    backend = build_backend(tiny_section("landmarks", backend="exact"), prepared)
    found = backend.detect(np.stack([images[2], np.zeros_like(images[0])]))  # looked up by content
    np.testing.assert_array_equal(found[0], table[2])
    assert np.isnan(found[1]).all()


def test_precomputed_files(tmp_path: Path) -> None:
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    prepared = write_prepared(tmp_path / "p", images, ["x.jpg", "y.jpg"])
    np.save(prepared / "crops.npy", np.array([[0, 0, 64, 64], [10, 20, 42, 52]], dtype=np.float32))
    table = np.random.default_rng(1).uniform(0, 32, (2, 68, 2)).astype(np.float32)
    np.save(tmp_path / "lm.npy", table)
    cfg = tiny_section("landmarks", backend="precomputed", precomputed_file=str(tmp_path / "lm.npy"))
    np.testing.assert_array_equal(build_backend(cfg, prepared).table, table)

    np.save(tmp_path / "five.npy", table[:, :5])
    with pytest.raises(LandmarkError, match="5 points per face; 68 iBUG 300-W points are needed"):
        build_backend(tiny_section("landmarks", backend="precomputed", precomputed_file=str(tmp_path / "five.npy")), prepared)
    (tmp_path / "list_landmarks_align_celeba.txt").write_text("1\nlefteye_x\n")
    with pytest.raises(LandmarkError, match="CelebA's landmark file has 5 points"):
        celeba_file = str(tmp_path / "list_landmarks_align_celeba.txt")
        build_backend(tiny_section("landmarks", backend="precomputed", precomputed_file=celeba_file), prepared)

    # CSV in source pixels: image y.jpg was the box (10, 20)-(42, 52) resized to 32 (scale 1).
    src = np.full((68, 2), 30.0, dtype=np.float32)
    with open(tmp_path / "lm.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *[f"{a}{i}" for i in range(68) for a in "xy"]])
        w.writerow(["y.jpg", *src.ravel()])
    got = build_backend(tiny_section("landmarks", backend="precomputed", precomputed_file=str(tmp_path / "lm.csv")), prepared).table
    assert np.isnan(got[0]).all()  # x.jpg is not in the CSV: missing
    np.testing.assert_allclose(got[1], np.tile([20.0, 10.0], (68, 1)))


# --- FAN (face-alignment's network, random weights) ---------------------------------------------

@pytest.fixture
def fan_weights(tmp_path: Path) -> Path:
    """face-alignment's FAN with one hourglass (2DFAN4 has four: same code, 4x the time) and random weights."""
    fa_models = pytest.importorskip("face_alignment.models", reason=NO_FA)
    torch.manual_seed(0)
    path = tmp_path / "fan.pth"
    torch.save(fa_models.FAN(1).state_dict(), path)
    return path


def test_fan_missing_weights_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("face_alignment", reason=NO_FA)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LandmarkError) as info:
        build_backend(tiny_section("landmarks", backend="fan", device="cpu"), tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "2DFAN4-11f355bf06.pth.tar" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "backend: dlib" in msg
    with pytest.raises(LandmarkError, match=r"FAN weights not found at .*nowhere.pth"):
        build_backend(tiny_section("landmarks", backend="fan", device="cpu", fan_weights=str(tmp_path / "nowhere.pth")), tmp_path)


def test_fan_batched_matches_face_alignment_call(fan_weights: Path, shared_faces: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from geogan.data.dataset import FLIP_68
    from geogan.landmarks.fan import decode_heatmaps

    # The weights found in the torch hub cache under face-alignment's file name.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    os.link(fan_weights, tmp_path / "torch" / "hub" / "checkpoints" / "2DFAN4-11f355bf06.pth.tar")
    backend = build_backend(tiny_section("landmarks", backend="fan", device="cpu", batch_size=2), tmp_path)
    images = load_faces(shared_faces, FIVE_FACES[:3])
    batched = backend.detect(images)  # batches of 2 + 1
    assert batched.shape == (3, 68, 2) and batched.dtype == np.float32 and np.isfinite(batched).all()
    np.testing.assert_allclose(backend.detect(images[1:2]), batched[1:2], atol=1e-3)  # batch-independent
    assert np.isnan(backend.detect(images[:1], np.full((1, 4), np.nan))).all()  # no box: a missing row

    # face-alignment's own per-image call, with the same random network and the known boxes. Its
    # two numba functions run as plain Python (compiling them would take ~15 s).
    import face_alignment.utils as fu
    from face_alignment import FaceAlignment, LandmarksType
    from face_alignment.detection.folder.folder_detector import FolderDetector

    monkeypatch.setattr(fu, "_get_preds_fromhm", fu._get_preds_fromhm.py_func)
    monkeypatch.setattr(fu, "transform_np", fu.transform_np.py_func)
    fa = FaceAlignment.__new__(FaceAlignment)  # its __init__ would download S3FD and 2DFAN4 weights
    fa.device, fa.dtype, fa.flip_input, fa.max_batch_size = "cpu", torch.float32, False, 1
    fa.landmarks_type, fa.verbose, fa.face_detector = LandmarksType.TWO_D, False, FolderDetector("cpu")
    fa.face_alignment_net = backend.net
    box = [float(v) for v in backend.default_boxes(1, 256, 256)[0]]
    stock = fa.get_landmarks_from_image(images[0], detected_faces=[box])[0]
    heatmaps = torch.rand(2, 68, 64, 64)
    heatmaps[0, 0, 0, 5] = 2.0  # a peak on the border: no quarter-pixel step there
    np.testing.assert_allclose(decode_heatmaps(heatmaps)[0].numpy(), fu.get_preds_fromhm(heatmaps.numpy())[0], atol=1e-6)
    assert tuple(fu.shuffle_lr(torch.arange(68).reshape(68, 1, 1)).flatten().tolist()) == FLIP_68
    # face-alignment truncates its points to integers; ours stay float: under 1 px apart but for
    # the rare heatmap peak that a sub-grey-level crop difference moves by one cell (4 px).
    diff = np.abs(batched[0] - stock)
    assert np.median(diff) < 1.0 and np.mean(diff < 1.0 + 1e-4) > 0.95, (np.median(diff), np.mean(diff < 1.0))
