"""Face crop and resize to the prepared square frame, and the point mapping that goes with it."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

CropKind = Literal["celeba_aligned", "square", "face", "centre"]
CELEBA_ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
FACE_SIDE_PER_EYE_DISTANCE = 4.5  # img_align_celeba's 178 px crop holds about 39 px between the eyes
FACE_SIDE_PER_EYE_MOUTH = 4.3  # ... and about 41 px from the eye midpoint to the mouth midpoint


def crop_box(width: int, height: int, landmarks5: np.ndarray | None = None) -> tuple[tuple[int, int, int, int], CropKind]:
    """The square source box (x0, y0, x1, y1) to resize into the prepared frame, and its kind.

    The rule: CelebA-aligned images (178x218, or that aspect) get the GeoGAN reference's fixed
    centre crop of side 178 (rows 20..198); square images (CelebA-HQ) the whole image; other
    images a square around the face when 5 landmarks are known (framed like img_align_celeba:
    eyes a little above the centre, about 4.5 eye distances across), else the centre square.
    The box is in integer source pixels and may reach past the border (padded black).

    Args:
        width, height: the source image size in pixels.
        landmarks5: optional (5, 2) CelebA points (left eye, right eye, nose, left and right
            mouth corner) in source pixels; used only for images that are neither square nor
            CelebA-aligned. NaN means unknown.
    Returns:
        ((x0, y0, x1, y1), kind) with x1 - x0 == y1 - y0 > 0; the box may extend past the image.
    """
    if width == height:
        return (0, 0, width, height), "square"
    aligned_aspect = CELEBA_ALIGNED_SIZE[1] / CELEBA_ALIGNED_SIZE[0]
    if abs(height / width - aligned_aspect) < 0.01:
        top = round((height - width) / 2)  # 178x218 -> rows 20..198, as torchvision's CenterCrop(178)
        return (0, top, width, top + width), "celeba_aligned"
    if landmarks5 is not None and np.isfinite(landmarks5).all():
        return face_box(landmarks5), "face"
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return (x0, y0, x0 + side, y0 + side), "centre"


def face_box(landmarks5: np.ndarray) -> tuple[int, int, int, int]:
    """The square box around a face framed like img_align_celeba, from its 5 CelebA points (5, 2)."""
    lm5 = np.asarray(landmarks5, dtype=np.float64)
    eye_mid = (lm5[0] + lm5[1]) / 2
    mouth_mid = (lm5[3] + lm5[4]) / 2
    eye_dist = float(np.linalg.norm(lm5[1] - lm5[0]))
    eye_mouth = float(np.linalg.norm(mouth_mid - eye_mid))
    side = max(FACE_SIDE_PER_EYE_DISTANCE * eye_dist, FACE_SIDE_PER_EYE_MOUTH * eye_mouth, 8.0)
    centre = eye_mid - 0.05 * (mouth_mid - eye_mid)  # img_align_celeba: box centre just above the eyes
    x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    s = int(round(side))
    return x0, y0, x0 + s, y0 + s


def crop_and_resize(image: Image.Image, box: tuple[int, int, int, int], resolution: int) -> np.ndarray:
    """Crop `box` (black outside the image) and resize to a uint8 (resolution, resolution, 3) array.

    Lanczos when shrinking (anti-aliased), bicubic when enlarging (no ringing from upsampling).
    """
    x0, y0, x1, y1 = box
    inside = x0 >= 0 and y0 >= 0 and x1 <= image.width and y1 <= image.height
    if not inside:
        image, box = image.crop(box), (0, 0, x1 - x0, y1 - y0)  # PIL pads outside pixels with zeros
    resample = Image.LANCZOS if box[2] - box[0] >= resolution else Image.BICUBIC
    out = image.resize((resolution, resolution), resample=resample, box=box)
    return np.asarray(out, dtype=np.uint8)


def source_to_prepared(points: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Map source-image points into the prepared frame.

    Points use pixel centres at integer coordinates (x=0 is the centre of the leftmost pixel), the
    project's convention, so a source point maps as x' = (x + 0.5 - x0) * s - 0.5 with s = R / side.

    Args:
        points: (N, K, 2) (x, y) in source pixels (NaN stays NaN).
        boxes: (N, 4) crop boxes (x0, y0, x1, y1) as written to crops.npy.
        resolution: the prepared image size.
    Returns:
        (N, K, 2) float32 points in prepared pixels.
    """
    points = np.asarray(points, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = resolution / (boxes[:, 2] - boxes[:, 0])  # (N,)
    origin = boxes[:, None, :2]  # (N, 1, 2)
    return ((points + 0.5 - origin) * scale[:, None, None] - 0.5).astype(np.float32)


def prepared_to_source(points: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Inverse of `source_to_prepared`: prepared pixels (N, K, 2) -> source pixels (float32)."""
    points = np.asarray(points, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = (boxes[:, 2] - boxes[:, 0]) / resolution
    return ((points + 0.5) * scale[:, None, None] + boxes[:, None, :2] - 0.5).astype(np.float32)
