"""Stage `params`: write a variant params file resolved against its base, every key, e.g. as params.yaml for DVC.

    python -m geogan.stages.params --params params/celeba-128.yaml --out params.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from geogan.config import resolve_params
from geogan.io import atomic_write_text
from geogan.stages._common import exit_with, parser, run_main


def run(params: Path, out: Path) -> dict:
    """Resolve `params` (its `extends` chain, checked as every stage checks it) and write it to `out`."""
    resolved = resolve_params(params)
    header = f"# {params} resolved against its base: every key (python -m geogan.stages.params).\n"
    atomic_write_text(Path(out), header + yaml.safe_dump(resolved, sort_keys=False))
    return {"params": str(params), "out": str(out), "keys": sum(len(v) if isinstance(v, dict) else 1
                                                                  for v in resolved.values())}


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="the complete params file to write")
    args = p.parse_args(argv)
    exit_with(run_main("params", lambda: run(args.params, args.out)))


if __name__ == "__main__":
    main()
