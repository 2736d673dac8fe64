"""`geogan compare`: a table of the latest run per attribute with its key metrics."""

from __future__ import annotations

from typing import Sequence

from geogan.config import Config
from geogan.stages._common import exit_with, load, parser, run_main
from geogan.tracking import tracking_uri


def run(cfg: Config) -> None:
    from geogan.registry import compare_runs, format_table

    rows = compare_runs(tracking_uri(cfg.mlflow.tracking_uri), cfg.mlflow.experiment_prefix, list(cfg.attributes))
    print(format_table(rows))


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    exit_with(run_main("compare", lambda: run(load(args))))


if __name__ == "__main__":
    main()
