"""Synthetic faces with exact ground truth: landmarks, attribute masks and true transfers.

The default dataset of the pipeline. Each image is a stylised face drawn from a 68-point
iBUG 300-W landmark layout under a random pose and expression, optionally wearing a
`Mustache` and/or `Eyeglasses` whose *instance style* (colour, shape, thickness...) belongs
to the identity. Because the drawing is a pure function of the parameters, the true result
of an instance-level transfer ("this target wearing that reference's mustache") can be
rendered exactly (`render_transfer`), and so can the landmarks and the attribute regions.

Conventions: images are uint8 (H, W, 3); landmarks are (x, y) in output pixels with pixel
centres at integer coordinates (x=0 is the centre of the leftmost pixel).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geogan.data import synthetic_render as sr

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


# ----------------------------------------------------------------------------- sampling


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


# ----------------------------------------------------------------------------- rendering


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")


def face_landmarks(face: FaceParams, size: int) -> np.ndarray:
    """The 68 iBUG landmarks of `face` as drawn in a size x size image.

    Returns:
        (68, 2) float32 (x, y) pixel coordinates, pixel centres at integers.
    """
    _check_size(size)
    lm, lz = sr.canonical_landmarks(face)
    return sr.Projector(face, size).pixels(lm, lz).astype(np.float32)


def _draw(plane: np.ndarray, shapes: list[sr.Shape], proj: sr.Projector, alpha: np.ndarray | None = None) -> None:
    for shape in shapes:
        sr.fill(plane, proj.canvas(shape.points, shape.z), sr.pack(shape.color), alpha, shape.alpha)


def _attribute_shapes(lm: np.ndarray, attribute: str, style: Any) -> list[sr.Shape]:
    if attribute == "Mustache":
        return sr.mustache_shapes(lm, style)
    if attribute == "Eyeglasses":
        return sr.eyeglasses_shapes(lm, style)
    raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")


def render(face: SyntheticFace, size: int) -> np.ndarray:
    """Draw one face (size x size, anti-aliased): the face first, then mustache, then glasses.

    Returns:
        (size, size, 3) uint8 RGB.
    """
    _check_size(size)
    p = face.face
    k = sr.supersampling(size)
    n = size * k
    proj = sr.Projector(p, size, k)
    lm, lz = sr.canonical_landmarks(p)
    plane = np.empty((n, n), np.uint32)  # packed RGB canvas, k times the output size
    # Background: a vertical gradient, darker towards the bottom.
    rows = np.round(np.linspace(1.0, 0.82, n)[:, None] * np.array(p.background, float)).astype(np.uint8)
    plane[:] = np.concatenate([rows, np.zeros((n, 1), np.uint8)], axis=1).view(np.uint32)
    _draw(plane, sr.face_shapes(p, lm, lz), proj)
    canvas = sr.unpack(plane)  # (n, n, 4) view
    for attribute, style in (("Mustache", face.mustache), ("Eyeglasses", face.eyeglasses)):
        if style is not None:
            # Each attribute is a layer composited last, so it changes nothing outside its own pixels.
            layer, alpha = np.zeros_like(plane), np.zeros((n, n), np.uint8)
            _draw(layer, _attribute_shapes(lm, attribute, style), proj, alpha)
            sr.composite(canvas, sr.unpack(layer), alpha)
    return np.ascontiguousarray(sr.downsample(canvas, k)[..., :3])


def with_attribute(
    face: SyntheticFace, attribute: str, style: MustacheStyle | EyeglassesStyle | None
) -> SyntheticFace:
    """`face` wearing `style` as its `attribute` instance (None removes it)."""
    if attribute not in INSTANCE_ATTRIBUTES:
        raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")
    return dataclasses.replace(face, **{attribute.lower(): style})


def _style(face: SyntheticFace, attribute: str) -> Any:
    if attribute not in INSTANCE_ATTRIBUTES:
        raise ValueError(f"attribute {attribute!r} has no instance style; expected one of {INSTANCE_ATTRIBUTES}")
    return getattr(face, attribute.lower())


def render_transfer(target: SyntheticFace, reference: SyntheticFace, attribute: str, size: int) -> np.ndarray:
    """Ground truth of an instance-level transfer: `target` (identity, pose, expression, other
    attributes) wearing `reference`'s own instance of `attribute`.

    Returns:
        (size, size, 3) uint8.
    """
    style = _style(reference, attribute)
    if style is None:
        raise ValueError(f"reference (identity {reference.identity}) does not wear {attribute}")
    return render(with_attribute(target, attribute, style), size)


def _coverage(face: FaceParams, size: int, polygons: list[tuple[np.ndarray, np.ndarray | None, bool]]) -> np.ndarray:
    """Box-filtered coverage of face-frame polygons (points, z, covers) painted in order."""
    k = sr.supersampling(size)
    proj = sr.Projector(face, size, k)
    cover = np.zeros((size * k, size * k), np.uint8)
    for points, z, covers in polygons:
        sr.fill(cover, proj.canvas(points, z), 1 if covers else 0)
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
    _check_size(size)
    if isinstance(style, SyntheticFace):
        reference, style = style, _style(style, attribute)
        if style is None:
            raise ValueError(f"reference (identity {reference.identity}) does not wear {attribute}")
    if style is None:
        return np.zeros((size, size), np.float32)
    lm, _ = sr.canonical_landmarks(target.face)
    # A fully transparent fill (a clear lens) uncovers, as it does in the layer.
    shapes = _attribute_shapes(lm, attribute, style)
    return _coverage(target.face, size, [(s.points, s.z, s.alpha > 0) for s in shapes])


def attribute_mask(face: SyntheticFace, attribute: str, size: int) -> np.ndarray:
    """Region `face`'s own instance of `attribute` covers (zeros when not worn).

    For "Smiling" (no instance style) the region is the outer lip polygon, where the
    expression shows. Returns (size, size) float32 in [0, 1].
    """
    if attribute == "Smiling":
        _check_size(size)
        lm, lz = sr.canonical_landmarks(face.face)
        return _coverage(face.face, size, [(lm[48:60], lz[48:60], True)])
    return attribute_mask_for(face, _style(face, attribute), attribute, size)


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


def load_synthetic(path: str | Path) -> tuple[list[SyntheticFace], dict[str, Any]]:
    """Read a synthetic.json (or the prepared folder holding it).

    Returns:
        (faces in dataset order, metadata such as resolution and seed).
    """
    from geogan.io import read_json

    p = Path(path)
    p = p / "synthetic.json" if p.is_dir() else p
    data = read_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("faces"), list):
        raise ValueError(f"{p}: expected an object with a 'faces' list")
    try:
        faces = [face_from_dict(d) for d in data["faces"]]
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from e
    return faces, {k: v for k, v in data.items() if k != "faces"}


def _render_chunk(faces: list[SyntheticFace], size: int) -> np.ndarray:
    return np.stack([render(f, size) for f in faces])


def _render_all(faces: list[SyntheticFace], size: int, out: np.ndarray, workers: int, progress: bool) -> None:
    """Render faces into out[i]; with workers > 1, chunks go to spawned processes (same bytes)."""
    from tqdm import tqdm

    bar = tqdm(total=len(faces), desc="render synthetic", unit="img", disable=not progress)
    chunk = 32
    starts = range(0, len(faces), chunk)
    if workers <= 1 or len(faces) <= 2 * chunk:
        for i in starts:
            out[i : i + chunk] = _render_chunk(faces[i : i + chunk], size)
            bar.update(len(out[i : i + chunk]))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold torch/BLAS threads that a fork would copy mid-lock.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            jobs = pool.map(_render_chunk, [faces[i : i + chunk] for i in starts], [size] * len(starts))
            for i, images in zip(starts, jobs):
                out[i : i + len(images)] = images
                bar.update(len(images))
    bar.close()


def write_synthetic_dataset(
    out_dir: Path,
    n_identities: int,
    images_per_identity: int,
    resolution: int,
    seed: int,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Render a synthetic dataset into a prepared-dataset folder, atomically.

    Writes images.npy (uint8 (N, R, R, 3)), manifest.csv (index,image,identity,Eyeglasses,
    Mustache,Smiling,partition with partition empty), synthetic.json ({"faces": [...],
    "resolution", "seed", ...}), landmarks_exact.npy (float32 (N, 68, 2)) and report.json.
    The same arguments give byte-identical files, whatever `workers` (render processes).

    Returns:
        The report dict, plus "seconds" (render time, kept out of report.json so the
        files stay deterministic).
    """
    from geogan.io import atomic_path, atomic_write_json, atomic_write_npy, atomic_write_text

    _check_size(resolution)
    start = time.perf_counter()
    faces = sample_dataset(n_identities, images_per_identity, seed)
    n = len(faces)
    attrs = sorted(SYNTHETIC_ATTRIBUTES)
    landmarks = np.stack([face_landmarks(f.face, resolution) for f in faces])  # (N, 68, 2)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # The folder is renamed into place at the end, so images can stream into it.
        shape = (n, resolution, resolution, 3)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        _render_all(faces, resolution, images, workers, progress)
        images.flush()
        del images
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["index", "image", "identity", *attrs, "partition"])
        counts = {a: 0 for a in attrs}
        for i, f in enumerate(faces):
            lab = labels(f)
            for a in attrs:
                counts[a] += lab[a]
            writer.writerow([i, f"synthetic_{i:06d}", str(f.identity), *(lab[a] for a in attrs), ""])
        atomic_write_text(tmp / "manifest.csv", rows.getvalue())
        meta = {"resolution": resolution, "seed": seed, "n_identities": n_identities,
                "images_per_identity": images_per_identity}
        atomic_write_json(tmp / "synthetic.json", {**meta, "faces": [face_to_dict(f) for f in faces]})
        atomic_write_npy(tmp / "landmarks_exact.npy", landmarks)
        report = {"source": "synthetic", "images": n, "skipped": 0, "identities": n_identities,
                  "resolution": resolution, "seed": seed, "attributes": counts}
        atomic_write_json(tmp / "report.json", report)
    return {**report, "seconds": round(time.perf_counter() - start, 3)}
