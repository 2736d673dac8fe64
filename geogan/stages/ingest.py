"""Stage `ingest`: prepare the dataset (synthetic faces by default) as images.npy + manifest.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from geogan.config import Config
from geogan.stages._common import exit_with, load, parser, run_main


def run(cfg: Config, out: Path = Path("data/prepared"), progress: bool = True) -> dict:
    """Write the prepared dataset folder atomically; returns the ingestion report."""
    from geogan.data.ingest import ingest

    return ingest(cfg.data, cfg.attributes, Path(out), seed=cfg.seed, progress=progress)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = p.parse_args(argv)
    exit_with(run_main("ingest", lambda: _summary(run(load(args), args.out))))


def _summary(report: dict) -> dict:
    return {k: v for k, v in report.items() if not isinstance(v, (list, dict))}


if __name__ == "__main__":
    main()
