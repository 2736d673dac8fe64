"""Faces for inference, framed as the training images were: ingest's crop rule, dlib's points for unaligned photos.

A photo has no CelebA 5 points, so dlib finds them (as the `landmarks` stage does) for ingest's face
box; a photo without a face is refused, naming it, rather than centre-cropped into a frame the model
never saw (docs/serving.md: the rule per input). Licence: dlib's 68-point model was trained on
iBUG 300-W, for non-commercial research only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from geogan.data.align import CropKind, crop_and_resize, crop_box, face_box, source_to_prepared

AlignMode = Literal["auto", "dlib", "none"]
ALIGN_MODES = ("auto", "dlib", "none")
DETECT_MAX_SIDE = 800  # HOG on a 12-megapixel photo takes seconds; faces stay well above its ~80 px floor
DETECT_MIN_SIDE = 256  # dlib's HOG detector misses faces much below ~80 px: small crops are upscaled first


class FaceError(ValueError):
    """An image that cannot be used, with one line naming it and saying why."""


@dataclass(frozen=True)
class Face:
    """One face in the model's frame."""

    image: np.ndarray  # (R, R, 3) uint8
    landmarks: np.ndarray | None  # (68, 2) float32 prepared pixels, when the model needs them
    kind: CropKind
    box: tuple[int, int, int, int]  # the square cropped from the input, (x0, y0, x1, y1) in its pixels


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """CelebA's 5 points (eyes, nose tip, mouth corners; image left first) from iBUG's 68: (68, 2) -> (5, 2)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


class FacePreparer:
    """Reads images and returns them framed and sized as the model's training images."""

    def __init__(self, resolution: int, align: AlignMode = "auto", landmarks: bool = False) -> None:
        """
        Args:
            resolution: the model's image size R.
            align: "auto" follows ingest's rule (dlib only for images neither CelebA-aligned nor
                square); "dlib" detects and frames every image (a square photo that is not a
                CelebA-HQ crop); "none" never detects (images already cropped like the training set).
            landmarks: also return the 68 points in the prepared frame (models with flow_inputs rgb+landmarks).
        """
        if align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
        self.resolution, self.align, self.landmarks = int(resolution), align, landmarks
        self.min_side = max(1, self.resolution // 4)  # a face upscaled more than 4x has no detail left to transfer
        self._backend = None

    def backend(self):
        """dlib's detector and 68-point model, loaded on first use (FaceError when dlib is missing)."""
        if self._backend is None:
            from geogan.landmarks.base import LandmarkError
            from geogan.landmarks.dlib_backend import DlibBackend

            try:
                self._backend = DlibBackend()
            except LandmarkError as e:
                raise FaceError(f"face detection needs dlib: {e}") from e
        return self._backend

    def from_file(self, path: str | Path) -> Face:
        """Read and frame one image file; FaceError naming the file when it cannot be read or has no face."""
        try:
            with Image.open(path) as im:
                im.load()
                return self.from_image(im, str(path))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise FaceError(f"{path}: cannot read image ({e})") from e

    def from_image(self, image: Image.Image, name: str) -> Face:
        """Frame one PIL image; `name` is what error lines call it."""
        image = image.convert("RGB")
        width, height = image.size
        if min(width, height) < self.min_side:
            raise FaceError(f"{name}: {width}x{height} px is too small for this {self.resolution} px model "
                            f"(at least {self.min_side} px on the shorter side)")
        box, kind = crop_box(width, height)
        points = None
        if self.align == "dlib" or (self.align == "auto" and kind == "centre"):
            points = self._detect(np.asarray(image))
            if points is None:
                raise FaceError(f"{name}: no face found by dlib (the model takes faces framed as in training; "
                                "a crop framed so already passes with align 'none')")
            box, kind = face_box(five_points(points)), "face"
            if box[2] - box[0] < self.min_side:
                raise FaceError(f"{name}: the face is {box[2] - box[0]} px across, too small for this "
                                f"{self.resolution} px model (at least {self.min_side} px)")
        crop = crop_and_resize(image, box, self.resolution)
        if not self.landmarks:
            return Face(crop, None, kind, box)
        if points is not None:
            prepared = source_to_prepared(points[None], np.asarray([box]), self.resolution)[0]
        else:
            prepared = self._detect(crop)
            if prepared is None:
                raise FaceError(f"{name}: no face found by dlib; this model needs the face's 68 landmarks")
        return Face(crop, prepared.astype(np.float32), kind, box)

    def _detect(self, image: np.ndarray) -> np.ndarray | None:
        """dlib's 68 points (68, 2) in `image`'s pixels, or None; detected at a size HOG handles well."""
        side = max(image.shape[:2])
        scale = DETECT_MAX_SIDE / side if side > DETECT_MAX_SIDE else max(1.0, DETECT_MIN_SIDE / min(image.shape[:2]))
        if scale != 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        points = self.backend().detect(image[None])[0]
        if not np.isfinite(points).all():
            return None
        return ((points + 0.5) / scale - 0.5).astype(np.float32)  # pixel centres, back to the input's pixels


def heatmaps(faces: list[Face], resolution: int):
    """Landmark heatmaps (B, 5, R, R) of faces prepared with landmarks=True, for the flow net."""
    import torch

    from geogan.data.dataset import to_model_landmarks
    from geogan.nets.flow import landmark_heatmaps

    points = torch.from_numpy(np.stack([f.landmarks for f in faces]))  # (B, 68, 2) prepared pixels
    return landmark_heatmaps(to_model_landmarks(points, resolution), resolution)
