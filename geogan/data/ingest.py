"""Ingestion: synthetic faces, a CelebA-format folder or a folder + CSV (local or S3) -> a prepared dataset.

The prepared folder (written atomically) holds images.npy (uint8 (N, R, R, 3)), manifest.csv,
crops.npy (the source box resized into each image, `geogan.data.align`), report.json and, with
CelebA's 5-point file, landmarks_celeba5.npy. Corrupt, truncated, grey-scale, too small or
missing files are skipped and counted by reason, never fatal on their own. CelebA and
CelebA-HQ are for non-commercial research only: a CelebA source needs `data.license_ack: true`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from geogan.config import ConfigError, DataConfig
from geogan.data.labels import (
    CELEBA_LICENSE,
    IngestError,
    LabelTable,
    detect_format,
    match_attributes,
    read_celeba_labels,
    read_csv_labels,
)
from geogan.data.sources import Source, SourceError, open_source

__all__ = ["IngestError", "ingest"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_LISTED_FILES = 1000  # per skip reason in report.json; the count is always exact


def ingest(cfg: DataConfig, attributes: Sequence[str], out_dir: Path, seed: int, progress: bool = True) -> dict:
    """Prepare the dataset folder from the configured source, atomically.

    Args:
        cfg: the `data` section (source, format, resolution, workers, ...).
        attributes: attribute names from params.yaml; matched case-insensitively to the source.
        out_dir: the prepared folder to (re)write.
        seed: the synthetic generator's seed (real sources are deterministic without one).
        progress: show tqdm progress bars.
    Returns:
        The report (as in report.json, plus "seconds").
    Raises:
        ConfigError: an attribute is not in the source (with a suggestion).
        IngestError / SourceError: no labels, no usable image, or an unreadable source.
    """
    out_dir = Path(out_dir)
    fmt = cfg.format
    if cfg.source == "synthetic" or fmt == "synthetic":
        return _ingest_synthetic(cfg, attributes, out_dir, seed, progress)
    start = time.perf_counter()
    source = open_source(cfg.source)
    files = set(source.list_files())
    if not files:
        raise IngestError(f"data source {source.uri}: no files found")
    fmt = detect_format(cfg, source, files) if fmt == "auto" else fmt
    if fmt == "celeba":
        if not cfg.license_ack:
            raise ConfigError(f"data source {source.uri} is in CelebA format ({CELEBA_LICENSE}): "
                              "set data.license_ack: true to confirm non-commercial research use")
        table = read_celeba_labels(source, files, attributes)
    else:
        table = read_csv_labels(source, files, cfg, attributes)
    report = _prepare(table, source, files, cfg, out_dir, fmt, progress)
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report



def _prepare(table: LabelTable, source: Source, files: set[str], cfg: DataConfig, out_dir: Path,
             fmt: str, progress: bool) -> dict:
    """Decode, validate, crop and resize every labelled image; write the prepared folder."""
    from tqdm import tqdm

    from geogan.io import (
        atomic_path,
        atomic_write_json,
        atomic_write_npy,
        atomic_write_text,
    )

    n, res = len(table.paths), cfg.resolution
    skipped: dict[str, list[str]] = {}
    kept: list[int] = []
    boxes, kinds = [], {}
    tasks = [(source, p, res, cfg.min_image_size, None if table.landmarks5 is None else table.landmarks5[i])
             for i, p in enumerate(table.paths)]
    present = [i for i, p in enumerate(table.paths) if p in files]
    for i in sorted(set(range(n)) - set(present)):
        skipped.setdefault("missing", []).append(table.names[i])
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        writer = _NpyRows(tmp / "images.npy", (res, res, 3))
        # closing(): the pool stops here, not when a failure's traceback is collected (at exit: "Bad file descriptor")
        with contextlib.closing(_map(_prepare_one, [tasks[i] for i in present], cfg.workers)) as results:
            for i, result in zip(present, tqdm(results, total=len(present), desc="decode images", unit="img",
                                               disable=not progress)):
                if isinstance(result, str):
                    skipped.setdefault(result, []).append(table.names[i])
                    continue
                image, box, kind = result
                writer.append(image)
                kept.append(i)
                boxes.append(box)
                kinds[kind] = kinds.get(kind, 0) + 1
        writer.close()
        report = _report(table, source, files, fmt, cfg, kept, skipped, kinds)
        print(_summary_line(report))
        if not kept:
            raise IngestError(f"data source {source.uri}: no usable image ({report['found']} labelled; "
                              f"skipped {_reason_counts(skipped) or 'none'})")
        crops = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        atomic_write_text(tmp / "manifest.csv", _manifest_csv(table, kept))
        atomic_write_npy(tmp / "crops.npy", crops)
        if table.landmarks5 is not None:
            from geogan.data.align import source_to_prepared

            atomic_write_npy(tmp / "landmarks_celeba5.npy", source_to_prepared(table.landmarks5[kept], crops, res))
        atomic_write_json(tmp / "report.json", report)
    return report


def _prepare_one(task: tuple[Source, str, int, int, np.ndarray | None]) -> tuple[np.ndarray, tuple, str] | str:
    """Worker: read + decode + check + crop + resize one image; a skip reason string on failure."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from geogan.data.align import crop_and_resize, crop_box

    source, rel, resolution, min_size, landmarks5 = task
    try:
        data = source.read_bytes(rel)
    except SourceError:
        return "unreadable"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if min(im.size) < min_size:
                return "too_small"
            im.load()  # the one full decode: raises on truncated or broken data
            if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return "greyscale"
            im = ImageOps.exif_transpose(im).convert("RGB")
            box, kind = crop_box(im.width, im.height, landmarks5)
            image = crop_and_resize(im, box, resolution)
    except UnidentifiedImageError:
        return "corrupt"
    except (OSError, SyntaxError, ValueError) as e:
        return "truncated" if "truncat" in str(e).lower() else "corrupt"
    except Exception:  # noqa: BLE001 - any decoder failure skips this one file, never the run
        return "corrupt"
    if _is_grey(image):
        return "greyscale"
    return image, box, kind


def _is_grey(image: np.ndarray) -> bool:
    # A grey photo stored as RGB: the channels agree almost everywhere (JPEG chroma noise aside).
    spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    return float(np.percentile(spread, 99)) <= 6


def _map(fn: Any, tasks: list, workers: int) -> Iterator:
    """fn over tasks in order, in a spawned process pool when workers > 1."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(fn, tasks)
        return
    # spawn, not fork: the parent may hold torch threads or an S3 client, neither survives a fork.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(fn, tasks, chunksize=chunk)


class _NpyRows:
    """Stream equal-shaped rows into a .npy file whose row count is known only at the end."""

    HEADER_BYTES = 128  # magic + version + length + padded dict, fixed so it can be rewritten

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: Any = np.uint8) -> None:
        self.path, self.row_shape, self.dtype, self.rows = path, row_shape, np.dtype(dtype), 0
        self.file = open(path, "wb")
        self.file.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        shape = (rows, *self.row_shape)
        text = f"{{'descr': '{np.lib.format.dtype_to_descr(self.dtype)}', 'fortran_order': False, 'shape': {shape}, }}"
        body = text.encode("latin1").ljust(self.HEADER_BYTES - 10 - 1) + b"\n"
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body

    def append(self, row: np.ndarray) -> None:
        if row.shape != self.row_shape:
            raise ValueError(f"{self.path}: row of shape {row.shape}, expected {self.row_shape}")
        self.file.write(np.ascontiguousarray(row, dtype=self.dtype).tobytes())
        self.rows += 1

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header(self.rows))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _manifest_csv(table: LabelTable, kept: list[int]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    attrs = list(table.labels)
    writer.writerow(["index", "image", "identity", "partition", *attrs])
    for j, i in enumerate(kept):
        writer.writerow([j, table.names[i], table.identities[i], table.partitions[i],
                         *(int(table.labels[a][i]) for a in attrs)])
    return buf.getvalue()


def _report(table: LabelTable, source: Source, files: set[str], fmt: str, cfg: DataConfig, kept: list[int],
            skipped: dict[str, list[str]], kinds: dict[str, int]) -> dict:
    idx = np.asarray(kept, dtype=np.int64)
    parts: dict[str, int] = {}
    for i in kept:
        parts[table.partitions[i]] = parts.get(table.partitions[i], 0) + 1
    report = {
        "source": source.uri,
        "format": fmt,
        "found": len(table.paths),
        "used": len(kept),
        "images": len(kept),
        "skipped": sum(len(v) for v in skipped.values()),
        "skipped_by_reason": {r: {"count": len(v), "files": sorted(v)[:MAX_LISTED_FILES]} for r, v in sorted(skipped.items())},
        "attributes": {a: int(v[idx].sum()) if len(idx) else 0 for a, v in table.labels.items()},
        "unlabelled": _unlabelled(table, files),
        "identities": len({table.identities[i] for i in kept} - {""}),
        "partitions": {k or "none": v for k, v in sorted(parts.items())},
        "crops": dict(sorted(kinds.items())),
        "resolution": cfg.resolution,
        "min_image_size": cfg.min_image_size,
        "label_files": table.files,
        "source_landmarks": "landmarks_celeba5.npy" if table.landmarks5 is not None else None,
    }
    if fmt == "celeba":
        report["license"] = CELEBA_LICENSE
    return report


def _unlabelled(table: LabelTable, files: set[str]) -> int:
    """Image files beside the labelled ones (same folders) that the labels do not mention: ignored."""
    folders = {p.rpartition("/")[0] for p in table.paths}
    labelled = set(table.paths)
    return sum(1 for f in files if f.rpartition("/")[0] in folders and f not in labelled
               and f.lower().endswith(IMAGE_EXTENSIONS))


def _reason_counts(skipped: dict[str, list[str]]) -> str:
    return ", ".join(f"{r} {len(v)}" for r, v in sorted(skipped.items()))


def _summary_line(report: dict) -> str:
    line = f"ingest: used {report['used']} of {report['found']} images from {report['source']} at {report['resolution']} px"
    if report["skipped"]:
        detail = "; ".join(f"{r} {v['count']}: {', '.join(v['files'][:5])}{' ...' if v['count'] > 5 else ''}"
                           for r, v in report["skipped_by_reason"].items())
        line += f"; skipped {report['skipped']} ({detail})"
    return line


def _ingest_synthetic(cfg: DataConfig, attributes: Sequence[str], out_dir: Path, seed: int, progress: bool) -> dict:
    from geogan.data.synthetic import SYNTHETIC_ATTRIBUTES, write_synthetic_dataset

    match_attributes(attributes, list(SYNTHETIC_ATTRIBUTES), "the synthetic generator's attributes")
    report = write_synthetic_dataset(out_dir, cfg.synthetic_identities, cfg.synthetic_images_per_identity,
                                     cfg.resolution, seed, progress=progress, workers=max(1, cfg.workers))
    print(f"ingest: rendered {report.get('images')} synthetic images at {cfg.resolution} px")
    return report
