"""Stage `landmarks`: 68-point landmarks for every prepared image (backend from params.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from geogan.config import Config
from geogan.stages._common import exit_with, load, parser, run_main


def run(cfg: Config, prepared: Path = Path("data/prepared"), out: Path = Path("data/landmarks"), progress: bool = True) -> dict:
    """Write out/landmarks.npy (N, 68, 2) and out/report.json atomically."""
    from geogan.landmarks import extract_landmarks

    return extract_landmarks(cfg.landmarks, Path(prepared), Path(out), progress=progress)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, default=Path("data/landmarks"))
    args = p.parse_args(argv)
    exit_with(run_main("landmarks", lambda: {k: v for k, v in run(load(args), args.prepared, args.out).items()
                                             if not isinstance(v, (list, dict))}))


if __name__ == "__main__":
    main()
