"""The generator as an MLflow pyfunc model: base64 PNG source + reference in, base64 PNG out.

An edge module: it imports mlflow at the top, so nothing in the library imports it. String columns
keep the signature column-based, so one model serves `dataframe_split` / `dataframe_records` JSON over
REST and pandas in Python (request format and errors: docs/serving.md). The transfer itself is
`geogan.model.transfer`, the function evaluation uses.
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
    """Two string columns in, one out; parameters `refine_weight`, `align` and `return_parts`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", c) for c in INPUT_COLUMNS]),
        outputs=Schema([ColSpec("string", OUTPUT_COLUMN)]),
        params=ParamSchema([ParamSpec("refine_weight", "double", float(refine_weight)),
                            ParamSpec("align", "string", "auto"), ParamSpec("return_parts", "boolean", False)]),
    )


def _cells(column: Any) -> list[Any]:
    # MLflow turns a dict of lists into one row whose cells are lists: flatten those.
    out: list[Any] = []
    for cell in column:
        out.extend(cell if isinstance(cell, (list, tuple, np.ndarray)) else [cell])
    return out


def bad_input(message: str) -> Exception:
    """The error a client should fix: MLflow's scoring server answers it with HTTP 400 and this message."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _faces(cells: list[Any], column: str, preparer: Any) -> list[Any]:
    """Each cell decoded and framed as training framed faces; the first bad one names its row and column."""
    from PIL import Image, UnidentifiedImageError

    from geogan.data.faces import FaceError

    faces = []
    for row, cell in enumerate(cells):
        name = f"row {row} column '{column}'"
        try:
            data = base64.b64decode(cell, validate=True)
        except (ValueError, TypeError) as e:
            raise bad_input(f"{name}: not base64 ({e})") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                faces.append(preparer.from_image(im, name))
        except FaceError as e:
            raise bad_input(str(e)) from None
        except UnidentifiedImageError:
            raise bad_input(f"{name}: not a PNG or JPEG image") from None
        except (OSError, Image.DecompressionBombError) as e:
            raise bad_input(f"{name}: unreadable image ({e})") from None
    return faces


class GeoGANPyfunc(mlflow.pyfunc.PythonModel):
    """Instance-level attribute transfer behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Load the generator file artifact (CPU, or the first GPU when there is one)."""
        import torch

        from geogan.model import load_generator

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        generator, meta = load_generator(context.artifacts[GENERATOR_ARTIFACT], map_location="cpu")
        self.generator = generator.to(self.device).eval()
        self.meta = meta
        self.resolution = int(meta["resolution"])
        self.refine_weight = inference_refine_weight(meta)
        self.needs_landmarks = bool(generator.hparams.get("flow_extra_in", 0))  # flow_inputs rgb+landmarks: dlib's points

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Transfer each row's reference attribute onto its source.

        Args:
            context: MLflow's context (unused after load_context).
            model_input: DataFrame with string columns `source` and `reference` (base64
                images, one pair per row), or a dict of such strings or lists of them.
            params: optional {"refine_weight": float (default: the trained weight), "align":
                "auto" | "dlib" | "none", "return_parts": bool (add columns warped and mask)}.
        Returns:
            DataFrame with column `output` (and `warped`, `mask`): base64 PNGs, one per input row.
        """
        import pandas as pd
        import torch

        from geogan.data.faces import ALIGN_MODES, FacePreparer, heatmaps
        from geogan.model import to_tensor, to_uint8, transfer

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
        if missing:
            raise bad_input(f"model input lacks column(s) {missing}; expected {list(INPUT_COLUMNS)}")
        params = params or {}
        align = params.get("align", "auto")
        if align not in ALIGN_MODES:
            raise bad_input(f"params.align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
        preparer = FacePreparer(self.resolution, align, landmarks=self.needs_landmarks)
        faces_a, faces_b = (_faces(_cells(frame[c]), c, preparer) for c in INPUT_COLUMNS)
        if len(faces_a) != len(faces_b):
            raise bad_input(f"{len(faces_a)} sources but {len(faces_b)} references: one of each per row")
        heat = [heatmaps(f, self.resolution).to(self.device) for f in (faces_a, faces_b)] if self.needs_landmarks else []
        x_a, x_b = (to_tensor(np.stack([f.image for f in faces])).to(self.device) for faces in (faces_a, faces_b))
        weight = float(params.get("refine_weight", self.refine_weight))
        with torch.no_grad():
            out = transfer(self.generator, x_a, x_b, weight, *heat)
        columns = {OUTPUT_COLUMN: out.x_out}
        if params.get("return_parts", False):
            columns.update(warped=out.x_warp, mask=out.mask.expand(-1, 3, -1, -1) * 2 - 1)
        return pd.DataFrame({k: [encode_image(im) for im in to_uint8(v)] for k, v in columns.items()})
