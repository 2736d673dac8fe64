"""The parts of a synthetic face (skin, hair, eyes, nose, lips) and its attribute instances, as shapes."""

from __future__ import annotations

import math

import numpy as np

from geogan.data.synthetic.face import Color, EyeglassesStyle, FaceParams, MustacheStyle
from geogan.data.synthetic.geometry import (
    Shape,
    ellipse,
    mirror,
    quad_through,
    stroke,
    superellipse,
)

_SCLERA: Color = (246, 246, 240)
_PUPIL: Color = (18, 16, 16)
_LID: Color = (45, 32, 30)
_MOUTH_INSIDE: Color = (75, 25, 32)
_TEETH: Color = (238, 236, 226)



def _shade(c: Color, f: float) -> Color:
    return tuple(int(min(255, max(0, round(v * f)))) for v in c)  # type: ignore[return-value]



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
        out.append(Shape(np.concatenate([arc, left, mirror(left)[::-1]]), face.hair_color))
    neck = np.array([[-0.4 * W, 0.4], [0.4 * W, 0.4], [0.44 * W, 1.25], [0.0, 1.4], [-0.44 * W, 1.25]])
    out.append(Shape(neck, _shade(face.skin_color, 0.86)))
    return out


def _front_hair(face: FaceParams, top_r: float) -> list[Shape]:
    W, hair = face.face_width, face.hair_color
    if face.hair_style == "bald":
        side = np.array([[-1.04, -0.02], [-1.06, -0.42], [-0.93, -0.6], [-0.92, -0.3], [-0.95, -0.02]]) * [W, 1.0]
        return [Shape(side, hair), Shape(mirror(side)[::-1], hair)]
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
