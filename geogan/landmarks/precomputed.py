"""The `precomputed` backend: 68-point landmarks from a file made elsewhere (.npy or .csv)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from geogan.landmarks.base import N_POINTS, LandmarkError, TableBackend


def build_precomputed(path: str | Path, prepared_dir: Path) -> TableBackend:
    """Load a precomputed landmark file and align it with the prepared dataset.

    The format follows the extension. `.npy`, float (N, 68, 2): row for row with the prepared
    manifest, (x, y) in *prepared* pixels (e.g. a landmarks.npy from an earlier run or another tool
    run on images.npy). `.csv`: a column `image` (the manifest's image name) and 136 columns
    `x0,y0,...,x67,y67` in *source-image* pixels, mapped into the prepared frame through crops.npy;
    images absent from the CSV, or with an empty value, count as missing. CelebA's own landmark file
    (list_landmarks_align_celeba.txt) has 5 points, not 68, and is refused: the landmark loss and the
    split need the full 68-point iBUG 300-W layout, and 5 points do not determine the other 63.
    (Ingestion keeps CelebA's five as landmarks_celeba5.npy for cropping and checks.)

    Args:
        path: the file (landmarks.precomputed_file), .npy or .csv.
        prepared_dir: the prepared dataset (manifest.csv, images.npy, crops.npy).
    Returns:
        A table backend over the (N, 68, 2) prepared-frame landmarks.
    Raises:
        LandmarkError: naming the file when it is missing, 5-point, or misaligned.
    """
    if not str(path):
        raise LandmarkError("landmarks.backend 'precomputed' needs landmarks.precomputed_file (.npy or .csv)")
    path, prepared_dir = Path(path), Path(prepared_dir)
    if not path.is_file():
        raise LandmarkError(f"{path.resolve()}: precomputed landmark file not found (landmarks.precomputed_file)")
    images = np.load(prepared_dir / "images.npy", mmap_mode="r")
    n = len(images)
    if path.name.startswith("list_landmarks") or path.suffix == ".txt":
        raise LandmarkError(f"{path}: CelebA's landmark file has 5 points per face; 68 iBUG 300-W points are needed "
                            "(use landmarks.backend 'dlib' or 'fan' to compute them)")
    if path.suffix == ".npy":
        table = np.load(path)
        if table.ndim == 3 and table.shape[1:] == (5, 2):
            raise LandmarkError(f"{path}: 5 points per face; 68 iBUG 300-W points are needed")
        if table.shape != (n, N_POINTS, 2):
            raise LandmarkError(f"{path}: shape {table.shape}, expected ({n}, {N_POINTS}, 2) "
                                f"aligned with {prepared_dir / 'manifest.csv'}")
    elif path.suffix == ".csv":
        table = _read_csv(path, prepared_dir, int(images.shape[1]))
    else:
        raise LandmarkError(f"{path}: unknown precomputed landmark format (expected .npy or .csv)")
    return TableBackend("precomputed", table.astype(np.float32), images)


def _read_csv(path: Path, prepared_dir: Path, resolution: int) -> np.ndarray:
    from geogan.data.align import source_to_prepared

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    coords = [f"{a}{i}" for i in range(N_POINTS) for a in "xy"]
    missing = [c for c in ["image", *coords] if c not in header]
    if missing:
        n_xy = sum(1 for h in header if h[:1] in "xy" and h[1:].isdigit())
        if n_xy == 10:
            raise LandmarkError(f"{path}: 5 points per face; 68 iBUG 300-W points are needed")
        raise LandmarkError(f"{path}: missing columns {missing[:4]}{'...' if len(missing) > 4 else ''} "
                            "(expected image,x0,y0,...,x67,y67 in source-image pixels)")
    by_name = {r["image"]: [float(r[c]) if r[c] not in ("", None) else np.nan for c in coords] for r in rows}
    with open(prepared_dir / "manifest.csv", newline="", encoding="utf-8") as f:
        names = [r["image"] for r in csv.DictReader(f)]
    nan = [np.nan] * (2 * N_POINTS)
    source_pts = np.array([by_name.get(n, nan) for n in names], dtype=np.float64).reshape(-1, N_POINTS, 2)
    crops_file = prepared_dir / "crops.npy"
    if not crops_file.is_file():
        raise LandmarkError(f"{crops_file}: not found; a CSV of source-image landmarks needs the crop boxes written by ingest")
    return source_to_prepared(source_pts, np.load(crops_file), resolution)
