"""Stage `evalset`: the fixed evaluation set of one attribute (test sources x references, other people), with its digest."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.data.evalset import draw_evalset, write_evalset
from geogan.data.split import read_manifest, row_partitions
from geogan.stages._common import exit_with, load, parser, run_main


def run(cfg: Config, attribute: str, prepared: Path = Path("data/prepared"), landmarks: Path = Path("data/landmarks"),
        out: Path | None = None) -> dict:
    """Write data/evalsets/<attribute>.json; returns its counts and digest."""
    out = Path(out or f"data/evalsets/{attribute}.json")
    manifest = read_manifest(Path(prepared) / "manifest.csv")
    lm_file = Path(landmarks) / "landmarks.npy"
    if not lm_file.is_file():
        raise FileNotFoundError(f"{lm_file}: not found (run the landmarks stage first)")
    lm = np.load(lm_file, mmap_mode="r")
    if lm.shape[0] != len(manifest):
        raise ValueError(f"{lm_file}: {lm.shape[0]} rows, but the manifest has {len(manifest)}")
    s, e = cfg.split, cfg.evaluate
    partitions = row_partitions(manifest, cfg.seed, s.test_fraction, s.val_fraction, s.use_source_partition)
    evalset = draw_evalset(manifest, partitions, np.isfinite(np.asarray(lm)).all(axis=(1, 2)), attribute,
                           e.populations.get(attribute, ""), e.sources, e.references, cfg.seed)
    write_evalset(out, evalset)
    people = {f["identity"] or f["image"] for f in evalset["sources"]}
    return {"out": str(out), "sources": len(evalset["sources"]), "references": len(evalset["references"]),
            "pairs": evalset["num_pairs"], "source_people": len(people), "digest": evalset["digest"][:16]}


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--landmarks", type=Path, default=Path("data/landmarks"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    exit_with(run_main("evalset", lambda: run(load(args), args.attribute, args.prepared, args.landmarks, args.out)))


if __name__ == "__main__":
    main()
