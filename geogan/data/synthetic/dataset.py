"""Synthetic datasets on disk: render a prepared-dataset folder atomically, and read synthetic.json back."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from geogan.data.synthetic.drawing import check_size, face_landmarks, render
from geogan.data.synthetic.face import (
    SYNTHETIC_ATTRIBUTES,
    SyntheticFace,
    face_from_dict,
    face_to_dict,
    labels,
)
from geogan.data.synthetic.sampling import sample_dataset


def load_synthetic(path: str | Path) -> tuple[list[SyntheticFace], dict[str, Any]]:
    """Read a synthetic.json (or the prepared folder holding it).

    Returns:
        (faces in dataset order, metadata such as resolution and seed).
    """
    from geogan.io import read_json

    p = Path(path)
    p = p / "synthetic.json" if p.is_dir() else p
    data = read_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("faces"), list):
        raise ValueError(f"{p}: expected an object with a 'faces' list")
    try:
        faces = [face_from_dict(d) for d in data["faces"]]
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from e
    return faces, {k: v for k, v in data.items() if k != "faces"}


def _render_chunk(faces: list[SyntheticFace], size: int) -> np.ndarray:
    return np.stack([render(f, size) for f in faces])


def _render_all(faces: list[SyntheticFace], size: int, out: np.ndarray, workers: int, progress: bool) -> None:
    """Render faces into out[i]; with workers > 1, chunks go to spawned processes (same bytes)."""
    from tqdm import tqdm

    bar = tqdm(total=len(faces), desc="render synthetic", unit="img", disable=not progress)
    chunk = 32
    starts = range(0, len(faces), chunk)
    if workers <= 1 or len(faces) <= 2 * chunk:
        for i in starts:
            out[i : i + chunk] = _render_chunk(faces[i : i + chunk], size)
            bar.update(len(out[i : i + chunk]))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold torch/BLAS threads that a fork would copy mid-lock.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            jobs = pool.map(_render_chunk, [faces[i : i + chunk] for i in starts], [size] * len(starts))
            for i, images in zip(starts, jobs):
                out[i : i + len(images)] = images
                bar.update(len(images))
    bar.close()


def write_synthetic_dataset(
    out_dir: Path,
    n_identities: int,
    images_per_identity: int,
    resolution: int,
    seed: int,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Render a synthetic dataset into a prepared-dataset folder, atomically.

    Writes images.npy (uint8 (N, R, R, 3)), manifest.csv (index,image,identity,Eyeglasses,
    Mustache,Smiling,partition with partition empty), synthetic.json ({"faces": [...],
    "resolution", "seed", ...}), landmarks_exact.npy (float32 (N, 68, 2)) and report.json.
    The same arguments give byte-identical files, whatever `workers` (render processes).

    Returns:
        The report dict, plus "seconds" (render time, kept out of report.json so the
        files stay deterministic).
    """
    from geogan.io import (
        atomic_path,
        atomic_write_json,
        atomic_write_npy,
        atomic_write_text,
    )

    check_size(resolution)
    start = time.perf_counter()
    faces = sample_dataset(n_identities, images_per_identity, seed)
    n = len(faces)
    attrs = sorted(SYNTHETIC_ATTRIBUTES)
    landmarks = np.stack([face_landmarks(f.face, resolution) for f in faces])  # (N, 68, 2)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # The folder is renamed into place at the end, so images can stream into it.
        shape = (n, resolution, resolution, 3)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        _render_all(faces, resolution, images, workers, progress)
        images.flush()
        del images
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["index", "image", "identity", *attrs, "partition"])
        counts = {a: 0 for a in attrs}
        for i, f in enumerate(faces):
            lab = labels(f)
            for a in attrs:
                counts[a] += lab[a]
            writer.writerow([i, f"synthetic_{i:06d}", str(f.identity), *(lab[a] for a in attrs), ""])
        atomic_write_text(tmp / "manifest.csv", rows.getvalue())
        meta = {"resolution": resolution, "seed": seed, "n_identities": n_identities,
                "images_per_identity": images_per_identity}
        atomic_write_json(tmp / "synthetic.json", {**meta, "faces": [face_to_dict(f) for f in faces]})
        atomic_write_npy(tmp / "landmarks_exact.npy", landmarks)
        report = {"source": "synthetic", "images": n, "skipped": 0, "identities": n_identities,
                  "resolution": resolution, "seed": seed, "attributes": counts}
        atomic_write_json(tmp / "report.json", report)
    return {**report, "seconds": round(time.perf_counter() - start, 3)}
