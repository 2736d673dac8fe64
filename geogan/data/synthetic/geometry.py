"""Geometry of the synthetic faces: the 68 landmarks in the face frame and their projection to pixels.

Shapes are polygons in a frontal *face frame* (origin near the nose, y down, cheek
half-width about 1) with a depth z, turned by a yaw-like projection and mapped by the pose
affine to output pixels. The landmarks are the very points the polygons are built from, so
they are exact. Pure numpy: no global state, no RNG.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from geogan.data.synthetic.face import Color, FaceParams

FACE_SCALE = 0.3  # face-frame unit in image widths at scale 1
FACE_CENTRE_DY = 0.03  # the face-frame origin sits this far (image heights) below the centre
HEAD_DEPTH = 0.8  # z of the head ellipsoid's front, in face units (drives the yaw parallax)
# Extra depth of the nose landmarks 27..35 above the head ellipsoid (the nose sticks out).
_NOSE_Z = np.array([0.08, 0.16, 0.25, 0.33, 0.12, 0.18, 0.2, 0.18, 0.12])


class Shape(NamedTuple):
    """One filled polygon in the face frame; z=None means 'on the head ellipsoid'."""

    points: np.ndarray  # (P, 2) face frame
    color: Color
    alpha: int = 255  # only used by attribute layers
    z: np.ndarray | None = None  # (P,) depth for the yaw projection


def supersampling(size: int) -> int:
    """Canvas oversampling factor: 4x (16 coverage levels) up to 256 px, 2x above."""
    return 4 if size <= 256 else 2



def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    """(n, 2) polygon of an axis-aligned ellipse in the face frame."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def superellipse(cx: float, cy: float, a: float, b: float, p: float, n: int = 40) -> np.ndarray:
    """(n, 2) polygon of |x/a|^p + |y/b|^p = 1 (p=2 an ellipse, p>2 a rounded rectangle)."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2.0 / p)
    y = b * np.sign(s) * np.abs(s) ** (2.0 / p)
    return np.stack([cx + x, cy + y], axis=1)


def stroke(points: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Polygon of a thick polyline: offset by +-width/2 along the vertex normals."""
    d = np.gradient(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) * (np.asarray(width, float).reshape(-1, 1) / 2)
    return np.concatenate([points + normal, (points - normal)[::-1]], axis=0)


def quad_through(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points at parameters s of the parabola through p0 (s=-1), p1 (s=0), p2 (s=1)."""
    s = s[:, None]
    return p1 + s * (p2 - p0) / 2 + s**2 * ((p0 + p2) / 2 - p1)


def head_z(face: FaceParams, pts: np.ndarray) -> np.ndarray:
    """Depth of face-frame points on the head ellipsoid (0 outside it)."""
    u = pts[:, 0] / (1.05 * face.face_width)
    v = (pts[:, 1] + 0.2) / (1.35 * face.face_height)
    return HEAD_DEPTH * np.sqrt(np.maximum(0.0, 1.0 - u * u - v * v))


def canonical_landmarks(face: FaceParams) -> tuple[np.ndarray, np.ndarray]:
    """The 68 iBUG landmarks of a frontal face in the face frame, and their depths.

    Returns:
        (68, 2) points (x right, y down) and (68,) depths z.
    """
    W, H = face.face_width, face.face_height
    # Jaw 0..16: from the left ear level round the chin to the right ear level.
    a = math.pi * (1.0 - np.arange(17) / 16.0)
    c, s = np.cos(a), np.sin(a)
    jx = W * np.sign(c) * np.abs(c) ** face.jaw_square * (1.0 - (1.0 - face.jaw_width) * s**2)
    jaw = np.stack([jx, -0.3 + 1.3 * H * s**1.3], axis=1)
    # Brows 17..21 (left, outer -> inner) along their upper edge; right brow mirrored.
    t = np.linspace(0.0, 1.0, 5)
    by = -0.6 - 0.07 * face.brow_raise
    brow_l = np.stack([-0.8 + 0.6 * t, by - face.brow_arch * np.sin(math.pi * (0.15 + 0.75 * t)) + 0.02 * t], axis=1)
    brow_l[:, 0] *= face.eye_spacing
    # Nose 27..30 down the bridge, 31..35 along the base.
    nl, nw = 0.47 * face.nose_length, 0.2 * face.nose_width
    bridge = np.stack([np.zeros(4), -0.36 + nl * np.arange(4) / 3.0], axis=1)
    base_y = -0.36 + nl + 0.08
    base = np.array([[-nw, base_y - 0.04], [-nw / 2, base_y], [0.0, base_y + 0.015],
                     [nw / 2, base_y], [nw, base_y - 0.04]])
    # Eyes 36..41 (outer corner, upper lid x2, inner corner, lower lid x2); the lower lid is flatter.
    cx, cy = -0.4 * face.eye_spacing, -0.36
    ew, eh = 0.19 * face.eye_size, 0.085 * face.eye_size * face.eye_open
    eye_l = np.array([[cx - ew, cy], [cx - ew / 3, cy - eh], [cx + ew / 3, cy - eh], [cx + ew, cy],
                      [cx + ew / 3, cy + 0.9 * eh], [cx - ew / 3, cy + 0.9 * eh]])
    pts = np.zeros((68, 2))
    pts[0:17] = jaw
    pts[17:22] = brow_l
    pts[22:27] = mirror(brow_l)[::-1]
    pts[27:31] = bridge
    pts[31:36] = base
    pts[36:42] = eye_l
    pts[42:48] = mirror(eye_l)[[3, 2, 1, 0, 5, 4]]
    pts[48:68] = _mouth(face)
    z = head_z(face, pts)
    z[27:36] += _NOSE_Z
    return pts, z


def mirror(p: np.ndarray) -> np.ndarray:
    """Points mirrored about the face's vertical axis (x -> -x)."""
    return p * np.array([-1.0, 1.0])


def _mouth(face: FaceParams) -> np.ndarray:
    """Mouth landmarks 48..67 (outer lips 48..59, inner 60..67) with smile and opening."""
    mw = 0.36 * face.mouth_width * (1.0 + 0.12 * face.smile)
    lt, gap = face.lip_thickness, 0.17 * face.mouth_open
    up, lo = -0.2 * gap, 0.8 * gap  # the jaw drops: the lower lip moves most
    ux = np.array([-1.0, -0.62, -0.24, 0.0, 0.24, 0.62, 1.0])
    uy = np.array([0.0, -0.09, -0.12, -0.095, -0.12, -0.09, 0.0]) * lt + up * (np.abs(ux) < 1)
    lx = np.array([0.62, 0.26, 0.0, -0.26, -0.62])
    ly = np.array([0.1, 0.13, 0.14, 0.13, 0.1]) * lt + lo
    ix = np.array([-0.88, -0.4, 0.0, 0.4, 0.88, 0.4, 0.0, -0.4])
    iy = np.array([0.0, up - 0.004, up - 0.006, up - 0.004, 0.0, lo + 0.004, lo + 0.006, lo + 0.004])
    x = np.concatenate([ux, lx, ix])
    y = np.concatenate([uy, ly, iy])
    y = y - face.smile * 0.11 * x**2 + 0.56  # smiling lifts the corners
    return np.stack([x * mw, y], axis=1)


class Projector:
    """Maps face-frame points (with depth) to output pixels and to canvas pixels."""

    def __init__(self, face: FaceParams, size: int, k: int = 1):
        rot = np.array([[math.cos(face.rotation), -math.sin(face.rotation)],
                        [math.sin(face.rotation), math.cos(face.rotation)]])
        shear = np.array([[1.0, face.shear], [0.0, 1.0]])
        self.matrix = FACE_SCALE * face.scale * size * rot @ shear
        centre = (size - 1) / 2.0  # pixel centres at integers: the image centre is (size-1)/2
        self.offset = np.array([centre + face.tx * size, centre + (FACE_CENTRE_DY + face.ty) * size])
        self.cos_yaw, self.sin_yaw = math.cos(face.yaw), math.sin(face.yaw)
        self.face, self.k = face, k

    def pixels(self, pts: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """(P, 2) output-pixel coordinates (pixel centres at integers) of face-frame points."""
        z = head_z(self.face, pts) if z is None else z
        # Yaw-like turn: points in front (large z) slide sideways more than the outline.
        x = pts[:, 0] * self.cos_yaw + z * self.sin_yaw
        return np.stack([x, pts[:, 1]], axis=1) @ self.matrix.T + self.offset

    def canvas(self, pts: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """(P, 2) canvas coordinates: output pixel p covers canvas centres k*p .. k*p+k-1."""
        return (self.pixels(pts, z) + 0.5) * self.k - 0.5

