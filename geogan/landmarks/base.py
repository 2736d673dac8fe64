"""The landmark backend interface, and the shared pieces of table-backed backends.

Every backend turns uint8 images (N, H, W, 3) into 68 iBUG 300-W points per image, as float32
(x, y) pixel coordinates in the image's frame (pixel centres at integers), with a whole row of
NaN where no face was found. Backends that *know* the landmarks of the prepared rows (exact,
precomputed) carry them as a `table` so extraction needs no image pass; they still answer
`detect` for any image that is one of the prepared rows.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import numpy as np

N_POINTS = 68


class LandmarkError(ValueError):
    """Landmarks that cannot be produced: missing weights, wrong file, unknown backend."""


@runtime_checkable
class LandmarkBackend(Protocol):
    """68-point landmarks for a batch of images."""

    name: str

    def detect(self, images_uint8: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 68, 2) float32 pixel (x, y), NaN rows where no face."""
        ...


def check_images(images: np.ndarray) -> np.ndarray:
    """Check a uint8 (N, H, W, 3) batch (one image is promoted to a batch of one)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def clean_rows(landmarks: np.ndarray) -> np.ndarray:
    """float32 (N, 68, 2) with any row that has a non-finite value set wholly to NaN."""
    out = np.asarray(landmarks, dtype=np.float32).copy()
    out[~np.isfinite(out).all(axis=(1, 2))] = np.nan
    return out


def image_key(image: np.ndarray) -> bytes:
    """A content hash of one image, to find it among the prepared rows."""
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


class TableBackend:
    """Landmarks known per prepared row, looked up by image content when asked through `detect`."""

    def __init__(self, name: str, table: np.ndarray, images: np.ndarray | None = None) -> None:
        """
        Args:
            name: the backend name for reports.
            table: (N, 68, 2) pixel coordinates aligned with the prepared rows.
            images: the prepared images (N, H, W, 3), needed only by `detect`.
        """
        self.name = name
        self.table = clean_rows(table)
        self._images = images
        self._index: dict[bytes, int] | None = None

    def detect(self, images_uint8: np.ndarray) -> np.ndarray:
        images = check_images(images_uint8)
        if self._images is None:
            raise LandmarkError(f"backend '{self.name}' was built without the prepared images; cannot match images")
        if self._index is None:
            self._index = {image_key(im): i for i, im in enumerate(self._images)}
        rows = [self._index.get(image_key(im)) for im in images]
        out = np.full((len(images), N_POINTS, 2), np.nan, dtype=np.float32)
        for k, r in enumerate(rows):
            if r is not None:
                out[k] = self.table[r]
        return out
