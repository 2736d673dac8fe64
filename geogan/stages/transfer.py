"""`geogan transfer`: put the reference's attribute instance onto the source face.

    geogan transfer --model models:/geogan-Mustache@champion --source a.jpg --reference b.jpg --out out.png

`--model` is a registered-model URI (models:/name@alias or models:/name/version), a run
artifact URI, or a local folder/file holding generator.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.stages._common import StageError, exit_with, prog_name, run_main


def resolve_generator_file(model: str) -> Path:
    """A local generator.pt for a path or an MLflow URI (downloaded through MLflow)."""
    local = Path(model)
    if local.is_file():
        return local
    if local.is_dir():
        found = sorted(local.rglob("generator.pt"))
        if found:
            return found[0]
        raise StageError(f"{local}: no generator.pt inside")
    if "://" in model or model.startswith("models:/"):
        import mlflow
        from mlflow.exceptions import MlflowException

        from geogan.registry import ModelNotFound, check_model_uri
        from geogan.tracking import checked_tracking_uri

        uri = checked_tracking_uri("sqlite:///mlflow/mlflow.db")
        try:
            if model.startswith("models:/"):
                check_model_uri(model, uri)
            mlflow.set_tracking_uri(uri)
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except ModelNotFound as e:
            raise StageError(str(e)) from None
        except MlflowException as e:
            raise StageError(f"{model}: {str(e.message).splitlines()[0]}") from None
        found = sorted(folder.rglob("generator.pt"))
        if not found:
            raise StageError(f"{model}: the model has no generator.pt artifact")
        return found[0]
    raise StageError(f"{model}: no such file, folder or model URI")


def load_image(path: Path, size: int, min_side: int = 1) -> np.ndarray:
    """Read an image as uint8 RGB, centre-cropped to a square and resized to `size`.

    An image whose shorter side is below `min_side` is refused, naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if min(im.size) < min_side:
                raise StageError(f"{path}: {im.width}x{im.height} px is too small for this {size} px model "
                                 f"(at least {min_side} px on the shorter side)")
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im)
    except (OSError, UnidentifiedImageError) as e:
        raise StageError(f"{path}: cannot read image ({e})") from e


def run_transfer(model: str, source: Path, reference: Path, out: Path, grid: bool = False) -> dict:
    """Transfer and write the result (or, with grid, source | reference | warped | mask | result)."""
    import torch

    from geogan.model import inference_refine_weight, load_generator, to_tensor, to_uint8, transfer
    from geogan.visualize import save_png

    generator, meta = load_generator(resolve_generator_file(model))
    size = int(meta["resolution"])
    min_side = max(1, size // 4)  # upscaled more than 4x, no face is left to transfer
    x_a = to_tensor(load_image(source, size, min_side))
    x_b = to_tensor(load_image(reference, size, min_side))
    refine_w = inference_refine_weight(meta)
    heat_a = heat_b = None
    if generator.hparams.get("flow_extra_in", 0):  # trained with flow_inputs rgb+landmarks: the flow needs them
        heat_a, heat_b = _heatmaps([source, reference], size)
    with torch.no_grad():
        o = transfer(generator, x_a, x_b, refine_w, heat_a, heat_b)
    if grid:
        tiles = [x_a, x_b, o.x_warp, o.mask.expand(-1, 3, -1, -1) * 2 - 1, o.x_out]
        image = np.concatenate([to_uint8(t)[0] for t in tiles], axis=1)
    else:
        image = to_uint8(o.x_out)[0]
    save_png(out, image)
    return {"out": str(out), "attribute": meta.get("attribute"), "resolution": size}


def _heatmaps(paths: list[Path], size: int) -> list:
    """Landmark heatmaps of each image, from dlib's 68-point model (CPU, offline)."""
    import torch

    from geogan.data.dataset import to_model_landmarks
    from geogan.landmarks.base import LandmarkError
    from geogan.landmarks.dlib_backend import DlibBackend
    from geogan.nets.flow import landmark_heatmaps

    try:
        backend = DlibBackend()
    except LandmarkError as e:
        raise StageError(f"this model's flow takes landmark heatmaps: {e}") from e
    out = []
    detect_size = max(size, 256)  # dlib's HOG detector misses faces much below ~80 px
    for path in paths:
        lm = backend.detect(load_image(path, detect_size)[None])
        lm = (lm + 0.5) * (size / detect_size) - 0.5  # pixel centres, to the model's resolution
        if not np.isfinite(lm).all():
            raise StageError(f"{path}: no face found by dlib; this model needs the face's 68 landmarks")
        out.append(landmark_heatmaps(to_model_landmarks(torch.from_numpy(lm), size), size))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog_name(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--source", type=Path, required=True, help="face without the attribute")
    p.add_argument("--reference", type=Path, required=True, help="face with the attribute instance to transfer")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--grid", action="store_true", help="write source | reference | warped | mask | result")
    args = p.parse_args(argv)
    exit_with(run_main("transfer", lambda: run_transfer(args.model, args.source, args.reference, args.out, args.grid)))


if __name__ == "__main__":
    main()
