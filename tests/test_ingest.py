"""Ingestion from a CelebA-format folder and a folder + CSV, bad files included.

The folders hold synthetic faces in CelebA's file formats (tests/helpers/celeba.py), so the
real-data code paths run everywhere, without ../shared.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geogan.config import ConfigError, DataConfig
from geogan.data import synthetic
from geogan.data.align import crop_box, prepared_to_source, source_to_prepared
from geogan.data.ingest import IngestError, ingest
from tests.helpers.celeba import (
    BAD_FILES,
    CELEBA_ATTRIBUTES,
    IMAGE_DIR,
    CelebaFolder,
    aligned_image,
    write_celeba_folder,
)
from tests.helpers.params import ROOT, tiny_section, write_params

N_GOOD = 12  # 6 people x 2 images
PARTITION_NAMES = {"0": "train", "1": "val", "2": "test"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_cfg(source: Path | str, **kw) -> DataConfig:
    base = dict(source=str(source), resolution=64, workers=1, min_image_size=64, license_ack=True)
    base.update(kw)
    return tiny_section("data", **base)


@pytest.fixture
def celeba_folder(tmp_path: Path) -> CelebaFolder:
    return write_celeba_folder(tmp_path / "celeba", identities=N_GOOD // 2, images_per_identity=2)


def test_celeba_folder_with_bad_files(celeba_folder: CelebaFolder, tmp_path: Path, capsys) -> None:
    root, good = celeba_folder.root, celeba_folder.names
    out = tmp_path / "prepared"
    report = ingest(data_cfg(root), ["Mustache", "eyeglasses"], out, seed=0, progress=False)

    assert report["found"] == N_GOOD + len(BAD_FILES) and report["used"] == N_GOOD
    assert report["skipped"] == len(BAD_FILES) and report["unlabelled"] == 1
    by_reason = {r: v["files"] for r, v in report["skipped_by_reason"].items()}
    assert by_reason == {reason: [name] for name, reason in BAD_FILES.items()}
    assert json.loads((out / "report.json").read_text())["skipped_by_reason"] == report["skipped_by_reason"]
    assert report["license"].startswith("CelebA") and report["identities"] == N_GOOD // 2
    line = capsys.readouterr().out
    assert f"used {N_GOOD} of {N_GOOD + len(BAD_FILES)}" in line and "truncated 1: cut_half.jpg" in line

    images = np.load(out / "images.npy")
    assert images.shape == (N_GOOD, 64, 64, 3) and images.dtype == np.uint8
    # CelebA-aligned 178x218: the reference's crop of rows 20..198, resized (Lanczos), nothing else ...
    source = Image.open(root / IMAGE_DIR / good[3]).convert("RGB")
    np.testing.assert_array_equal(images[3], np.asarray(source.resize((64, 64), Image.LANCZOS, box=(0, 20, 178, 198))))
    np.testing.assert_array_equal(np.load(out / "crops.npy"), np.tile([0, 20, 178, 198], (N_GOOD, 1)))
    # ... so every image is the face as rendered at 64 px, up to JPEG and resampling (a crop 20 px off: ~20 levels).
    for i, name in enumerate(good):
        error = np.abs(images[i].astype(int) - synthetic.render(celeba_folder.faces[name], 64)).mean()
        assert error < 5, (name, error)

    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # params.yaml's attributes first, in its spelling, then every other CelebA column under its own name
    assert list(rows[0])[:6] == ["index", "image", "identity", "partition", "Mustache", "eyeglasses"]
    assert "Male" in rows[0] and "Eyeglasses" not in rows[0] and len(rows[0]) == 4 + 40
    assert [r["image"] for r in rows] == good
    for r in rows:
        labels = celeba_folder.labels[r["image"]]
        assert (int(r["Mustache"]), int(r["eyeglasses"])) == (labels["Mustache"], labels["Eyeglasses"]), r
        assert r["identity"] == celeba_folder.identities[r["image"]]
        assert r["partition"] == PARTITION_NAMES[celeba_folder.partitions[r["image"]]]
    assert {r["partition"] for r in rows} == {"train", "val", "test"}


def test_process_pool_gives_the_same_files(celeba_folder: CelebaFolder, tmp_path: Path) -> None:
    root = celeba_folder.root
    ingest(data_cfg(root), ["Mustache"], tmp_path / "one", seed=0, progress=False)
    ingest(data_cfg(root, workers=2), ["Mustache"], tmp_path / "two", seed=0, progress=False)
    for name in ("images.npy", "manifest.csv", "crops.npy"):
        assert sha256(tmp_path / "one" / name) == sha256(tmp_path / "two" / name)


def test_attribute_typo_gets_a_suggestion(celeba_folder: CelebaFolder, tmp_path: Path) -> None:
    root = celeba_folder.root
    with pytest.raises(ConfigError, match=r"attribute 'Mustach' not in .*list_attr_celeba.txt; did you mean 'Mustache'\?"):
        ingest(data_cfg(root), ["Mustach"], tmp_path / "out", seed=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_celeba_needs_license_ack(celeba_folder: CelebaFolder, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="license_ack"):
        ingest(data_cfg(celeba_folder.root, license_ack=False), ["Mustache"], tmp_path / "out", seed=0, progress=False)
    assert not (tmp_path / "out").exists()
    # The stage as DVC runs it: one line naming the parameter and the licence, exit 2, nothing written.
    params = write_params(tmp_path / "params.yaml", **{"data.source": str(celeba_folder.root), "data.license_ack": False})
    res = subprocess.run([sys.executable, "-m", "geogan.stages.ingest", "--params", str(params), "--out",
                          str(tmp_path / "prepared")], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "data.license_ack: true" in res.stderr and "non-commercial research use only" in res.stderr, res.stderr
    assert not (tmp_path / "prepared").exists()


def test_no_usable_image_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"not an image")
    (root / "list_attr_celeba.txt").write_text("1\n" + " ".join(CELEBA_ATTRIBUTES) + "\na.jpg" + " -1" * 40 + "\n")
    with pytest.raises(IngestError, match=r"no usable image .*corrupt 1"):
        ingest(data_cfg(root), ["Mustache"], tmp_path / "out", seed=0, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no files found"):
        ingest(data_cfg(tmp_path / "empty"), ["Mustache"], tmp_path / "out", seed=0, progress=False)


def test_csv_folder_non_square_images(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "pics").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(4)]
    for i, (n, face) in enumerate(zip(names, synthetic.sample_dataset(4, 1, seed=0))):
        im = Image.fromarray(synthetic.render(face, 256))
        im = im.crop((0, 0, 256, 200)) if i % 2 else im.resize((178, 218))  # landscape; CelebA-aligned shape
        im.save(root / "pics" / n.replace(".jpg", ".png"))
    table = [["file", "person", "Has_Mustache", "Smiling"]]
    table += [[f"pics/{n.replace('.jpg', '.png')}", f"p{i // 2}", v, w]
              for i, (n, v, w) in enumerate(zip(names, ["1", "-1", "true", "0"], ["false", "yes", "0", "1"]))]
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(table)
    cfg = data_cfg(root, csv_file="labels.csv", image_column="file", identity_column="person")
    report = ingest(cfg, ["has_mustache", "smiling"], tmp_path / "out", seed=0, progress=False)
    assert report["format"] == "csv" and report["used"] == 4 and report["identities"] == 2
    assert report["crops"] == {"celeba_aligned": 2, "centre": 2}
    crops = np.load(tmp_path / "out" / "crops.npy")
    np.testing.assert_array_equal(crops[0], [0, 20, 178, 198])  # the reference's centre crop of 178
    np.testing.assert_array_equal(crops[1], [28, 0, 228, 200])  # centre square of 256x200
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["has_mustache"]) for r in rows] == [1, 0, 1, 0]
    assert [int(r["smiling"]) for r in rows] == [0, 1, 0, 1]
    assert [r["identity"] for r in rows] == ["p0", "p0", "p1", "p1"]


def test_celeba_five_points_follow_the_crop(tmp_path: Path) -> None:
    root = tmp_path / "aligned"
    (root / "img_align_celeba").mkdir(parents=True)
    name = "000001.jpg"
    Image.fromarray(aligned_image(synthetic.sample_dataset(1, 1, seed=0)[0])).save(root / "img_align_celeba" / name)
    (root / "list_attr_celeba.txt").write_text(f"1\n{' '.join(CELEBA_ATTRIBUTES)}\n{name}" + " -1" * 40 + "\n")
    pts = np.array([[69, 111], [108, 111], [88, 134], [72, 152], [106, 152]], dtype=np.float32)  # CelebA's mean 5 points
    (root / "list_landmarks_align_celeba.txt").write_text(
        "1\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        f"{name} " + " ".join(str(int(v)) for v in pts.ravel()) + "\n")
    report = ingest(data_cfg(root, resolution=89), ["Smiling"], tmp_path / "out", seed=0, progress=False)
    assert report["source_landmarks"] == "landmarks_celeba5.npy"
    lm5 = np.load(tmp_path / "out" / "landmarks_celeba5.npy")
    # Crop rows 20..198 of 178 px, then halve: x' = (x + 0.5) / 2 - 0.5, y' = (y - 20 + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(lm5[0], np.stack([(pts[:, 0] + 0.5) / 2 - 0.5, (pts[:, 1] - 19.5) / 2 - 0.5], 1), atol=1e-5)


def test_crop_rules_and_point_mapping() -> None:
    assert crop_box(256, 256) == ((0, 0, 256, 256), "square")
    assert crop_box(178, 218) == ((0, 20, 178, 198), "celeba_aligned")
    assert crop_box(300, 200) == ((50, 0, 250, 200), "centre")
    lm5 = np.array([[400, 300], [480, 300], [440, 350], [410, 390], [470, 390]], dtype=np.float32)
    (x0, y0, x1, y1), kind = crop_box(1000, 700, lm5)
    assert kind == "face" and x1 - x0 == y1 - y0 and x0 < 400 and x1 > 480 and y0 < 300 and y1 > 390
    boxes = np.array([[x0, y0, x1, y1]], dtype=np.float32)
    pts = np.random.default_rng(0).uniform(0, 700, (1, 68, 2)).astype(np.float32)
    np.testing.assert_allclose(prepared_to_source(source_to_prepared(pts, boxes, 128), boxes, 128), pts, atol=1e-3)


def test_synthetic_source_dispatches(tmp_path: Path) -> None:
    cfg = tiny_section("data", source="synthetic", synthetic_identities=2, synthetic_images_per_identity=1, resolution=64)
    report = ingest(cfg, ["Mustache", "eyeglasses"], tmp_path / "syn", seed=3, progress=False)
    assert report["images"] == 2
    assert np.load(tmp_path / "syn" / "images.npy").shape == (2, 64, 64, 3)
    assert np.load(tmp_path / "syn" / "landmarks_exact.npy").shape == (2, 68, 2)
    with pytest.raises(ConfigError, match="did you mean 'Mustache'"):
        ingest(cfg, ["Mustach"], tmp_path / "syn2", seed=3, progress=False)
