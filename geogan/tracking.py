"""MLflow at the edge: the trainer and evaluator talk to a `Tracker`; only this module imports mlflow.

The default store is a local SQLite file and artifact folder in the repo, so runs and the registry work with
no server; MLFLOW_TRACKING_URI overrides it. One experiment per attribute (`<prefix>-<Attribute>`, created by
`ensure_experiment`, marked as model training) keeps an attribute's runs side by side; every run is tagged
with its attribute for cross-attribute views.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np


SERVER_CHECK_TIMEOUT = 5.0  # seconds; MLflow's own client retries a dead server for about 4 minutes
# MLflow 3 tells GenAI experiments (traces, judges) from model training ones by this experiment tag.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"  # the run's (and experiment's) description in the UI, in Markdown
LOCAL_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local store
SYSTEM_METRICS_INTERVAL = 10.0  # seconds between system metric samples (MLflow's default)
ORCHESTRATOR_TAGS = {"GEOGAN_KFP_RUN_ID": "kfp.run_id", "GEOGAN_KFP_RUN_URL": "kfp.run_url"}  # env -> run tag


class TrackingServerError(RuntimeError):
    """The tracking server does not answer, or refuses the credentials."""


class Tracker(Protocol):
    """What the library needs from an experiment tracker."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class NullTracker:
    """Logs nothing: non-main ranks, tests, and machines without MLflow."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
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


def check_tracking_server(uri: str, timeout: float = SERVER_CHECK_TIMEOUT) -> None:
    """Fail fast, naming the URI and the cause, when an http(s) tracking server does not answer.

    One GET of /health (open to all), then one authenticated API call, so that wrong
    credentials also stop a stage before any work. Other stores (sqlite, file) are local.
    Raises:
        TrackingServerError: no answer (refused, timed out, unknown host) or HTTP 401/403.
    """
    if not uri.startswith(("http://", "https://")):
        return
    base, where = uri.rstrip("/"), f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI)"
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        answer = probe(base + path, timeout, _auth_headers())
        if isinstance(answer, str):
            raise TrackingServerError(f"{where} does not answer: {answer} (after {timeout:g} s at most)")
        if answer in (401, 403):  # it answered; only a refusal of the credentials stops here
            raise TrackingServerError(f"{where} refused the credentials: HTTP {answer} "
                                      "(set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")


def probe(url: str, timeout: float = SERVER_CHECK_TIMEOUT, headers: Mapping[str, str] | None = None) -> int | str:
    """GET `url` once: the HTTP status it answers with, or why nothing answered (refused, timed out, ...)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_tls_context(url)) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _tls_context(uri: str) -> ssl.SSLContext | None:
    # The same TLS settings the MLflow client honours.
    if not uri.startswith("https://"):
        return None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323 - the user asked for it, as for MLflow itself
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def mlflow_installed() -> bool:
    """Whether MLflow can be imported (the library trains and evaluates without it)."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def checked_tracking_uri(configured: str, root: Path | None = None) -> str:
    """`tracking_uri`, after `check_tracking_server` found the server answering."""
    uri = tracking_uri(configured, root)
    check_tracking_server(uri)
    return uri


@contextlib.contextmanager
def run_ends(tracker: Any) -> Iterator[Any]:
    """End the tracker's run FINISHED, FAILED (an error) or KILLED (SIGTERM, Ctrl-C), whatever happens.

    A tracker that only borrows a run (evaluate logging into the training run) leaves its status alone.
    """
    from geogan.signals import Stopped

    if not getattr(tracker, "owns_run", False):
        yield tracker
        return
    try:
        yield tracker
    except (Stopped, KeyboardInterrupt):
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")


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
    """Where a new experiment keeps artifacts when the tracking store is local (None: the server decides).

    With MLFLOW_TRACKING_URI naming a SQLite file, artifacts go beside that file (MLflow's own
    default, ./mlruns in whatever folder the process runs in, would litter the working directory).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return artifacts_beside(tracking_uri(uri, root), experiment)
    path = ((root or Path.cwd()) / configured_root / experiment).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def artifacts_beside(uri: str, experiment: str) -> str | None:
    """<database folder>/artifacts/<experiment> for a SQLite store; None for a server or other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = (Path(uri[len(prefix):]).parent / "artifacts" / experiment).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def experiment_name(prefix: str, attribute: str) -> str:
    return f"{prefix}-{attribute}"


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, created if missing; either way marked as model training.

    MLflow 3's UI opens an experiment without the kind tag in GenAI mode (traces, token usage);
    an experiment that already has a kind (a user's choice) keeps it.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    if EXPERIMENT_KIND_TAG not in exp.tags:  # a store written before the tag
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def context_tags(entry_point: str, description: str | None = None) -> dict[str, str]:
    """What MLflow's fluent `start_run` would set (user, source file, source git commit), plus the
    stage as the entry point, the run's description (Markdown, shown on the run page) and the
    KFP run that made it (`ORCHESTRATOR_TAGS`, when set in the environment)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = resolve_tags()
    # The orchestrator's run that made this one (set by the KFP components: components.runtime.kfp_run_env).
    tags.update({tag: os.environ[env] for env, tag in ORCHESTRATOR_TAGS.items() if os.environ.get(env)})
    if entry_point:
        tags["mlflow.project.entryPoint"] = entry_point
    if description:
        tags[DESCRIPTION_TAG] = description
    return tags


def ui_base(uri: str) -> str:
    """The MLflow UI for a tracking URI: the server itself, or `make ui`'s address for a local store."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


def comparison_url(uri: str, experiment_ids: list[str]) -> str:
    """A link to the MLflow UI's chart view over these experiments' runs, in model training mode.

    Every metric has the same name in each attribute's experiment, so each chart sets the
    attributes side by side with no columns to choose; sections sort by name, `eval/` first.
    """
    import json
    import urllib.parse

    query = urllib.parse.urlencode({"experiments": json.dumps([str(i) for i in experiment_ids], separators=(",", ":")),
                                    "compareRunsMode": "CHART", "workflowType": "machine_learning"})
    return f"{ui_base(uri)}/#/compare-experiments/s?{query}"


class MlflowTracker:
    """A Tracker backed by one MLflow run; resumes the run whose id it is given."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None, run_id: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None, claim: bool = False,
                 context: Mapping[str, str] | None = None):
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        with sqlite_store_lock(uri):  # parallel runs on a fresh local store would race to create its tables
            self.client = mlflow.MlflowClient(uri)
            exp_id = ensure_experiment(self.client, experiment, artifact_root)
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id != exp_id:
                    run_id = None
            except Exception:  # noqa: BLE001 - a run id from another store: start a new run
                run_id = None
        # A run this tracker starts, or resumes with `claim` (training from a checkpoint), is its to end.
        self.owns_run = run_id is None or claim
        self.resumed = run_id is not None
        # The context (source, entry point, description) describes the run's owner, not a borrower.
        own_tags = {**dict(context or {}), **dict(tags or {})} if self.owns_run else dict(tags or {})
        if run_id is None:
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=own_tags).info.run_id
        else:
            if claim:  # a resumed training may run to another step count: its name says so
                self.client.update_run(run_id, status="RUNNING", name=run_name)
            for k, v in own_tags.items():
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

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """One step of the image series `key` (the UI's slider under it)."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def start_system_metrics(self, interval_s: float = SYSTEM_METRICS_INTERVAL) -> None:
        """Log CPU, memory, disk, network (and GPU, with nvidia-ml-py) as `system/*` until `finish`."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, resume_logging=self.resumed,
                                            tracking_uri=self.client.tracking_uri)
        self._system.collect_metrics()  # primes psutil's CPU counters, so the first figure is a real one
        self._system.start()

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        system = getattr(self, "_system", None)
        if system is not None:  # one last sample, so a run shorter than the interval has one too
            system.finish()
            system.collect_metrics()
            system.publish_metrics(system.aggregate_metrics())
            system.mlflow_logger.flush()
        self.client.set_terminated(self.run_id, status=status)


def _clean(name: str) -> str:
    # MLflow metric names allow / - . _ and alphanumerics.
    return "".join(c if c.isalnum() or c in "/-._ " else "_" for c in name)


def open_tracker(cfg_mlflow: Any, attribute: str, run_id: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, root: Path | None = None, claim: bool = False,
                 description: str | None = None) -> MlflowTracker:
    """An MlflowTracker for the attribute's experiment under the configured (or env) URI (see MlflowTracker).

    Its run carries MLflow's context tags (`context_tags`, the stage tag as entry point) and `description`.
    """
    experiment = experiment_name(cfg_mlflow.experiment_prefix, attribute)
    uri = tracking_uri(cfg_mlflow.tracking_uri, root)
    art = artifact_location(cfg_mlflow.artifact_root, experiment, root)
    context = context_tags(dict(tags or {}).get("stage", ""), description)
    all_tags = {"attribute": attribute, **dict(tags or {})}
    return MlflowTracker(uri, experiment, art, run_id=run_id, run_name=run_name, tags=all_tags, claim=claim,
                         context=context)


def log_evaluation_input(tracker: MlflowTracker, evalset_file: str | Path, evalset: Mapping[str, Any]) -> None:
    """Log an evaluation set as the run's input dataset (context "evaluation"), named and digested by its file."""
    rows = [{"source": s["image"], "source_identity": s["identity"], "reference": r["image"],
             "reference_identity": r["identity"]} for s in evalset["sources"] for r in evalset["references"]]
    log_dataset(tracker, rows, evalset_file, f"evalset-{evalset['attribute']}", evalset["digest"], "evaluation")


def log_dataset(tracker: MlflowTracker, rows: list[dict[str, Any]], source: str | Path, name: str, digest: str,
                context: str) -> None:
    """Log a table (one dict per row) as an input dataset of the tracker's run, with its own digest.

    Args:
        source: the file or folder it was read from. digest: the data version (first 16 hex digits kept).
        context: MLflow's dataset context tag ("training", "evaluation").
    """
    import mlflow
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(pd.DataFrame(rows), source=str(Path(source).resolve()), name=name,
                                      digest=digest[:16])
    tag = InputTag(key="mlflow.data.context", value=context)
    tracker.client.log_inputs(tracker.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[tag])])
