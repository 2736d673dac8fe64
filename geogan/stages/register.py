"""Stage `register`: log the generator as an MLflow pyfunc model and register `geogan-<attr>` @ candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from geogan.config import Config
from geogan.data.split import split_fingerprint
from geogan.io import atomic_write_json, file_sha256, read_json
from geogan.stages._common import StageError, exit_with, load, parser, run_main
from geogan.stages.train import git_commit
from geogan.tracking import checked_tracking_uri


def run(cfg: Config, attribute: str, model: Path | None = None, metrics: Path | None = None, split: Path | None = None,
        out: Path | None = None) -> dict:
    """Register the model (or find its weights already registered); write registry/<attr>.json with the URI and version."""
    from geogan.metrics.registry import tracking_metrics
    from geogan.registry import log_and_register

    model = Path(model or f"models/{attribute}")
    metrics = Path(metrics or f"metrics/{attribute}.json")
    split = Path(split or f"data/splits/{attribute}.json")
    out = Path(out or f"registry/{attribute}.json")
    uri = checked_tracking_uri(cfg.mlflow.tracking_uri)
    meta = read_json(model / "meta.json")
    values = read_json(metrics)
    sha = file_sha256(model / "generator.pt")
    evaluated = values.get("generator_sha256")
    if evaluated != sha:  # figures of other weights (or of the baselines alone) must never gate these
        what = f"the generator {str(evaluated)[:12]}" if evaluated else "no generator"
        raise StageError(f"{metrics} evaluates {what}, not {model / 'generator.pt'} ({sha[:12]}): "
                         "run the evaluate stage again")
    tags = {"data_version": split_fingerprint(split), "git_commit": git_commit(), "attribute": attribute,
            "train_steps": str(meta.get("step"))}
    model_uri, version = log_and_register(model / "generator.pt", attribute, meta.get("mlflow_run_id"), uri, tags,
                                          tracking_metrics(values), evaluated_on=_evaluated_on(values))
    record = {"attribute": attribute, "model_uri": model_uri, "registered_model": f"geogan-{attribute}",
              "version": str(version), "alias": "candidate", "generator_sha256": sha, **tags}
    atomic_write_json(out, record)
    return record


def _evaluated_on(report: dict) -> dict[str, str]:
    """The evaluation set's digest and the judge's sha256 of an evaluation report, as version tags."""
    from geogan.registry import EVAL_SET_TAG, JUDGE_TAG

    found = {EVAL_SET_TAG: report.get("eval_set", {}).get("digest"), JUDGE_TAG: report.get("judge", {}).get("sha256")}
    return {k: v for k, v in found.items() if v}


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
