"""Ingestion from a CelebA-format folder and a folder + CSV built from real faces, bad files included.

The real faces come from ../shared/data/celebahq-200 (CelebA-HQ: non-commercial research use only);
the tests skip when that folder is absent.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geogan.config import ConfigError, DataConfig
from geogan.data.align import crop_box, prepared_to_source, source_to_prepared
from geogan.data.ingest import IngestError, ingest

N_GOOD = 12
BAD_FILES = {"bad_random.jpg": "corrupt", "cut_half.jpg": "truncated", "grey.jpg": "greyscale",
             "tiny.jpg": "too_small", "absent.jpg": "missing"}


def read_attr(shared: Path) -> tuple[list[str], dict[str, list[str]]]:
    lines = (shared / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:] if ln.strip()}
    return header, rows


def build_celeba_folder(shared: Path, root: Path, partition: bool = False) -> list[str]:
    """A small CelebA-format folder: 12 real faces + one corrupt, truncated, grey, tiny and absent file.

    Returns:
        The names of the 12 good images, in file order.
    """
    header, rows = read_attr(shared)
    names = sorted(rows)
    good, spare = names[:N_GOOD], names[N_GOOD:N_GOOD + 3]
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for n in good:
        (images / n).write_bytes((shared / "images" / n).read_bytes())
    (images / "bad_random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    data = (shared / "images" / spare[0]).read_bytes()
    (images / "cut_half.jpg").write_bytes(data[: len(data) // 2])
    Image.open(shared / "images" / spare[1]).convert("L").save(images / "grey.jpg", quality=95)
    Image.open(shared / "images" / spare[2]).resize((32, 32)).save(images / "tiny.jpg")
    (images / "unlabelled.jpg").write_bytes((shared / "images" / spare[0]).read_bytes())  # no labels: ignored
    listed = good + list(BAD_FILES)
    label_rows = [f"{n} " + " ".join(rows.get(n, rows[good[0]])) for n in listed]
    (root / "list_attr_celeba.txt").write_text(f"{len(listed)}\n" + " ".join(header) + "\n" + "\n".join(label_rows) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {i % 3}\n" for i, n in enumerate(listed)))
        (root / "identity_CelebA.txt").write_text("".join(f"{n} {100 + i // 2}\n" for i, n in enumerate(listed)))
    return good


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_cfg(source: Path | str, **kw) -> DataConfig:
    base = dict(source=str(source), resolution=64, workers=1, min_image_size=64, license_ack=True)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def celeba_folder(shared_faces: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "celeba"
    return root, build_celeba_folder(shared_faces, root, partition=True)


def test_celeba_folder_with_bad_files(celeba_folder, shared_faces: Path, tmp_path: Path, capsys) -> None:
    root, good = celeba_folder
    out = tmp_path / "prepared"
    report = ingest(data_cfg(root), ["Mustache", "eyeglasses"], out, seed=0, progress=False)

    assert report["found"] == N_GOOD + len(BAD_FILES) and report["used"] == N_GOOD
    assert report["skipped"] == len(BAD_FILES) and report["unlabelled"] == 1
    by_reason = {r: v["files"] for r, v in report["skipped_by_reason"].items()}
    assert by_reason == {reason: [name] for name, reason in BAD_FILES.items()}
    assert json.loads((out / "report.json").read_text())["skipped_by_reason"] == report["skipped_by_reason"]
    line = capsys.readouterr().out
    assert f"used {N_GOOD} of {N_GOOD + len(BAD_FILES)}" in line and "truncated 1: cut_half.jpg" in line

    images = np.load(out / "images.npy")
    assert images.shape == (N_GOOD, 64, 64, 3) and images.dtype == np.uint8
    # CelebA-HQ is square: the whole image resized (Lanczos), nothing else.
    expected = np.asarray(Image.open(shared_faces / "images" / good[3]).convert("RGB").resize((64, 64), Image.LANCZOS))
    np.testing.assert_array_equal(images[3], expected)
    np.testing.assert_array_equal(np.load(out / "crops.npy"), np.tile([0, 0, 256, 256], (N_GOOD, 1)))

    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # params.yaml's attributes first, in its spelling, then every other CelebA column under its own name
    assert list(rows[0])[:6] == ["index", "image", "identity", "partition", "Mustache", "eyeglasses"]
    assert "Male" in rows[0] and "Eyeglasses" not in rows[0] and len(rows[0]) == 4 + 40
    assert [r["image"] for r in rows] == good
    header, labels = read_attr(shared_faces)
    for r in rows:
        assert int(r["Mustache"]) == (labels[r["image"]][header.index("Mustache")] == "1")
        assert int(r["eyeglasses"]) == (labels[r["image"]][header.index("Eyeglasses")] == "1")
    assert [r["partition"] for r in rows[:3]] == ["train", "val", "test"]
    assert rows[2]["identity"] == "101"


def test_process_pool_gives_the_same_files(celeba_folder, tmp_path: Path) -> None:
    root, _ = celeba_folder
    ingest(data_cfg(root), ["Mustache"], tmp_path / "one", seed=0, progress=False)
    ingest(data_cfg(root, workers=2), ["Mustache"], tmp_path / "two", seed=0, progress=False)
    for name in ("images.npy", "manifest.csv", "crops.npy"):
        assert sha256(tmp_path / "one" / name) == sha256(tmp_path / "two" / name)


def test_attribute_typo_gets_a_suggestion(celeba_folder, tmp_path: Path) -> None:
    root, _ = celeba_folder
    with pytest.raises(ConfigError, match=r"attribute 'Mustach' not in .*list_attr_celeba.txt; did you mean 'Mustache'\?"):
        ingest(data_cfg(root), ["Mustach"], tmp_path / "out", seed=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_celeba_needs_license_ack(celeba_folder, tmp_path: Path) -> None:
    root, _ = celeba_folder
    with pytest.raises(ConfigError, match="license_ack"):
        ingest(data_cfg(root, license_ack=False), ["Mustache"], tmp_path / "out", seed=0, progress=False)


def test_no_usable_image_is_an_error(shared_faces: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    header, rows = read_attr(shared_faces)
    (root / "images" / "a.jpg").write_bytes(b"not an image")
    (root / "list_attr_celeba.txt").write_text("1\n" + " ".join(header) + "\na.jpg " + " ".join(next(iter(rows.values()))) + "\n")
    with pytest.raises(IngestError, match=r"no usable image .*corrupt 1"):
        ingest(data_cfg(root), ["Mustache"], tmp_path / "out", seed=0, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no files found"):
        ingest(data_cfg(tmp_path / "empty"), ["Mustache"], tmp_path / "out", seed=0, progress=False)


def test_csv_folder_non_square_images(shared_faces: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "pics").mkdir(parents=True)
    names = sorted(p.name for p in (shared_faces / "images").iterdir())[:4]
    for i, n in enumerate(names):
        im = Image.open(shared_faces / "images" / n).convert("RGB")
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


def test_celeba_five_points_follow_the_crop(shared_faces: Path, tmp_path: Path) -> None:
    root = tmp_path / "aligned"
    (root / "img_align_celeba").mkdir(parents=True)
    header, rows = read_attr(shared_faces)
    name = sorted(rows)[0]
    Image.open(shared_faces / "images" / name).convert("RGB").resize((178, 218)).save(root / "img_align_celeba" / name)
    (root / "list_attr_celeba.txt").write_text(f"1\n{' '.join(header)}\n{name} {' '.join(rows[name])}\n")
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
    cfg = DataConfig(source="synthetic", synthetic_identities=2, synthetic_images_per_identity=1, resolution=64)
    report = ingest(cfg, ["Mustache", "eyeglasses"], tmp_path / "syn", seed=3, progress=False)
    assert report["images"] == 2
    assert np.load(tmp_path / "syn" / "images.npy").shape == (2, 64, 64, 3)
    assert np.load(tmp_path / "syn" / "landmarks_exact.npy").shape == (2, 68, 2)
    with pytest.raises(ConfigError, match="did you mean 'Mustache'"):
        ingest(cfg, ["Mustach"], tmp_path / "syn2", seed=3, progress=False)
