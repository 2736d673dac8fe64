"""Sampling synthetic datasets: identities, poses, expressions and attribute instances from seeded RNGs."""

from __future__ import annotations

from typing import Any

import numpy as np

from geogan.data.synthetic.face import (
    ATTRIBUTE_PROBABILITY,
    HAIR_STYLES,
    LENS_SHAPES,
    MUSTACHE_KINDS,
    Color,
    EyeglassesStyle,
    FaceParams,
    MustacheStyle,
    SyntheticFace,
)


def _r(x: float) -> float:
    # Rounded parameters keep synthetic.json short and readable; rendering uses them as stored.
    return round(float(x), 4)


def _color(rng: np.random.Generator, base: tuple[float, float, float], jitter: float) -> Color:
    jittered = (int(np.clip(round(c + rng.uniform(-jitter, jitter)), 0, 255)) for c in base)
    return tuple(jittered)  # type: ignore[return-value]


def _pick(rng: np.random.Generator, palette: list[tuple[float, float, float]], jitter: float) -> Color:
    return _color(rng, palette[int(rng.integers(len(palette)))], jitter)


_SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (160, 105, 70), (110, 72, 50)]
_HAIR = [(25, 20, 18), (60, 40, 28), (105, 70, 42), (200, 165, 105), (150, 70, 35), (150, 148, 145)]
_IRIS = [(95, 60, 30), (45, 30, 20), (70, 110, 160), (80, 120, 80), (110, 120, 125)]
_MUSTACHE = [(30, 25, 20), (70, 45, 30), (115, 78, 45), (145, 72, 35), (190, 160, 100), (140, 140, 135)]
_FRAME = [(20, 20, 22), (90, 50, 25), (200, 170, 80), (175, 175, 180), (160, 30, 40), (40, 60, 140)]
_TINT = [(60, 60, 60), (90, 60, 30), (60, 80, 110), (60, 90, 60), (200, 220, 235)]
# Per mustache kind: ranges of (length past the corners, droop of the ends).
_MUSTACHE_SHAPE = {
    "chevron": ((0.0, 0.25), (0.0, 0.5)),
    "handlebar": ((0.35, 0.6), (-1.6, -0.8)),
    "pencil": ((0.0, 0.1), (0.0, 0.0)),
    "walrus": ((0.1, 0.3), (0.5, 1.2)),
}


def _sample_identity(rng: np.random.Generator) -> dict[str, Any]:
    skin_color = _pick(rng, _SKIN, 10)
    lip = tuple(0.92 * (0.55 * s + 0.45 * r) for s, r in zip(skin_color, (200, 80, 90)))
    u = rng.uniform
    return dict(
        skin_color=skin_color, hair_color=_pick(rng, _HAIR, 12),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))], hair_volume=_r(u(0.03, 0.16)),
        iris_color=_pick(rng, _IRIS, 10), lip_color=_color(rng, lip, 6),  # type: ignore[arg-type]
        clothes_color=_color(rng, (127, 127, 127), 110),
        face_width=_r(u(0.88, 1.06)), face_height=_r(u(0.92, 1.08)), jaw_width=_r(u(0.55, 0.9)),
        jaw_square=_r(u(0.55, 1.0)), eye_size=_r(u(0.88, 1.18)), eye_spacing=_r(u(0.93, 1.07)),
        eye_open=_r(u(0.85, 1.15)), brow_thickness=_r(u(0.045, 0.085)), brow_arch=_r(u(0.02, 0.08)),
        nose_length=_r(u(0.85, 1.12)), nose_width=_r(u(0.8, 1.25)), mouth_width=_r(u(0.85, 1.15)),
        lip_thickness=_r(u(0.75, 1.25)),
    )


def _sample_image(rng: np.random.Generator) -> dict[str, Any]:
    u = rng.uniform
    smiling = u() < 0.45
    smile = u(0.6, 1.0) if smiling else u(0.0, 0.3)
    return dict(
        rotation=_r(np.clip(rng.normal(0.0, 0.1), -0.25, 0.25)), scale=_r(u(0.9, 1.08)),
        tx=_r(u(-0.04, 0.04)), ty=_r(u(-0.04, 0.04)), shear=_r(u(-0.05, 0.05)), yaw=_r(u(-0.3, 0.3)),
        smile=_r(smile), mouth_open=_r(u(0.0, 0.7) if smiling else u(0.0, 0.25) ** 2),
        brow_raise=_r(u(-0.5, 1.0)),
        background=_color(rng, (170, 170, 170), 80),
    )


def _luma(c: tuple[float, ...]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _sample_mustache(rng: np.random.Generator, skin: Color) -> MustacheStyle:
    kind = MUSTACHE_KINDS[int(rng.integers(len(MUSTACHE_KINDS)))]
    # Colours that stand out on the wearer's own skin, so the instance is clearly visible.
    palette = [c for c in _MUSTACHE if abs(_luma(c) - _luma(skin)) >= 60]
    palette = palette or [max(_MUSTACHE, key=lambda c: abs(_luma(c) - _luma(skin)))]
    u = rng.uniform
    length, droop = _MUSTACHE_SHAPE[kind]
    return MustacheStyle(
        kind=kind, color=_pick(rng, palette, 12), thickness=_r(u(0.55, 0.85)), length=_r(u(*length)),
        droop=_r(u(*droop)), gap=_r(u(0.04, 0.12) if u() < 0.3 else 0.0),
        strands=int(rng.integers(0, 2) * rng.integers(4, 12)),  # half of them show hair strokes
    )


def _sample_eyeglasses(rng: np.random.Generator) -> EyeglassesStyle:
    u = rng.uniform
    dark = u() < 0.25
    return EyeglassesStyle(
        shape=LENS_SHAPES[int(rng.integers(len(LENS_SHAPES)))], frame_color=_pick(rng, _FRAME, 10),
        thickness=_r(u(0.045, 0.085)), lens_width=_r(u(1.2, 1.45)), lens_aspect=_r(u(0.65, 0.9)),
        tint_color=_pick(rng, _TINT, 10), tint_alpha=_r(u(0.55, 0.8) if dark else u(0.1, 0.3)),
    )


def sample_dataset(n_identities: int, images_per_identity: int, seed: int) -> list[SyntheticFace]:
    """Draw the parameters of a synthetic dataset, identity-major (index = id * per_id + j).

    Identity parameters and each identity's mustache/glasses styles come from
    rng([seed, id, 0]); pose, expression, background and which attributes are worn (each
    with probability ATTRIBUTE_PROBABILITY) from rng([seed, id, 1 + j]), so a face never
    depends on the dataset's size, and one person may appear with and without an attribute.

    Args:
        n_identities: distinct people (>= 1).
        images_per_identity: images of each (>= 1).
        seed: dataset seed.
    Returns:
        n_identities * images_per_identity faces.
    """
    if n_identities < 1 or images_per_identity < 1:
        raise ValueError(
            f"n_identities and images_per_identity must be >= 1, got {n_identities}, {images_per_identity}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    faces = []
    for ident in range(n_identities):
        rng = np.random.default_rng([seed, ident, 0])
        identity = _sample_identity(rng)
        mustache, glasses = _sample_mustache(rng, identity["skin_color"]), _sample_eyeglasses(rng)
        for j in range(images_per_identity):
            rng_img = np.random.default_rng([seed, ident, 1 + j])
            face = FaceParams(**identity, **_sample_image(rng_img))
            wear_m, wear_g = rng_img.uniform(size=2) < ATTRIBUTE_PROBABILITY
            faces.append(SyntheticFace(ident, face, mustache if wear_m else None, glasses if wear_g else None))
    return faces

