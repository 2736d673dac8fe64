"""`geogan compare`: the champion and candidate of each attribute, each metric with its interval, the baselines beside."""

from __future__ import annotations

from typing import Sequence

from geogan.config import Config
from geogan.stages._common import exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri


def run(cfg: Config) -> None:
    from geogan.registry import compare_versions, format_table

    uri = checked_tracking_uri(cfg.mlflow.tracking_uri)
    rows = compare_versions(uri, list(cfg.attributes))
    print(format_table(rows))
    link = ui_comparison_link(cfg, uri)
    if link:
        print(f"\nAll attributes' runs side by side in the MLflow UI (`make ui` serves a local store):\n  {link}")


def ui_comparison_link(cfg: Config, uri: str) -> str | None:
    """The MLflow UI's chart view over every attribute's experiment that exists (None: none does)."""
    import mlflow

    from geogan.tracking import comparison_url, experiment_name

    client = mlflow.MlflowClient(uri)
    found = [client.get_experiment_by_name(experiment_name(cfg.mlflow.experiment_prefix, a)) for a in cfg.attributes]
    ids = [e.experiment_id for e in found if e is not None]
    return comparison_url(uri, ids) if ids else None


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    exit_with(run_main("compare", lambda: run(load(args))))


if __name__ == "__main__":
    main()
