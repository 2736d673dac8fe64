"""Geometry and rasterisation of the synthetic faces: landmarks, face parts, mustaches, glasses.

Everything is built as polygons in a frontal *face frame* (origin near the nose, y down,
cheek half-width about 1), given a depth z, turned by the yaw-like projection, mapped by the
pose affine to output pixels, and filled by a numpy scanline rasteriser on a canvas
`k` times larger; the canvas is box-filtered down. The landmarks returned are the very
points the polygons were built from, so they are exact. Pure numpy: no global state, no RNG.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from geogan.data.synthetic import EyeglassesStyle, FaceParams, MustacheStyle

Color = tuple[int, int, int]

FACE_SCALE = 0.3  # face-frame unit in image widths at scale 1
FACE_CENTRE_DY = 0.03  # the face-frame origin sits this far (image heights) below the centre
HEAD_DEPTH = 0.8  # z of the head ellipsoid's front, in face units (drives the yaw parallax)
# Extra depth of the nose landmarks 27..35 above the head ellipsoid (the nose sticks out).
_NOSE_Z = np.array([0.08, 0.16, 0.25, 0.33, 0.12, 0.18, 0.2, 0.18, 0.12])
_SCLERA: Color = (246, 246, 240)
_PUPIL: Color = (18, 16, 16)
_LID: Color = (45, 32, 30)
_MOUTH_INSIDE: Color = (75, 25, 32)
_TEETH: Color = (238, 236, 226)


class Shape(NamedTuple):
    """One filled polygon in the face frame; z=None means 'on the head ellipsoid'."""

    points: np.ndarray  # (P, 2) face frame
    color: Color
    alpha: int = 255  # only used by attribute layers
    z: np.ndarray | None = None  # (P,) depth for the yaw projection


def supersampling(size: int) -> int:
    """Canvas oversampling factor: 4x (16 coverage levels) up to 256 px, 2x above."""
    return 4 if size <= 256 else 2


# ----------------------------------------------------------------------------- geometry


def _shade(c: Color, f: float) -> Color:
    return tuple(int(min(255, max(0, round(v * f)))) for v in c)  # type: ignore[return-value]


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
    pts[22:27] = _mirror(brow_l)[::-1]
    pts[27:31] = bridge
    pts[31:36] = base
    pts[36:42] = eye_l
    pts[42:48] = _mirror(eye_l)[[3, 2, 1, 0, 5, 4]]
    pts[48:68] = _mouth(face)
    z = head_z(face, pts)
    z[27:36] += _NOSE_Z
    return pts, z


def _mirror(p: np.ndarray) -> np.ndarray:
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


# ----------------------------------------------------------------------------- rasteriser


def raster(poly: np.ndarray, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """Pixels whose centres lie inside a polygon (non-zero winding), on its bounding box.

    Returns:
        (row0, col0, inside) with inside a (h, w) bool array, or None when nothing is covered.
    """
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    r0, r1 = max(math.ceil(lo[1]), 0), min(math.floor(hi[1]), height - 1)
    c0, c1 = max(math.ceil(lo[0]), 0), min(math.floor(hi[0]), width - 1)
    if r1 < r0 or c1 < c0:
        return None
    h, w = r1 - r0 + 1, c1 - c0 + 1
    x, y = poly[:, 0], poly[:, 1]
    nxt = np.concatenate([poly[1:], poly[:1]])
    dx, dy = nxt[:, 0] - x, nxt[:, 1] - y
    # Edge e crosses row r when min(y) <= r < max(y) (half-open: each crossing counted once).
    first = np.maximum(np.ceil(np.minimum(y, nxt[:, 1])), r0).astype(np.int64)
    last = np.minimum(np.ceil(np.maximum(y, nxt[:, 1])) - 1, r1).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    total = int(count.sum())
    if total == 0:
        return None
    edge = np.repeat(np.arange(len(poly)), count)
    row = np.repeat(first, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    xc = x[edge] + (row - y[edge]) * (dx[edge] / dy[edge])
    order = np.lexsort((xc, row))  # crossings by row, then left to right
    ri, xc = row[order] - r0, xc[order]
    winding = np.cumsum(np.where(dy[edge[order]] > 0, 1, -1))  # each row sums to 0
    col = np.clip(np.floor(xc).astype(np.int64) + 1 - c0, 0, w)  # first centre right of the crossing
    span = np.flatnonzero(winding[:-1] != 0)  # inside between crossing i and i+1 (same row)
    span = span[col[span + 1] > col[span]]
    if span.size == 0:
        return None
    span_row = ri[span]
    slot = np.arange(span.size) - np.searchsorted(span_row, span_row)  # index of the span in its row
    starts = np.zeros((h, int(slot.max()) + 1), np.int64)
    ends = np.zeros_like(starts)
    starts[span_row, slot], ends[span_row, slot] = col[span], col[span + 1]
    cols = np.arange(w)
    inside = (cols >= starts[:, :1]) & (cols < ends[:, :1])
    for j in range(1, starts.shape[1]):
        inside |= (cols >= starts[:, j : j + 1]) & (cols < ends[:, j : j + 1])
    return r0, c0, inside


def pack(color: Color) -> np.uint32:
    """One RGB colour as the uint32 whose bytes (in memory order) are R, G, B, 0."""
    return np.array([*color, 0], np.uint8).view(np.uint32)[0]


def unpack(plane: np.ndarray) -> np.ndarray:
    """(H, W) packed uint32 -> (H, W, 4) uint8 view (R, G, B, 0)."""
    return plane.view(np.uint8).reshape(*plane.shape, 4)


def fill(plane: np.ndarray, poly: np.ndarray, value, alpha: np.ndarray | None = None, a: int = 255) -> None:
    """Fill a canvas-space polygon with `value` (and `a` into `alpha` when given), in place.

    `plane` is 2-D (packed colours or coverage): one masked copy per polygon is what keeps
    rendering fast.
    """
    box = raster(poly, plane.shape[0], plane.shape[1])
    if box is None:
        return
    r0, c0, inside = box
    region = (slice(r0, r0 + inside.shape[0]), slice(c0, c0 + inside.shape[1]))
    np.copyto(plane[region], value, where=inside, casting="unsafe")
    if alpha is not None:
        np.copyto(alpha[region], a, where=inside, casting="unsafe")


def downsample(canvas: np.ndarray, k: int) -> np.ndarray:
    """Box filter (H, W, C) uint8 by k, rounding half up, in integers (so bytes are exact)."""
    s, c = canvas.shape[0] // k, canvas.shape[2]
    rows = canvas.reshape(s, k, -1).astype(np.uint16)  # k*k*255 fits: k <= 4
    acc = rows[:, 0]
    for i in range(1, k):  # explicit adds: several times faster than .sum over small axes
        acc = acc + rows[:, i]
    cols = acc.reshape(s, s, k, c)
    acc = cols[:, :, 0]
    for i in range(1, k):
        acc = acc + cols[:, :, i]
    return ((acc + (k * k) // 2) // (k * k)).astype(np.uint8)


def composite(base: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> None:
    """base = base*(1-a) + layer*a in integers, in place (uint8 (H, W, C)); alpha-0 pixels keep their bytes."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # only the layer's bounding box
    a = alpha[box][..., None].astype(np.uint32)
    mixed = (base[box].astype(np.uint32) * (255 - a) + layer[box].astype(np.uint32) * a + 127) // 255
    base[box] = mixed.astype(np.uint8)


# ----------------------------------------------------------------------------- face parts


def face_shapes(face: FaceParams, lm: np.ndarray, lz: np.ndarray) -> list[Shape]:
    """The face, back to front, as shapes in the face frame (lm, lz: canonical landmarks)."""
    W, skin = face.face_width, face.skin_color
    top_r = 0.98 * face.face_height
    shapes: list[Shape] = []
    shapes += _clothes_and_back_hair(face, top_r)
    if face.hair_style not in ("long", "bob"):
        for side in (-1.0, 1.0):
            shapes.append(Shape(ellipse(side * 0.99 * W, -0.12, 0.12, 0.21), _shade(skin, 0.94)))
            shapes.append(Shape(ellipse(side * 1.0 * W, -0.12, 0.055, 0.12), _shade(skin, 0.8)))
    t = np.linspace(0.0, -math.pi, 34)[1:-1]  # forehead arc from landmark 16 over the top to 0
    skull = np.stack([W * np.cos(t), -0.3 + top_r * np.sin(t)], axis=1)
    shapes.append(Shape(np.concatenate([lm[0:17], skull]), skin))
    shapes += _front_hair(face, top_r)
    for eye in (lm[36:42], lm[42:48]):
        shapes += _eye(face, eye)
    brow = _shade(face.hair_color, 0.65)
    for idx, inner_last in ((slice(17, 22), True), (slice(22, 27), False)):
        upper = lm[idx]
        thick = face.brow_thickness * (np.linspace(0.55, 1.0, 5) if inner_last else np.linspace(1.0, 0.55, 5))
        shapes.append(Shape(np.concatenate([upper, (upper + np.stack([0 * thick, thick], 1))[::-1]]), brow))
    shapes += _nose(face, lm, lz)
    shapes += _lips(face, lm)
    return shapes


def _clothes_and_back_hair(face: FaceParams, top_r: float) -> list[Shape]:
    W = face.face_width
    out = [Shape(np.array([[-2.2, 2.8], [-2.0, 1.6], [-1.4, 1.22], [-0.5, 1.12], [0.5, 1.12], [1.4, 1.22],
                           [2.0, 1.6], [2.2, 2.8]]), face.clothes_color)]
    if face.hair_style in ("long", "bob"):
        grow = 1.06 + face.hair_volume
        t = np.linspace(0.0, -math.pi, 25)
        arc = np.stack([grow * W * np.cos(t), -0.3 + (top_r + 0.06 + face.hair_volume) * np.sin(t)], axis=1)
        low, wide = (1.25, 1.22) if face.hair_style == "long" else (0.62, 1.2)
        left = np.array([[-wide * W, 0.15], [-(wide + 0.06) * W, low - 0.3], [-(wide - 0.1) * W, low]])
        out.append(Shape(np.concatenate([arc, left, _mirror(left)[::-1]]), face.hair_color))
    neck = np.array([[-0.4 * W, 0.4], [0.4 * W, 0.4], [0.44 * W, 1.25], [0.0, 1.4], [-0.44 * W, 1.25]])
    out.append(Shape(neck, _shade(face.skin_color, 0.86)))
    return out


def _front_hair(face: FaceParams, top_r: float) -> list[Shape]:
    W, hair = face.face_width, face.hair_color
    if face.hair_style == "bald":
        side = np.array([[-1.04, -0.02], [-1.06, -0.42], [-0.93, -0.6], [-0.92, -0.3], [-0.95, -0.02]]) * [W, 1.0]
        return [Shape(side, hair), Shape(_mirror(side)[::-1], hair)]
    grow = 1.05 + face.hair_volume
    t = np.linspace(0.1, -math.pi - 0.1, 40)
    outer = np.stack([grow * W * np.cos(t), -0.3 + (top_r + 0.05 + face.hair_volume) * np.sin(t)], axis=1)
    x = np.linspace(-0.99, 0.99, 31)
    line = -0.22 - 0.68 * np.sqrt(1.0 - x**2)  # natural hairline following the skull
    if face.hair_style == "fringe":
        bangs = -0.78 + 0.035 * (np.arange(31) % 2)
        line = np.where(np.abs(x) < 0.8, np.maximum(line, bangs), line)
    elif face.hair_style == "bob":
        line = line + 0.16 * np.clip(-x, 0.0, 1.0) * np.sqrt(1.0 - x**2)  # swept to the left
    elif face.hair_style == "long":
        line = line - 0.08 * np.exp(-((x / 0.12) ** 2))  # centre parting
    hairline = np.stack([x * W, line], axis=1)
    return [Shape(np.concatenate([outer, hairline]), hair)]


def _eye(face: FaceParams, eye: np.ndarray) -> list[Shape]:
    centre = eye.mean(axis=0)  # the iris sits at the landmarks' mean
    r = 0.74 * (eye[5, 1] - eye[1, 1]) / 2  # inside the lids, so nothing clips it
    lid = stroke(eye[[0, 1, 2, 3]], 0.022)
    return [
        Shape(eye, _SCLERA),
        Shape(ellipse(centre[0], centre[1], r, r, 20), face.iris_color),
        Shape(ellipse(centre[0], centre[1], 0.42 * r, 0.42 * r, 14), _PUPIL),
        Shape(lid, _LID),
    ]


def _nose(face: FaceParams, lm: np.ndarray, lz: np.ndarray) -> list[Shape]:
    skin = face.skin_color
    bridge = lm[28:31] + np.array([0.055, 0.0])
    base = lm[31:36]
    out = [
        Shape(stroke(bridge, np.array([0.02, 0.035, 0.04])), _shade(skin, 0.9), z=np.r_[lz[28:31], lz[30:27:-1]]),
        Shape(stroke(base, 0.032), _shade(skin, 0.72), z=np.r_[lz[31:36], lz[35:30:-1]]),
    ]
    for i in (32, 34):
        nostril = ellipse(lm[i, 0], lm[i, 1] - 0.012, 0.038, 0.02, 14)
        out.append(Shape(nostril, _shade(skin, 0.45), z=np.full(len(nostril), lz[i])))
    return out


def _lips(face: FaceParams, lm: np.ndarray) -> list[Shape]:
    lip = face.lip_color
    out = [Shape(lm[48:60], lip), Shape(lm[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]], _shade(lip, 0.86))]
    if face.mouth_open > 0.05:
        inner = lm[60:68]
        out.append(Shape(inner, _MOUTH_INSIDE))
        if face.mouth_open > 0.15:
            upper = inner[[0, 1, 2, 3, 4]]
            lower = inner[[4, 5, 6, 7, 0]]
            teeth = np.concatenate([upper, (upper + 0.42 * (lower[::-1] - upper))[::-1][1:-1]])
            out.append(Shape(teeth, _TEETH))
    out.append(Shape(stroke(lm[[48, 60, 61, 62, 63, 64, 54]], 0.016), _shade(lip, 0.55)))
    return out


# ----------------------------------------------------------------------------- attributes


def mustache_shapes(lm: np.ndarray, style: MustacheStyle) -> list[Shape]:
    """A mustache instance placed by the landmarks: under nose base 33, over upper lip 51, along 48/54.

    The style is relative to the landmarks (thickness in units of the 33-51 gap, length in
    half mouth widths), so the same instance follows any face, pose and expression.
    """
    nose, lip, cl, cr = lm[33], lm[51], lm[48], lm[54]
    h = max(lip[1] - nose[1], 1e-3)
    s_end = 1.0 + style.length
    s = np.linspace(-s_end, s_end, 41)
    centre = quad_through(cl, lip, cr, np.clip(s, -1.0, 1.0))
    # Beyond the corners continue along the end tangent, then droop (or curl up when < 0).
    ends = np.clip(np.abs(s) - 1.0, 0.0, None)
    tangent = (cr - cl) / 2 + 2 * np.sign(s)[:, None] * ((cl + cr) / 2 - lip)
    centre = centre + (np.sign(s) * ends)[:, None] * tangent + np.stack([0 * s, 4 * style.droop * h * ends**2], 1)
    a = np.abs(s)
    kind = style.kind
    if kind == "pencil":
        lower, prof = -0.12, np.full_like(s, 0.55)
    elif kind == "handlebar":
        lower, prof = -0.04, 1.0 - 0.55 * np.clip(a, 0, 1.2)
    elif kind == "walrus":
        lower, prof = 0.28, 1.25 - 0.25 * a**2
    else:  # chevron
        lower, prof = 0.06, 1.0 - 0.3 * a**2
    taper = np.clip((s_end - a) / (0.35 * s_end), 0.0, 1.0) ** 0.7
    thick = style.thickness * h * prof * np.maximum(taper, 0.05)
    lo = centre + np.stack([0 * s, np.full_like(s, lower * h)], 1)
    hi = lo - np.stack([0 * s, thick], 1)
    under_nose = np.abs(hi[:, 0] - nose[0]) < 0.3
    hi[under_nose, 1] = np.maximum(hi[under_nose, 1], nose[1] + 0.12 * h)  # never over the nostrils
    halves = [a >= 0] if style.gap <= 0 else [s <= -style.gap, s >= style.gap]
    out = []
    for keep in halves:
        out.append(Shape(np.concatenate([lo[keep], hi[keep][::-1]]), style.color))
    dark = _shade(style.color, 0.62)
    for j in range(style.strands):
        sj = -0.9 * s_end + 1.8 * s_end * (j + 0.5) / style.strands
        if abs(sj) < style.gap + 0.03:
            continue
        i = int(np.argmin(np.abs(s - sj)))
        i2 = int(np.argmin(np.abs(s - (sj + 0.1 * np.sign(sj)))))
        seg = np.stack([lo[i] * 0.85 + hi[i] * 0.15, hi[i2] * 0.85 + lo[i2] * 0.15])
        out.append(Shape(stroke(seg, 0.022), dark))
    return out


def eyeglasses_shapes(lm: np.ndarray, style: EyeglassesStyle) -> list[Shape]:
    """A pair of glasses placed by the landmarks: lenses round eyes 36-41 / 42-47, bridge over 27-28,
    temples to the face side by jaw points 0 / 16. Sizes are relative to the eye width."""
    p = {"round": 2.0, "rect": 5.0, "aviator": 2.3}[style.shape]
    th = style.thickness
    tint_a = int(round(255 * style.tint_alpha))
    out: list[Shape] = []
    inner_edges, outer_edges = [], []
    for eye, side in ((lm[36:42], -1.0), (lm[42:48], 1.0)):
        c = eye.mean(axis=0)
        a = style.lens_width * abs(eye[3, 0] - eye[0, 0]) / 2
        b = a * style.lens_aspect
        cy = c[1] + 0.08 * b
        rim = superellipse(c[0], cy, a + th / 2, b + th / 2, p)
        glass = superellipse(c[0], cy, a - th / 2, b - th / 2, p)
        if style.shape == "aviator":  # teardrop: the lower outer part hangs lower
            for poly in (rim, glass):
                below = np.clip(poly[:, 1] - cy, 0, None)
                outward = np.clip(side * (poly[:, 0] - c[0]) / a + 0.6, 0, None)
                poly[:, 1] += 0.35 * below * outward
        out.append(Shape(rim, style.frame_color))
        out.append(Shape(glass, style.tint_color, tint_a))  # overwrites the rim's inside
        inner_edges.append(np.array([c[0] - side * (a - th / 4), cy - 0.35 * b]))
        outer_edges.append(np.array([c[0] + side * (a - th / 4), cy - 0.45 * b]))
    top = np.array([0.0, lm[27, 1] + 0.3 * (lm[28, 1] - lm[27, 1])])
    bridge = quad_through(inner_edges[0], top, inner_edges[1], np.linspace(-1, 1, 9))
    out.append(Shape(stroke(bridge, th * 0.9), style.frame_color))
    for edge, jaw in zip(outer_edges, (lm[0], lm[16])):
        end = jaw + np.array([-0.03 * np.sign(jaw[0]), -0.06])
        out.append(Shape(stroke(np.stack([edge, end]), th * 0.8), style.frame_color))
    return out
