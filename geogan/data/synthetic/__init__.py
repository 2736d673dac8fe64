"""Synthetic faces with exact ground truth: landmarks, attribute masks and true transfers.

The default dataset: stylised faces drawn from a 68-point iBUG 300-W layout under random pose
and expression, wearing `Mustache` and/or `Eyeglasses` instances whose style belongs to the
identity. Drawing is a pure function of the parameters, so the true result of an instance-level
transfer (`render_transfer`), the landmarks and the attribute regions are exact.
"""

from geogan.data.synthetic.dataset import load_synthetic, write_synthetic_dataset
from geogan.data.synthetic.drawing import (
    attribute_mask,
    attribute_mask_for,
    face_landmarks,
    render,
    render_transfer,
)
from geogan.data.synthetic.face import (
    ATTRIBUTE_PROBABILITY,
    INSTANCE_ATTRIBUTES,
    SYNTHETIC_ATTRIBUTES,
    EyeglassesStyle,
    FaceParams,
    MustacheStyle,
    SyntheticFace,
    face_from_dict,
    face_to_dict,
    labels,
    with_attribute,
)
from geogan.data.synthetic.sampling import sample_dataset

__all__ = [
    "ATTRIBUTE_PROBABILITY",
    "INSTANCE_ATTRIBUTES",
    "SYNTHETIC_ATTRIBUTES",
    "EyeglassesStyle",
    "FaceParams",
    "MustacheStyle",
    "SyntheticFace",
    "attribute_mask",
    "attribute_mask_for",
    "face_from_dict",
    "face_landmarks",
    "face_to_dict",
    "labels",
    "load_synthetic",
    "render",
    "render_transfer",
    "sample_dataset",
    "with_attribute",
    "write_synthetic_dataset",
]
