"""Stage `pack`: the training rows of some splits as WebP + landmarks + re-indexed splits, to carry to a GPU machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from geogan.data.packed import pack
from geogan.io import atomic_path
from geogan.stages._common import exit_with, run_main


def run(prepared: Path, landmarks: Path, splits: Sequence[Path], out: Path, quality: int = 90,
        partitions: Sequence[str] = ("train",)) -> dict:
    """Write the packed folder `out` atomically; returns the pack report."""
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be in [1, 100], got {quality}")
    with atomic_path(out) as tmp:
        report = pack(prepared, landmarks, splits, tmp, quality=quality, partitions=partitions)
    return {"out": str(out), **report}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--landmarks", type=Path, default=Path("data/landmarks"))
    p.add_argument("--splits", type=Path, nargs="+", required=True, help="split JSON files whose rows to keep")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quality", type=int, default=90, help="WebP quality (default 90: about 4 KB a 128 px face)")
    p.add_argument("--partitions", nargs="+", default=["train"], choices=["train", "val", "test"])
    args = p.parse_args(argv)
    exit_with(run_main("pack", lambda: run(args.prepared, args.landmarks, args.splits, args.out, args.quality,
                                           args.partitions)))


if __name__ == "__main__":
    main()
