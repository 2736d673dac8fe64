"""A CelebA-format folder rendered from synthetic faces, bad files included: the real-data code paths without real faces.

The files follow CelebA's formats as ../shared/data/celeba-20k ships them (its README):
`img_align_celeba/NNNNNN.jpg` (178x218, the face in the rows 20..198 that the reference crops),
`list_attr_celeba.txt` (a count line, the header of CelebA's 40 attribute names, rows of 1 / -1),
`identity_CelebA.txt` (`<image> <identity>`) and `list_eval_partition.txt` (`<image> <0|1|2>`,
identity-disjoint as CelebA's). Labels, identities and the 68 landmarks are known exactly.
Self-contained (numpy, Pillow, geogan.data.synthetic) so that any test module can use it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from geogan.data import synthetic

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
IMAGE_DIR = "img_align_celeba"
WIDTH, HEIGHT, FACE_TOP = 178, 218, 20  # the face is rendered at 178 px into rows 20..198
# Listed in the attribute file (all but `absent.jpg` on disk), each skipped by ingest for this reason.
BAD_FILES = {"bad_random.jpg": "corrupt", "cut_half.jpg": "truncated", "grey.jpg": "greyscale",
             "tiny.jpg": "too_small", "absent.jpg": "missing"}
UNLABELLED = "unlabelled.jpg"  # on disk beside the others, in no label file: ignored and counted
PARTITION_OF = ("0", "1", "2")  # identity k is in partition PARTITION_OF[k % 3]: train, val, test


@dataclass(frozen=True)
class CelebaFolder:
    """What was written, for the tests' expectations."""

    root: Path
    names: list[str]  # the good images, in file order
    identities: dict[str, str]  # image -> CelebA identity id
    partitions: dict[str, str]  # image -> "0" | "1" | "2"
    labels: dict[str, dict[str, int]]  # image -> {"Mustache", "Eyeglasses", "Smiling"} -> 0/1
    landmarks: dict[str, np.ndarray]  # image -> (68, 2) exact points in source-image pixels
    faces: dict[str, synthetic.SyntheticFace]


def aligned_image(face: synthetic.SyntheticFace) -> np.ndarray:
    """The face rendered at 178 px inside a 178x218 CelebA-aligned frame, above and below filled with its background."""
    canvas = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    canvas[:] = np.asarray(face.face.background, dtype=np.uint8)
    canvas[FACE_TOP:FACE_TOP + WIDTH] = synthetic.render(face, WIDTH)
    return canvas


def _jpeg(image: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_celeba_folder(root: Path, identities: int = 6, images_per_identity: int = 2, seed: int = 0,
                        bad_files: bool = True, partition: bool = True) -> CelebaFolder:
    """Write a CelebA-format folder of synthetic faces under `root`.

    Args:
        root: the folder to create.
        identities, images_per_identity: how many people, and images of each.
        seed: the synthetic faces' seed.
        bad_files: add BAD_FILES (listed) and UNLABELLED (not listed).
        partition: write identity_CelebA.txt and list_eval_partition.txt.
    Returns:
        The folder's description (good images only).
    """
    root = Path(root)
    (root / IMAGE_DIR).mkdir(parents=True)
    faces = synthetic.sample_dataset(identities, images_per_identity, seed)
    names = [f"{i + 1:06d}.jpg" for i in range(len(faces))]
    for name, face in zip(names, faces):
        (root / IMAGE_DIR / name).write_bytes(_jpeg(aligned_image(face)))
    ids = {n: str(100 + f.identity) for n, f in zip(names, faces)}
    parts = {n: PARTITION_OF[f.identity % 3] for n, f in zip(names, faces)}
    labels = {n: synthetic.labels(f) for n, f in zip(names, faces)}
    listed = names + (list(BAD_FILES) if bad_files else [])
    if bad_files:
        _write_bad_files(root / IMAGE_DIR, synthetic.sample_dataset(2, 1, seed + 1))
    rows = [f"{n} " + " ".join(f"{1 if labels.get(n, {}).get(a) else -1:2d}" for a in CELEBA_ATTRIBUTES) for n in listed]
    (root / "list_attr_celeba.txt").write_text(f"{len(listed)}\n{' '.join(CELEBA_ATTRIBUTES)}\n" + "\n".join(rows) + "\n")
    if partition:  # the bad files belong to the last identity's people, as CelebA lists every file
        (root / "identity_CelebA.txt").write_text("".join(f"{n} {ids.get(n, '999')}\n" for n in listed))
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {parts.get(n, '0')}\n" for n in listed))
    shift = np.array([0.0, FACE_TOP], dtype=np.float32)
    landmarks = {n: synthetic.face_landmarks(f.face, WIDTH) + shift for n, f in zip(names, faces)}
    return CelebaFolder(root, names, ids, parts, labels, landmarks, dict(zip(names, faces)))


def _write_bad_files(folder: Path, spare: list[synthetic.SyntheticFace]) -> None:
    good = _jpeg(aligned_image(spare[0]))
    (folder / "bad_random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "cut_half.jpg").write_bytes(good[: len(good) // 2])
    (folder / "grey.jpg").write_bytes(_jpeg(aligned_image(spare[1]), mode="L"))
    (folder / "tiny.jpg").write_bytes(_jpeg(synthetic.render(spare[1], 32)))
    (folder / UNLABELLED).write_bytes(good)


def write_landmarks_csv(folder: CelebaFolder, path: Path) -> Path:
    """The exact 68 points of every good image as a precomputed-landmarks CSV (source-image pixels)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *[f"{a}{i}" for i in range(68) for a in "xy"]])
        for name in folder.names:
            writer.writerow([name, *(f"{v:.4f}" for v in folder.landmarks[name].ravel())])
    return path
