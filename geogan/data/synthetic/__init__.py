"""Synthetic faces with exact ground truth: landmarks, attribute masks and true transfers.

The default dataset of the pipeline. Each image is a stylised face drawn from a 68-point
iBUG 300-W landmark layout under a random pose and expression, optionally wearing a
`Mustache` and/or `Eyeglasses` whose *instance style* (colour, shape, thickness...) belongs
to the identity. Because drawing is a pure function of the parameters, the true result of
an instance-level transfer ("this target wearing that reference's mustache") is rendered
exactly (`render_transfer`), and so are the landmarks and the attribute regions.

Modules: face (the parameters), sampling, geometry (landmarks, projection), parts (shapes),
raster (the rasteriser), drawing (images and masks), dataset (files on disk).
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
