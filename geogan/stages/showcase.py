"""Stage `showcase`: a sources x references figure of held-out test faces, for people to judge.

    geogan showcase --params params.yaml --attribute Eyeglasses --model models/Eyeglasses --out docs/eyeglasses.jpg

`--sources` test faces without the attribute meet `--references` test faces with it (training references
fill up when the test split has too few). `--model`: a folder, a generator.pt or a registered model
(models:/geogan-Eyeglasses@candidate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.stages._common import StageError, add_data_paths, exit_with, load, parser, run_main
from geogan.training.distributed import resolve_device


def run(cfg: Config, attribute: str, prepared: Path, landmarks: Path, split: Path, model: Path | str, out: Path,
        n_sources: int = 6, n_references: int = 4, cell: int = 128) -> dict:
    """Transfer every reference onto every source and draw the figure; returns what was drawn.

    Faces are drawn deterministically by params' seed. The figure: the references and their removals
    F(b) on top, then per source the row [a, a* with each reference] with the warped references b' and
    masks m beneath.
    """
    from geogan import evaluation as ev
    from geogan.data.dataset import load_prepared
    from geogan.io import read_json
    from geogan.model import inference_refine_weight, load_generator
    from geogan.stages.transfer import resolve_generator_file
    from geogan.visualize import cross_grid_rows, image_grid, save_image

    data = load_prepared(prepared, landmarks)
    split_dict = read_json(split)
    test, train = split_dict["test"], split_dict["train"]
    if len(test["A"]) < n_sources or len(test["B"]) + len(train["B"]) < n_references:
        raise StageError(f"{split}: {len(test['A'])} test sources and {len(test['B'])} + {len(train['B'])} references; "
                         f"asked for {n_sources} x {n_references}")
    rng = np.random.default_rng([cfg.seed, 11])
    sources = sorted(rng.choice(test["A"], n_sources, replace=False).tolist())
    # Held-out references first; a small split (14 real mustaches) may need training references to fill the row.
    held_out = sorted(rng.choice(test["B"], min(n_references, len(test["B"])), replace=False).tolist())
    from_train = sorted(rng.choice(train["B"], n_references - len(held_out), replace=False).tolist())
    references = held_out + from_train
    if from_train:
        print(f"showcase: only {len(held_out)} held-out references; the last {len(from_train)} columns are training references")
    generator, meta = load_generator(resolve_generator_file(str(model)))
    device = resolve_device(cfg.evaluate.device)
    src_rows, ref_rows = ev.cross_pairs(sources, references)
    t = ev.run_pairs(ev.generator_method(generator.to(device), inference_refine_weight(meta)), data.images,
                     data.landmarks, src_rows, ref_rows, cfg.evaluate.batch_size, device)
    image = image_grid(cross_grid_rows(t, n_sources, n_references, cell), max_columns=n_references + 1, label_width=96)
    save_image(out, image)
    return {"out": str(out), "sources": sources, "references": references, "references_from_train": from_train,
            "size_px": list(image.shape[:2])}


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    add_data_paths(p, model=True)
    p.add_argument("--out", type=Path, required=True, help=".jpg or .png")
    p.add_argument("--sources", type=int, default=6)
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--cell", type=int, default=128, help="pixels per image in the figure")
    args = p.parse_args(argv)
    split = args.split or Path(f"data/splits/{args.attribute}.json")
    model = args.model or Path(f"models/{args.attribute}")
    exit_with(run_main("showcase", lambda: run(load(args), args.attribute, args.prepared, args.landmarks, split, model,
                                               args.out, args.sources, args.references, args.cell)))


if __name__ == "__main__":
    main()
