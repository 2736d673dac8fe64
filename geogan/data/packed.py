"""A compact copy of the training images of some splits, to carry to a GPU machine: WebP bytes + landmarks + splits.

A packed folder is a prepared dataset whose images are compressed (`images.webp.npz`: every image's encoded
bytes and their offsets), with its own landmarks and the splits re-indexed to it. `load_prepared` reads it like
images.npy, decoding once on load, so the train stage runs on it unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PACKED_IMAGES = "images.webp.npz"


def encode_webp(image: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 -> WebP bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, "WEBP", quality=quality, method=6)
    return buf.getvalue()


def decode_packed(path: str | Path, workers: int = 8) -> np.ndarray:
    """Decode a packed image file into (N, H, W, 3) uint8 (Pillow releases the GIL while decoding)."""
    from PIL import Image

    blob = np.load(path)
    data, offsets = blob["data"], blob["offsets"]

    def one(i: int) -> np.ndarray:
        raw = data[offsets[i]:offsets[i + 1]].tobytes()
        try:
            with Image.open(io.BytesIO(raw)) as im:
                return np.asarray(im.convert("RGB"))
        except OSError:  # a Pillow built without WebP: torchvision's decoder, where installed
            from torchvision.io import decode_image

            return decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8)).permute(1, 2, 0).numpy()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(one, range(len(offsets) - 1)))
    if not images:
        raise ValueError(f"{path}: holds no images")
    return np.stack(images)


def pack(prepared: Path, landmarks: Path, splits: Sequence[Path], out: Path, quality: int = 90,
         partitions: Sequence[str] = ("train",)) -> dict:
    """Write out/{prepared,landmarks,splits} holding only the rows the splits use in `partitions`.

    Args:
        prepared, landmarks: the full prepared dataset and its landmarks.
        splits: split JSON files; their other partitions are emptied in the packed copies.
        out: the packed folder (a fresh one; written in place, so point it at a temporary path).
        quality: WebP quality.
        partitions: which partitions' rows to keep.
    Returns:
        A report: rows, bytes, bytes per image.
    """
    images = np.load(Path(prepared) / "images.npy", mmap_mode="r")
    lm = np.load(Path(landmarks) / "landmarks.npy")
    split_dicts = {Path(s).name: json.loads(Path(s).read_text()) for s in splits}
    rows = sorted({int(i) for d in split_dicts.values() for p in partitions for dom in ("A", "B") for i in d[p][dom]})
    if not rows:
        raise ValueError(f"the splits {sorted(split_dicts)} use no rows in partitions {list(partitions)}")
    new_index = {old: new for new, old in enumerate(rows)}
    encoded = [encode_webp(images[i], quality) for i in rows]
    offsets = np.cumsum([0] + [len(b) for b in encoded]).astype(np.int64)
    (out / "prepared").mkdir(parents=True)
    (out / "landmarks").mkdir()
    (out / "splits").mkdir()
    np.savez(out / "prepared" / PACKED_IMAGES, data=np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets=offsets)
    _write_manifest_rows(Path(prepared) / "manifest.csv", rows, out / "prepared" / "manifest.csv")
    np.save(out / "landmarks" / "landmarks.npy", lm[rows])
    for name, d in split_dicts.items():
        remapped = {p: {dom: [new_index[int(i)] for i in d[p][dom]] if p in partitions else [] for dom in ("A", "B")}
                    for p in ("train", "val", "test") if p in d}
        (out / "splits" / name).write_text(json.dumps({**d, **remapped, "packed_from": str(prepared)}, indent=1))
    report = {"rows": len(rows), "bytes": int(offsets[-1]), "bytes_per_image": round(offsets[-1] / len(rows), 1),
              "quality": quality, "partitions": list(partitions), "splits": sorted(split_dicts)}
    (out / "prepared" / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _write_manifest_rows(src: Path, rows: list[int], dst: Path) -> None:
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        table = list(reader)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for new, old in enumerate(rows):
            w.writerow([new, *table[old][1:]])
