"""The `exact` backend: synthetic faces carry their true landmarks (landmarks_exact.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geogan.landmarks.base import N_POINTS, LandmarkError, TableBackend

EXACT_FILE = "landmarks_exact.npy"


def build_exact(prepared_dir: Path) -> TableBackend:
    """The synthetic generator's own landmarks, row for row with the prepared images.

    Raises:
        LandmarkError: when the prepared dataset is not synthetic (no landmarks_exact.npy).
    """
    path = Path(prepared_dir) / EXACT_FILE
    if not path.is_file():
        raise LandmarkError(f"{path}: not found; landmarks.backend 'exact' works only on the synthetic dataset "
                            "(data.source: synthetic); for real faces use 'dlib' (CPU, offline), 'fan' (GPU) or 'precomputed'")
    table = np.load(path)
    images = np.load(Path(prepared_dir) / "images.npy", mmap_mode="r")
    if table.shape != (len(images), N_POINTS, 2):
        raise LandmarkError(f"{path}: shape {table.shape}, expected ({len(images)}, {N_POINTS}, 2) to match images.npy")
    return TableBackend("exact", table, images)
