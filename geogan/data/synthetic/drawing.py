"""Drawing synthetic faces: images, exact landmarks in pixels, attribute masks and true transfers.

Conventions: images are uint8 (H, W, 3); landmarks are (x, y) in output pixels with pixel
centres at integer coordinates (x=0 is the centre of the leftmost pixel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geogan.data.synthetic.face import (
    INSTANCE_ATTRIBUTES,
    FaceParams,
    SyntheticFace,
    style_of,
    with_attribute,
)
from geogan.data.synthetic.geometry import (
    Projector,
    Shape,
    canonical_landmarks,
    supersampling,
)
from geogan.data.synthetic.parts import eyeglasses_shapes, face_shapes, mustache_shapes
from geogan.data.synthetic.raster import composite, downsample, fill, pack, unpack


def check_size(size: int) -> None:
    """Raise a ValueError unless size is an int >= 16."""
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")


def face_landmarks(face: FaceParams, size: int) -> np.ndarray:
    """The 68 iBUG landmarks of `face` as drawn in a size x size image.

    Returns:
        (68, 2) float32 (x, y) pixel coordinates, pixel centres at integers.
    """
    check_size(size)
    lm, lz = canonical_landmarks(face)
    return Projector(face, size).pixels(lm, lz).astype(np.float32)


def _draw(plane: np.ndarray, shapes: list[Shape], proj: Projector, alpha: np.ndarray | None = None) -> None:
    for shape in shapes:
        fill(plane, proj.canvas(shape.points, shape.z), pack(shape.color), alpha, shape.alpha)


def _attribute_shapes(lm: np.ndarray, attribute: str, style: Any) -> list[Shape]:
    if attribute == "Mustache":
        return mustache_shapes(lm, style)
    if attribute == "Eyeglasses":
        return eyeglasses_shapes(lm, style)
    raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")


def render(face: SyntheticFace, size: int) -> np.ndarray:
    """Draw one face (size x size, anti-aliased): the face first, then mustache, then glasses.

    Returns:
        (size, size, 3) uint8 RGB.
    """
    check_size(size)
    p = face.face
    k = supersampling(size)
    n = size * k
    proj = Projector(p, size, k)
    lm, lz = canonical_landmarks(p)
    plane = np.empty((n, n), np.uint32)  # packed RGB canvas, k times the output size
    # Background: a vertical gradient, darker towards the bottom.
    rows = np.round(np.linspace(1.0, 0.82, n)[:, None] * np.array(p.background, float)).astype(np.uint8)
    plane[:] = np.concatenate([rows, np.zeros((n, 1), np.uint8)], axis=1).view(np.uint32)
    _draw(plane, face_shapes(p, lm, lz), proj)
    canvas = unpack(plane)  # (n, n, 4) view
    for attribute, style in (("Mustache", face.mustache), ("Eyeglasses", face.eyeglasses)):
        if style is not None:
            # Each attribute is a layer composited last, so it changes nothing outside its own pixels.
            layer, alpha = np.zeros_like(plane), np.zeros((n, n), np.uint8)
            _draw(layer, _attribute_shapes(lm, attribute, style), proj, alpha)
            composite(canvas, unpack(layer), alpha)
    return np.ascontiguousarray(downsample(canvas, k)[..., :3])



def render_transfer(target: SyntheticFace, reference: SyntheticFace, attribute: str, size: int) -> np.ndarray:
    """Ground truth of an instance-level transfer: `target` (identity, pose, expression, other
    attributes) wearing `reference`'s own instance of `attribute`.

    Returns:
        (size, size, 3) uint8.
    """
    style = style_of(reference, attribute)
    if style is None:
        raise ValueError(f"reference (identity {reference.identity}) does not wear {attribute}")
    return render(with_attribute(target, attribute, style), size)


def _coverage(face: FaceParams, size: int, polygons: list[tuple[np.ndarray, np.ndarray | None, bool]]) -> np.ndarray:
    """Box-filtered coverage of face-frame polygons (points, z, covers) painted in order."""
    k = supersampling(size)
    proj = Projector(face, size, k)
    cover = np.zeros((size * k, size * k), np.uint8)
    for points, z, covers in polygons:
        fill(cover, proj.canvas(points, z), 1 if covers else 0)
    acc = cover.reshape(size, k, size, k).sum(axis=(1, 3), dtype=np.uint32)
    return (acc / float(k * k)).astype(np.float32)


def attribute_mask_for(target: SyntheticFace, style: Any, attribute: str, size: int) -> np.ndarray:
    """Coverage of an instance of `attribute` drawn on `target`'s face.

    Args:
        target: the face that wears it.
        style: a MustacheStyle / EyeglassesStyle, or a reference SyntheticFace whose own instance
            is meant (as in render_transfer; it must wear the attribute); None gives zeros.
        attribute: "Mustache" or "Eyeglasses".
        size: output size in pixels.
    Returns:
        (size, size) float32 in [0, 1]: the fraction of each pixel the attribute's layer covers
        (tinted lenses included). Pixels where it is 0 are unchanged by wearing it.
    """
    check_size(size)
    if isinstance(style, SyntheticFace):
        reference, style = style, style_of(style, attribute)
        if style is None:
            raise ValueError(f"reference (identity {reference.identity}) does not wear {attribute}")
    if style is None:
        return np.zeros((size, size), np.float32)
    lm, _ = canonical_landmarks(target.face)
    # A fully transparent fill (a clear lens) uncovers, as it does in the layer.
    shapes = _attribute_shapes(lm, attribute, style)
    return _coverage(target.face, size, [(s.points, s.z, s.alpha > 0) for s in shapes])


def attribute_mask(face: SyntheticFace, attribute: str, size: int) -> np.ndarray:
    """Region `face`'s own instance of `attribute` covers (zeros when not worn).

    For "Smiling" (no instance style) the region is the outer lip polygon, where the
    expression shows. Returns (size, size) float32 in [0, 1].
    """
    if attribute == "Smiling":
        check_size(size)
        lm, lz = canonical_landmarks(face.face)
        return _coverage(face.face, size, [(lm[48:60], lz[48:60], True)])
    return attribute_mask_for(face, style_of(face, attribute), attribute, size)

