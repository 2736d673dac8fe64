"""`geogan compare`: the champion and candidate of each attribute, each metric with its interval, the baselines beside."""

from __future__ import annotations

from typing import Sequence

from geogan.config import Config
from geogan.stages._common import exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri


def run(cfg: Config) -> None:
    from geogan.registry import compare_versions, format_table

    rows = compare_versions(checked_tracking_uri(cfg.mlflow.tracking_uri), list(cfg.attributes))
    print(format_table(rows))


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    exit_with(run_main("compare", lambda: run(load(args))))


if __name__ == "__main__":
    main()
