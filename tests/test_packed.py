"""Packed folders: the training rows of some splits as WebP, read back by load_prepared like images.npy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from geogan.data.dataset import load_prepared
from tests.helpers.data import make_tiny_data
from tests.helpers.processes import stage_env


def test_pack_keeps_the_training_rows_and_reindexes_the_splits(tmp_path):
    data = make_tiny_data(tmp_path / "data", attributes=("Mustache", "Eyeglasses"))
    out = tmp_path / "packed"
    r = subprocess.run([sys.executable, "-m", "geogan.stages.pack", "--prepared", str(data.prepared),
                        "--landmarks", str(data.landmarks), "--splits", *map(str, data.splits.values()),
                        "--out", str(out), "--quality", "95"], capture_output=True, text=True, env=stage_env(tmp_path))
    assert r.returncode == 0, r.stderr
    full = load_prepared(data.prepared, data.landmarks)
    packed = load_prepared(out / "prepared", out / "landmarks")
    for name in ("Mustache.json", "Eyeglasses.json"):
        old, new = (json.loads((d / name).read_text()) for d in (data.prepared.parent / "splits", out / "splits"))
        assert new["test"] == {"A": [], "B": []}  # only the training partition travels
        for dom in "AB":
            old_rows, new_rows = old["train"][dom], new["train"][dom]
            assert len(old_rows) == len(new_rows) > 0
            np.testing.assert_array_equal(packed.landmarks[new_rows], full.landmarks[old_rows])
            # lossy, but close: WebP at quality 95 on 64 px faces
            diff = np.abs(packed.images[new_rows].astype(int) - full.images[old_rows].astype(int)).mean()
            assert diff < 4.0, diff
    rows = json.loads((out / "prepared" / "report.json").read_text())["rows"]
    assert packed.images.shape == (rows, 64, 64, 3) and packed.images.dtype == np.uint8


def test_pack_refuses_a_bad_quality_and_leaves_nothing(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    r = subprocess.run([sys.executable, "-m", "geogan.stages.pack", "--prepared", str(data.prepared),
                        "--landmarks", str(data.landmarks), "--splits", str(data.splits["Mustache"]),
                        "--out", str(tmp_path / "packed"), "--quality", "0"], capture_output=True, text=True,
                       env=stage_env(tmp_path))
    assert r.returncode == 2 and "--quality must be in [1, 100]" in r.stderr
    assert not (tmp_path / "packed").exists()
