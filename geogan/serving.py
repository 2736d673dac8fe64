"""The generator as an MLflow pyfunc model: base64 PNG source + reference in, base64 PNG out.

An edge module (it imports mlflow at the top, so nothing in the library imports it).
Input: a DataFrame (or a dict) with string columns `source` (a face without the
attribute) and `reference` (a face with the instance to transfer), each a base64-encoded
PNG/JPEG; output: a DataFrame with one string column `output`, base64 PNGs at the model's
resolution. Strings keep the MLflow signature column-based, so the same model serves
`dataframe_split` / `dataframe_records` JSON over REST and pandas in Python;
`encode_image` / `decode_image` convert uint8 (H, W, 3) arrays. Images of another size
are centre-cropped and resized (Lanczos) to the training resolution, as `geogan transfer`
does. The transfer itself is `geogan.model.transfer`, the function evaluation uses.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import mlflow.pyfunc

from geogan.model import inference_refine_weight  # noqa: F401 - part of this module's API
import numpy as np

GENERATOR_ARTIFACT = "generator"
INPUT_COLUMNS = ("source", "reference")
OUTPUT_COLUMN = "output"


def encode_image(image: np.ndarray) -> str:
    """uint8 (H, W, 3) -> base64 PNG string."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: str | bytes, size: int | None = None) -> np.ndarray:
    """base64 PNG/JPEG -> uint8 (H, W, 3); with `size`, centre-cropped and resized to size x size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im)
    except (ValueError, OSError, UnidentifiedImageError) as e:
        raise ValueError(f"not a base64-encoded image: {e}") from e


def model_signature(refine_weight: float) -> Any:
    """Two string columns in, one out, plus an optional `refine_weight` parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", c) for c in INPUT_COLUMNS]),
        outputs=Schema([ColSpec("string", OUTPUT_COLUMN)]),
        params=ParamSchema([ParamSpec("refine_weight", "double", float(refine_weight))]),
    )


def _cells(column: Any) -> list[Any]:
    # MLflow turns a dict of lists into one row whose cells are lists: flatten those.
    out: list[Any] = []
    for cell in column:
        out.extend(cell if isinstance(cell, (list, tuple, np.ndarray)) else [cell])
    return out


class GeoGANPyfunc(mlflow.pyfunc.PythonModel):
    """Instance-level attribute transfer behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Load the generator file artifact (CPU, or the first GPU when there is one)."""
        import torch

        from geogan.model import load_generator

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        generator, meta = load_generator(context.artifacts[GENERATOR_ARTIFACT], map_location="cpu")
        flow_inputs = meta.get("config", {}).get("model", {}).get("flow_inputs", "rgb")
        if flow_inputs != "rgb" or meta.get("net", {}).get("flow_extra_in", 0):
            raise ValueError(f"this generator needs landmark inputs (model.flow_inputs={flow_inputs}); "
                             "serving takes RGB only")
        self.generator = generator.to(self.device).eval()
        self.meta = meta
        self.resolution = int(meta["resolution"]) if "resolution" in meta else None
        self.refine_weight = inference_refine_weight(meta)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Transfer each row's reference attribute onto its source.

        Args:
            context: MLflow's context (unused after load_context).
            model_input: DataFrame with string columns `source` and `reference` (base64
                images, one pair per row), or a dict of such strings or lists of them.
            params: optional {"refine_weight": float}; defaults to the trained weight.
        Returns:
            DataFrame with column `output`: base64 PNGs, one per input row.
        """
        import pandas as pd
        import torch

        from geogan.model import to_tensor, to_uint8, transfer

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"model input lacks column(s) {missing}; expected {list(INPUT_COLUMNS)}")
        weight = float((params or {}).get("refine_weight", self.refine_weight))
        src = np.stack([decode_image(s, self.resolution) for s in _cells(frame["source"])])  # (N, H, W, 3) uint8
        ref = np.stack([decode_image(s, self.resolution) for s in _cells(frame["reference"])])
        if src.shape != ref.shape:
            raise ValueError(f"source images {src.shape[1:]} and references {ref.shape[1:]} differ in size")
        with torch.no_grad():
            out = transfer(self.generator, to_tensor(src).to(self.device), to_tensor(ref).to(self.device), weight)
        return pd.DataFrame({OUTPUT_COLUMN: [encode_image(im) for im in to_uint8(out.x_out)]})
