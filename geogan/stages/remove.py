"""`geogan remove`: remove the attribute from a face that has it (the removal module F)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from geogan.data.faces import ALIGN_MODES, FaceError, FacePreparer, heatmaps
from geogan.stages._common import StageError, exit_with, prog_name, run_main
from geogan.stages.transfer import load_model


def run_remove(model: str, image: Path, out: Path, align: str = "auto") -> dict:
    """F(image), with the face framed as the training images were (`geogan.data.faces`, as `geogan transfer`)."""
    import torch

    from geogan.model import remove, to_tensor, to_uint8
    from geogan.visualize import save_png

    loaded = load_model(model)
    try:
        face = FacePreparer(loaded.size, align, landmarks=loaded.needs_landmarks).from_file(image)
    except FaceError as e:
        raise StageError(str(e)) from None
    heat = heatmaps([face], loaded.size).to(loaded.device) if loaded.needs_landmarks else None
    with torch.no_grad():
        y = remove(loaded.generator, to_tensor(face.image).to(loaded.device), heat_b=heat)
    save_png(out, to_uint8(y)[0])
    return {"out": str(out), "attribute": loaded.meta.get("attribute"), "crop": face.kind}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog_name(), description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--align", choices=ALIGN_MODES, default="auto",
                   help="how to frame the face: auto (dlib for photos that are not CelebA-style crops), dlib, none")
    args = p.parse_args(argv)
    exit_with(run_main("remove", lambda: run_remove(args.model, args.image, args.out, args.align)))


if __name__ == "__main__":
    main()
