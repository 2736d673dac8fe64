"""`geogan remove`: remove the attribute from a face that has it (the removal module F)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from geogan.stages._common import exit_with, prog_name, run_main
from geogan.stages.transfer import load_image, resolve_generator_file


def run_remove(model: str, image: Path, out: Path) -> dict:
    import torch

    from geogan.model import load_generator, remove, to_tensor, to_uint8
    from geogan.visualize import save_png

    generator, meta = load_generator(resolve_generator_file(model))
    size = int(meta["resolution"])
    x = to_tensor(load_image(image, size, min_side=max(1, size // 4)))
    with torch.no_grad():
        y = remove(generator, x)
    save_png(out, to_uint8(y)[0])
    return {"out": str(out), "attribute": meta.get("attribute")}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog_name(), description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    exit_with(run_main("remove", lambda: run_remove(args.model, args.image, args.out)))


if __name__ == "__main__":
    main()
