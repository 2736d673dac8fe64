"""Stage `register`: log the generator as an MLflow pyfunc model and register `geogan-<attr>` @ candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from geogan.config import Config
from geogan.data.split import split_fingerprint
from geogan.io import atomic_write_json, read_json
from geogan.stages._common import exit_with, load, parser, run_main
from geogan.stages.train import git_commit
from geogan.tracking import tracking_uri


def run(cfg: Config, attribute: str, model: Path | None = None, metrics: Path | None = None, split: Path | None = None,
        out: Path | None = None) -> dict:
    """Register the model; write registry/<attr>.json with the model URI and version."""
    from geogan.metrics.registry import tracking_metrics
    from geogan.registry import log_and_register

    model = Path(model or f"models/{attribute}")
    metrics = Path(metrics or f"metrics/{attribute}.json")
    split = Path(split or f"data/splits/{attribute}.json")
    out = Path(out or f"registry/{attribute}.json")
    meta = read_json(model / "meta.json")
    values = read_json(metrics)
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    tags = {"data_version": split_fingerprint(split), "git_commit": git_commit(), "attribute": attribute,
            "train_steps": str(meta.get("step"))}
    model_uri, version = log_and_register(model / "generator.pt", attribute, meta.get("mlflow_run_id"), uri, tags,
                                          tracking_metrics(values))
    record = {"attribute": attribute, "model_uri": model_uri, "registered_model": f"geogan-{attribute}",
              "version": str(version), "alias": "candidate", **tags}
    atomic_write_json(out, record)
    return record


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--metrics", type=Path, default=None)
    p.add_argument("--split", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    exit_with(run_main("register", lambda: run(load(args), args.attribute, args.model, args.metrics, args.split, args.out)))


if __name__ == "__main__":
    main()
