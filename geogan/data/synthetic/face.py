"""The synthetic face model: a face's parameters, its attribute instances, labels and JSON form."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

SYNTHETIC_ATTRIBUTES: tuple[str, ...] = ("Mustache", "Eyeglasses", "Smiling")
INSTANCE_ATTRIBUTES: tuple[str, ...] = ("Mustache", "Eyeglasses")  # those with a transferable style
HAIR_STYLES: tuple[str, ...] = ("short", "fringe", "bob", "long", "bald")
MUSTACHE_KINDS: tuple[str, ...] = ("chevron", "handlebar", "pencil", "walrus")
LENS_SHAPES: tuple[str, ...] = ("round", "rect", "aviator")
ATTRIBUTE_PROBABILITY = 0.35  # chance an image wears each instance attribute

Color = tuple[int, int, int]


@dataclass(frozen=True)
class FaceParams:
    """Everything that draws one face without attributes: identity, pose, expression, scene.

    Lengths are in the face frame (cheek half-width about 1); colours are RGB 0..255.
    """

    # Identity (constant across one person's images).
    skin_color: Color
    hair_color: Color
    hair_style: str  # one of HAIR_STYLES
    hair_volume: float  # how far the hair stands off the skull
    iris_color: Color
    lip_color: Color
    clothes_color: Color
    face_width: float  # cheek half-width
    face_height: float  # vertical stretch of jaw and skull
    jaw_width: float  # 1 = wide jaw, smaller = narrower towards the chin
    jaw_square: float  # exponent < 1 squares the jaw
    eye_size: float
    eye_spacing: float
    eye_open: float
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    # Pose (per image): rotation in radians, scale, translation in image sizes, shear, yaw in radians.
    rotation: float = 0.0
    scale: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    shear: float = 0.0
    yaw: float = 0.0
    # Expression (per image), each in [0, 1] (brow_raise in [-1, 1]).
    smile: float = 0.0
    mouth_open: float = 0.0
    brow_raise: float = 0.0
    # Scene (per image).
    background: Color = (200, 200, 200)


@dataclass(frozen=True)
class MustacheStyle:
    """One mustache instance, relative to the landmarks so it fits any face.

    thickness is in units of the nose-base-to-lip gap (33 -> 51), length is how far it runs
    past the mouth corners in half mouth widths, droop > 0 bends the ends down (< 0 curls
    them up), gap > 0 splits it under the nose, strands > 0 adds darker hair strokes.
    """

    kind: str  # one of MUSTACHE_KINDS
    color: Color
    thickness: float
    length: float
    droop: float
    gap: float
    strands: int


@dataclass(frozen=True)
class EyeglassesStyle:
    """One pair of glasses, sized relative to the eyes (lens_width in eye half-widths).

    thickness is the frame width in face units; tint_alpha in [0, 1] is the lens opacity.
    """

    shape: str  # one of LENS_SHAPES
    frame_color: Color
    thickness: float
    lens_width: float
    lens_aspect: float  # lens height / width
    tint_color: Color
    tint_alpha: float


@dataclass(frozen=True)
class SyntheticFace:
    """One image: a person (`identity`), their face as drawn, and the attribute instances worn."""

    identity: int
    face: FaceParams
    mustache: MustacheStyle | None = None
    eyeglasses: EyeglassesStyle | None = None



def with_attribute(
    face: SyntheticFace, attribute: str, style: MustacheStyle | EyeglassesStyle | None
) -> SyntheticFace:
    """`face` wearing `style` as its `attribute` instance (None removes it)."""
    if attribute not in INSTANCE_ATTRIBUTES:
        raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")
    return dataclasses.replace(face, **{attribute.lower(): style})


def style_of(face: SyntheticFace, attribute: str) -> Any:
    """The instance of `attribute` that `face` wears (None when not worn)."""
    if attribute not in INSTANCE_ATTRIBUTES:
        raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")
    return getattr(face, attribute.lower())



def labels(face: SyntheticFace) -> dict[str, int]:
    """Binary labels: Mustache/Eyeglasses when worn, Smiling when smile >= 0.5."""
    return {
        "Mustache": int(face.mustache is not None),
        "Eyeglasses": int(face.eyeglasses is not None),
        "Smiling": int(face.face.smile >= 0.5),
    }


# ----------------------------------------------------------------------------- serialisation


def face_to_dict(face: SyntheticFace) -> dict[str, Any]:
    """JSON-ready dict of a face (tuples become lists); face_from_dict inverts it exactly."""
    return dataclasses.asdict(face)


def _from_fields(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if hint == Color or typing.get_origin(hint) is tuple:
            value = tuple(int(v) for v in value)
        elif hint is float:
            value = float(value)
        elif hint is int:
            value = int(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


def face_from_dict(d: dict[str, Any]) -> SyntheticFace:
    """Rebuild a SyntheticFace from face_to_dict's output (after a JSON round trip too)."""
    if not isinstance(d, dict) or "face" not in d or "identity" not in d:
        raise ValueError("synthetic face: expected an object with 'identity' and 'face'")
    return SyntheticFace(
        identity=int(d["identity"]),
        face=_from_fields(FaceParams, d["face"], "face"),
        mustache=None if d.get("mustache") is None else _from_fields(MustacheStyle, d["mustache"], "mustache"),
        eyeglasses=(
            None if d.get("eyeglasses") is None else _from_fields(EyeglassesStyle, d["eyeglasses"], "eyeglasses")
        ),
    )

