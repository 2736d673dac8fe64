"""MLflow at the edge: the trainer and evaluator talk to a `Tracker`; only this module imports mlflow.

The default store is a local SQLite file and artifact folder inside the repo, so runs and
the model registry work with no server; MLFLOW_TRACKING_URI overrides it (a team server).
One experiment per attribute (`<prefix>-<Attribute>`), so runs of one attribute compare
side by side in the UI, and every run is tagged with its attribute for cross-attribute views.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np


class Tracker(Protocol):
    """What the library needs from an experiment tracker."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...


class NullTracker:
    """Logs nothing: non-main ranks, tests, and machines without MLflow."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, image: np.ndarray, name: str) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass


def tracking_uri(configured: str, root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the configured URI (relative sqlite paths made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        db = (root or Path.cwd()) / uri[len(prefix):]
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(db.resolve())
    return uri


@contextlib.contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive file lock beside a local SQLite store (no-op for other stores).

    MLflow creates and migrates the store's tables on first use; two processes doing that at
    once fail with "duplicate column". Experiment creation races the same way.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    import fcntl

    lock_file = Path(uri[len(prefix):] + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_location(configured_root: str, experiment: str, root: Path | None = None) -> str | None:
    """Where a new experiment keeps artifacts when the tracking store is local (None: server decides)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    path = ((root or Path.cwd()) / configured_root / experiment).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def experiment_name(prefix: str, attribute: str) -> str:
    return f"{prefix}-{attribute}"


class MlflowTracker:
    """A Tracker backed by one MLflow run; resumes the run whose id it is given."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None, run_id: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None):
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        with sqlite_store_lock(uri):  # parallel runs on a fresh local store would race to create its tables
            self.client = mlflow.MlflowClient(uri)
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location=artifact_root)
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id != exp_id:
                    run_id = None
            except Exception:  # noqa: BLE001 - a run id from another store: start a new run
                run_id = None
        if run_id is None:
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        elif tags:
            for k, v in tags.items():
                self.client.set_tag(run_id, k, v)
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_clean(k), float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_image(self, image: np.ndarray, name: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _clean(name: str) -> str:
    # MLflow metric names allow / - . _ and alphanumerics.
    return "".join(c if c.isalnum() or c in "/-._ " else "_" for c in name)


def open_tracker(cfg_mlflow: Any, attribute: str, run_id: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, root: Path | None = None) -> MlflowTracker:
    """An MlflowTracker for the attribute's experiment under the configured (or env) URI."""
    experiment = experiment_name(cfg_mlflow.experiment_prefix, attribute)
    uri = tracking_uri(cfg_mlflow.tracking_uri, root)
    art = artifact_location(cfg_mlflow.artifact_root, experiment, root)
    all_tags = {"attribute": attribute, **dict(tags or {})}
    return MlflowTracker(uri, experiment, art, run_id=run_id, run_name=run_name, tags=all_tags)


def log_evaluation_input(tracker: MlflowTracker, evalset_file: str | Path, evalset: Mapping[str, Any]) -> None:
    """Log an evaluation set as the run's input dataset (context "evaluation"), named and digested by its file."""
    import mlflow
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    rows = [{"source": s["image"], "source_identity": s["identity"], "reference": r["image"],
             "reference_identity": r["identity"]} for s in evalset["sources"] for r in evalset["references"]]
    dataset = mlflow.data.from_pandas(pd.DataFrame(rows), source=str(Path(evalset_file).resolve()),
                                      name=f"evalset-{evalset['attribute']}", digest=evalset["digest"][:16])
    tag = InputTag(key="mlflow.data.context", value="evaluation")
    tracker.client.log_inputs(tracker.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[tag])])
