"""Unpaired splits: deterministic, no identity in both A and B or in both train and test."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from geogan.data.split import SplitError, make_split, read_manifest


def _manifest(tmp_path, n=60, identities=20, seed=0, partition=False):
    rng = np.random.default_rng(seed)
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "image", "identity", "partition", "Mustache", "Eyeglasses"])
        for i in range(n):
            part = ["train", "val", "test"][i % 3] if partition else ""
            w.writerow([i, f"{i:06d}.png", f"p{i % identities}", part, int(rng.random() < 0.4), int(rng.random() < 0.3)])
    return read_manifest(path)


def test_unpaired_and_deterministic(tmp_path):
    m = _manifest(tmp_path)
    valid = np.ones(len(m), bool)
    s1 = make_split(m, "mustache", valid, seed=3, test_fraction=0.25)
    s2 = make_split(m, "Mustache", valid, seed=3, test_fraction=0.25)
    assert s1["train"] == s2["train"] and s1["test"] == s2["test"]
    s3 = make_split(m, "Mustache", valid, seed=4, test_fraction=0.25)
    assert s3["train"] != s1["train"]
    ident = np.array(m.identities)
    lab = m.labels["Mustache"]
    a = {int(i) for p in ("train", "val", "test") for i in s1[p]["A"]}
    b = {int(i) for p in ("train", "val", "test") for i in s1[p]["B"]}
    assert not set(ident[list(a)]) & set(ident[list(b)]), "an identity is in both A and B"
    assert all(lab[i] == 0 for i in a) and all(lab[i] == 1 for i in b)
    train = {i for d in "AB" for i in s1["train"][d]}
    test = {i for d in "AB" for i in s1["test"][d]}
    assert not set(ident[list(train)]) & set(ident[list(test)]), "an identity is in both train and test"
    # every image is accounted for: kept, or dropped with a reason
    counts = s1["counts"]
    kept = sum(counts[f"{p}_{d}"] for p in ("train", "val", "test") for d in "AB")
    assert kept + sum(v for k, v in counts.items() if k.startswith("dropped_")) == len(m)


def test_invalid_landmarks_excluded(tmp_path):
    m = _manifest(tmp_path)
    valid = np.ones(len(m), bool)
    valid[:10] = False
    s = make_split(m, "Mustache", valid, seed=0, test_fraction=0.2)
    used = {i for p in ("train", "test") for d in "AB" for i in s[p][d]}
    assert not used & set(range(10))
    assert s["counts"]["dropped_no_landmarks"] == 10


def test_source_partition_used(tmp_path):
    m = _manifest(tmp_path, identities=60, partition=True)
    s = make_split(m, "Eyeglasses", np.ones(len(m), bool), seed=0, test_fraction=0.5)
    for part in ("train", "val", "test"):  # CelebA's val is its own partition, not training data
        assert s[part]["A"] and all(m.partitions[i] == part for d in "AB" for i in s[part][d])


def test_partitions_are_the_datasets_not_the_attributes(tmp_path):
    m = _manifest(tmp_path, n=120, identities=40)
    valid = np.ones(len(m), bool)
    parts = {}
    for attribute in ("Mustache", "Eyeglasses"):
        s = make_split(m, attribute, valid, seed=1, test_fraction=0.25, val_fraction=0.25)
        parts[attribute] = {i: p for p in ("train", "val", "test") for d in "AB" for i in s[p][d]}
    shared = parts["Mustache"].keys() & parts["Eyeglasses"].keys()
    assert len(shared) > 30 and all(parts["Mustache"][i] == parts["Eyeglasses"][i] for i in shared)
    assert {"train", "val", "test"} == set(parts["Mustache"].values())


def test_population_and_matching(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "image", "identity", "partition", "Mustache", "Male", "No_Beard"])
        for i in range(400):
            male = int(rng.random() < 0.6)
            mustache = int(male and rng.random() < 0.3)
            beard = int(mustache and rng.random() < 0.9 or (male and rng.random() < 0.2))
            w.writerow([i, f"{i:06d}.png", f"p{i}", "train", mustache, male, 1 - beard])
    m = read_manifest(path)
    male = m.labels["Male"].astype(bool)
    s = make_split(m, "Mustache", np.ones(len(m), bool), seed=0, test_fraction=0.0, population=male,
                   match=["No_Beard"])
    a, b = np.array(s["train"]["A"]), np.array(s["train"]["B"])
    assert male[a].all() and male[b].all()  # women are outside the population
    assert s["counts"]["dropped_outside_population"] == int((~male).sum())
    beard_a, beard_b = 1 - m.labels["No_Beard"][a].mean(), 1 - m.labels["No_Beard"][b].mean()
    assert abs(beard_a - beard_b) < 0.02 < s["counts"]["dropped_unmatched"]  # A now as bearded as B


def test_unknown_attribute_suggests(tmp_path):
    m = _manifest(tmp_path)
    with pytest.raises(SplitError, match="did you mean 'Mustache'"):
        make_split(m, "Mustachee", np.ones(len(m), bool), seed=0, test_fraction=0.2)


def test_empty_domain_is_an_error(tmp_path):
    m = _manifest(tmp_path)
    m.labels["Mustache"][:] = 0
    with pytest.raises(SplitError, match="no training images with the attribute"):
        make_split(m, "Mustache", np.ones(len(m), bool), seed=0, test_fraction=0.2)


def test_split_stage_errors_leave_no_output(tmp_path, tiny_params):
    prepared, lm = tmp_path / "prepared", tmp_path / "lm"
    prepared.mkdir(), lm.mkdir()
    m = _manifest(prepared)
    np.save(lm / "landmarks.npy", np.zeros((len(m), 68, 2), np.float32))

    out = tmp_path / "splits" / "Beard.json"
    r = subprocess.run([sys.executable, "-m", "geogan.stages.split", "--params", str(tiny_params), "--attribute", "Beard",
                        "--prepared", str(prepared), "--landmarks", str(lm), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "attribute 'Beard' is not in params.yaml" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list((tmp_path).glob("splits/.*tmp"))
    out = tmp_path / "splits" / "Mustache.json"
    r = subprocess.run([sys.executable, "-m", "geogan.stages.split", "--params", str(tiny_params), "--attribute", "Mustache",
                        "--prepared", str(prepared), "--landmarks", str(lm), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["counts"]["train_B"] > 0


def test_celeba_partitions_and_identities_carry_through_ingest_landmarks_and_split(tmp_path):
    """A CelebA-format folder (synthetic faces, tests/helpers/celeba.py) through the stages' own functions:
    CelebA's partition file decides train/val/test, identities never straddle A/B or partitions,
    and 68 precomputed source-pixel landmarks land on the exact points of the prepared frame."""
    from geogan.data import synthetic
    from geogan.stages import ingest as ingest_stage
    from geogan.stages import landmarks as landmarks_stage
    from geogan.stages import split as split_stage
    from tests.helpers.celeba import write_celeba_folder, write_landmarks_csv
    from tests.helpers.params import tiny_config

    # 18 people x 2 images: every partition holds people with and without each attribute.
    folder = write_celeba_folder(tmp_path / "celeba", identities=18, images_per_identity=2)
    cfg = tiny_config(**{"data.source": str(folder.root), "data.license_ack": True, "landmarks.backend": "precomputed",
                         "landmarks.precomputed_file": str(write_landmarks_csv(folder, tmp_path / "lm.csv"))})
    prepared, lm_dir = tmp_path / "prepared", tmp_path / "landmarks"
    ingest_stage.run(cfg, prepared, progress=False)
    landmarks_stage.run(cfg, prepared, lm_dir, progress=False)
    manifest = read_manifest(prepared / "manifest.csv")
    assert list(manifest.images) == folder.names  # the bad files are skipped, the good ones kept in order
    exact = np.stack([synthetic.face_landmarks(folder.faces[n].face, 64) for n in folder.names])
    np.testing.assert_allclose(np.load(lm_dir / "landmarks.npy"), exact, atol=1e-3)

    for attribute in ("Mustache", "Eyeglasses"):
        out = tmp_path / "splits" / f"{attribute}.json"
        split_stage.run(cfg, attribute, prepared, lm_dir, out)
        s = json.loads(out.read_text())
        names = np.array(manifest.images)
        for part, allowed in (("train", {"0"}), ("val", {"1"}), ("test", {"2"})):
            for domain, label in (("A", 0), ("B", 1)):
                assert all(folder.partitions[n] in allowed for n in names[s[part][domain]]), (attribute, part, domain)
                assert all(folder.labels[n][attribute] == label for n in names[s[part][domain]]), (attribute, part, domain)
        parts = ("train", "val", "test")
        ids = {(p, d): {folder.identities[n] for n in names[s[p][d]]} for p in parts for d in "AB"}
        assert not set().union(*(ids[p, "A"] for p in parts)) & set().union(*(ids[p, "B"] for p in parts)), attribute
        for i, p in enumerate(parts):
            for q in parts[i + 1:]:
                assert not (ids[p, "A"] | ids[p, "B"]) & (ids[q, "A"] | ids[q, "B"]), (attribute, p, q)
        assert all(s[p][d] for p in parts for d in "AB"), (attribute, s["counts"])
        kept = sum(s["counts"][f"{p}_{d}"] for p in parts for d in "AB")
        assert kept + s["counts"]["dropped_identity_in_both"] == len(folder.names), attribute
