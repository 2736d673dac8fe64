"""Stage `split`: the unpaired A (without) / B (with) split of one attribute, as a small JSON index."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.data.population import select
from geogan.data.split import make_split, read_manifest
from geogan.io import atomic_write_json
from geogan.stages._common import exit_with, load, parser, run_main


def run(cfg: Config, attribute: str, prepared: Path = Path("data/prepared"), landmarks: Path = Path("data/landmarks"),
        out: Path | None = None) -> dict:
    """Write data/splits/<attribute>.json; images without landmarks are excluded and counted."""
    out = Path(out or f"data/splits/{attribute}.json")
    manifest = read_manifest(Path(prepared) / "manifest.csv")
    lm_file = Path(landmarks) / "landmarks.npy"
    if not lm_file.is_file():
        raise FileNotFoundError(f"{lm_file}: not found (run the landmarks stage first)")
    lm = np.load(lm_file, mmap_mode="r")
    if lm.shape[0] != len(manifest):
        raise ValueError(f"{lm_file}: {lm.shape[0]} rows, but the manifest has {len(manifest)}")
    valid = ~np.isnan(np.asarray(lm)).any(axis=(1, 2))
    s = cfg.split
    population = select(s.populations.get(attribute, ""), manifest.labels, len(manifest))
    split = make_split(manifest, attribute, valid, seed=cfg.seed, test_fraction=s.test_fraction,
                       max_per_domain=s.max_per_domain, use_source_partition=s.use_source_partition,
                       val_fraction=s.val_fraction, population=population, match=s.match.get(attribute, ()))
    for part in ("train", "test"):
        for domain in ("A", "B"):
            if not split[part][domain] and part == "test":
                print(f"warning: split '{attribute}': test partition has no {domain} images; evaluation will be skipped")
    atomic_write_json(out, split)
    return {"out": str(out), **split["counts"]}


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--landmarks", type=Path, default=Path("data/landmarks"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    exit_with(run_main("split", lambda: run(load(args), args.attribute, args.prepared, args.landmarks, args.out)))


if __name__ == "__main__":
    main()
