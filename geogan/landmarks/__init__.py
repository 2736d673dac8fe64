"""68-point landmarks for the prepared dataset, from the backend `landmarks.backend` names.

dlib's 68-point model was trained on iBUG 300-W: non-commercial research only.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from geogan.config import LandmarksConfig
from geogan.landmarks.base import N_POINTS, LandmarkBackend, LandmarkError, clean_rows

__all__ = ["LandmarkBackend", "LandmarkError", "build_backend", "extract_landmarks"]

MAX_LISTED_MISSING = 1000  # image names listed in report.json; the count is always exact


def build_backend(cfg: LandmarksConfig, prepared_dir: Path) -> LandmarkBackend:
    """The backend named by cfg.backend, ready to run.

    `exact`: the synthetic generator's true landmarks (synthetic data only); `dlib`: HOG detector +
    dlib's 68-point predictor, CPU and offline; `fan`: face-alignment's 2DFAN4, batched on the GPU
    with the aligned-face box known; `precomputed`: a user file (.npy in prepared pixels or .csv in
    source pixels).

    Args:
        cfg: the `landmarks` section.
        prepared_dir: the prepared dataset (exact and precomputed read their tables from it).
    Raises:
        LandmarkError: one line naming what is missing (weights, package, file) and the way out.
    """
    prepared_dir = Path(prepared_dir)
    if cfg.backend == "exact":
        from geogan.landmarks.exact import build_exact

        return build_exact(prepared_dir)
    if cfg.backend == "precomputed":
        from geogan.landmarks.precomputed import build_precomputed

        return build_precomputed(cfg.precomputed_file, prepared_dir)
    if cfg.backend == "dlib":
        from geogan.landmarks.dlib_backend import DlibBackend

        return DlibBackend()
    if cfg.backend == "fan":
        from geogan.landmarks.fan import build_fan

        return build_fan(cfg.fan_weights, cfg.device, cfg.batch_size)
    raise LandmarkError(f"unknown landmarks.backend '{cfg.backend}' (exact, dlib, fan, precomputed)")


def extract_landmarks(cfg: LandmarksConfig, prepared_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """Landmarks for every prepared image, written as out_dir/landmarks.npy + report.json.

    landmarks.npy is float32 (N, 68, 2) in prepared pixels, with NaN rows where no face was found;
    both files are written atomically into the one folder.

    Args:
        cfg: the `landmarks` section.
        prepared_dir: the folder written by ingest (images.npy, manifest.csv).
        out_dir: the landmarks folder to (re)write atomically.
        progress: show a progress bar over batches.
    Returns:
        The report: backend, images, found, missing (+ the missing image names), seconds.
    """
    from tqdm import tqdm

    from geogan.io import atomic_path, atomic_write_json, atomic_write_npy

    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    images_file = prepared_dir / "images.npy"
    if not images_file.is_file():
        raise FileNotFoundError(f"{images_file}: not found (run the ingest stage first)")
    start = time.perf_counter()
    images = np.load(images_file, mmap_mode="r")  # (N, H, W, 3) uint8
    backend = build_backend(cfg, prepared_dir)
    table = getattr(backend, "table", None)
    if table is not None:
        landmarks = np.asarray(table, dtype=np.float32)
    else:
        landmarks = np.full((len(images), N_POINTS, 2), np.nan, dtype=np.float32)
        step = max(1, cfg.batch_size)
        for i in tqdm(range(0, len(images), step), desc=f"landmarks ({backend.name})", unit="batch", disable=not progress):
            batch = np.asarray(images[i:i + step])
            found = backend.detect(batch)
            if found.shape != (len(batch), N_POINTS, 2):
                raise LandmarkError(f"backend '{backend.name}' returned shape {found.shape} for {len(batch)} images")
            landmarks[i:i + step] = found
    landmarks = clean_rows(landmarks)
    missing = np.flatnonzero(np.isnan(landmarks).any(axis=(1, 2)))
    names = _manifest_names(prepared_dir / "manifest.csv", len(images))
    report = {
        "backend": backend.name,
        "images": int(len(images)),
        "found": int(len(images) - len(missing)),
        "missing": int(len(missing)),
        "missing_images": [names[i] for i in missing[:MAX_LISTED_MISSING]],
        "outside_image": int(_outside(landmarks, images.shape[2], images.shape[1])),
        "seconds": round(time.perf_counter() - start, 3),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        atomic_write_npy(tmp / "landmarks.npy", landmarks)
        atomic_write_json(tmp / "report.json", report)
    print(f"landmarks ({backend.name}): found {report['found']} of {report['images']} faces; "
          f"{report['missing']} missing (excluded from splits)")
    return report


def _manifest_names(path: Path, n: int) -> list[str]:
    if not path.is_file():
        return [str(i) for i in range(n)]
    with open(path, newline="", encoding="utf-8") as f:
        names = [r["image"] for r in csv.DictReader(f)]
    return names if len(names) == n else [str(i) for i in range(n)]


def _outside(landmarks: np.ndarray, width: int, height: int) -> int:
    """Faces with some point more than half an image outside the frame: a sign of a bad fit."""
    ok = np.isfinite(landmarks).all(axis=(1, 2))
    lm = landmarks[ok]
    bad = (lm[..., 0] < -width / 2) | (lm[..., 0] > 1.5 * width) | (lm[..., 1] < -height / 2) | (lm[..., 1] > 1.5 * height)
    return int(bad.any(axis=1).sum())
