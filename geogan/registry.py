"""The MLflow model registry: register a candidate, promote it on evidence, compare attributes.

Registered models are `geogan-<Attribute>`; registration moves alias `candidate`,
promotion moves alias `champion` (aliases, not the deprecated stages). Nothing here
deletes or overwrites a version: a new registration is a new version. Metrics are read
from the version's run, where `evaluate` logs them as `eval/<name>`. mlflow is imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

CANDIDATE = "candidate"
CHAMPION = "champion"
MODEL_NAME = "generator"  # the logged model's name inside its run


class PromotionRefused(RuntimeError):
    """The candidate failed the gate; `failures` lists the failing checks."""

    def __init__(self, message: str, failures: Sequence[dict[str, Any]] = ()):
        super().__init__(message)
        self.failures = list(failures)


def registered_name(attribute: str) -> str:
    """The registered model name of an attribute."""
    return f"geogan-{attribute}"


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextlib.contextmanager
def _using_tracking_uri(uri: str) -> Iterator[None]:
    # The fluent API (log_model, register_model) reads a process-wide URI, and setting it
    # also exports MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI: set both for the call only,
    # then restore the module state and the environment exactly as they were.
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    previous = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        registry_utils._registry_uri = previous[1]
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _example_images(size: int) -> tuple[Any, Any]:
    import numpy as np

    from geogan.serving import encode_image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    a = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), 128.0)], -1)
    return encode_image(a.astype(np.uint8)), encode_image(a[::-1].astype(np.uint8))


def _ensure_run(client: Any, run_id: str | None, attribute: str, experiment_prefix: str) -> str:
    """The given run if the store knows it, else a new run in the attribute's experiment."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except MlflowException:  # a run id from another store (e.g. trained elsewhere)
            pass
    name = f"{experiment_prefix}-{attribute}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    return client.create_run(exp_id, run_name=f"{attribute}-register", tags={"attribute": attribute}).info.run_id


def log_and_register(
    generator_file: str | Path,
    attribute: str,
    run_id: str | None,
    tracking_uri: str,
    tags: Mapping[str, Any],
    metrics: Mapping[str, float],
    experiment_prefix: str = "geogan",
) -> tuple[str, int]:
    """Log the generator as a pyfunc model under its run and register it as the candidate.

    Args:
        generator_file: the generator.pt written by the train stage.
        attribute: e.g. "Mustache"; the registered model is `geogan-<attribute>`.
        run_id: the training run (meta.json's mlflow_run_id); None or unknown to this store
            starts a run in experiment `<experiment_prefix>-<attribute>`.
        tracking_uri: the tracking (and registry) server or store.
        tags: version tags, e.g. data_version (md5 of the split file), git_commit.
        metrics: evaluation metrics; those the run lacks are logged to it as `eval/<name>`.
        experiment_prefix: for a run created here.
    Returns:
        (model URI `models:/geogan-<attribute>/<version>`, version number).
    """
    import mlflow
    import pandas as pd
    import torch
    from mlflow.entities import Metric

    from geogan.model import load_generator
    from geogan.serving import GENERATOR_ARTIFACT, GeoGANPyfunc, inference_refine_weight, model_signature

    generator_file = Path(generator_file)
    if not generator_file.is_file():
        raise FileNotFoundError(f"{generator_file}: generator file not found (run the train stage)")
    _, meta = load_generator(generator_file, map_location="cpu")
    client = _client(tracking_uri)
    run_id = _ensure_run(client, run_id, attribute, experiment_prefix)

    # Promotion reads the run, so the evaluated figures must be on it.
    have = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    new = [Metric(f"eval/{k}", float(v), now, 0) for k, v in metrics.items()
           if math.isfinite(float(v)) and have.get(f"eval/{k}") != float(v)]
    if new:
        client.log_batch(run_id, metrics=new)

    source, reference = _example_images(int(meta.get("resolution", 64)))
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pillow", "pandas",
                    f"mlflow=={mlflow.__version__}"]
    name = registered_name(attribute)
    with _using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=GeoGANPyfunc(),
            artifacts={GENERATOR_ARTIFACT: str(generator_file)},
            code_paths=[str(Path(__file__).resolve().parent)],  # the geogan package travels with the model
            signature=model_signature(inference_refine_weight(meta)),
            input_example=pd.DataFrame({"source": [source], "reference": [reference]}),
            pip_requirements=requirements,
        )
        version = mlflow.register_model(info.model_uri, name).version
    version_tags = {**{k: str(v) for k, v in tags.items()}, "attribute": attribute, "run_id": run_id,
                    "generator_sha256": _sha256(generator_file)}
    for k, v in version_tags.items():
        client.set_model_version_tag(name, str(version), k, v)
    client.set_registered_model_alias(name, CANDIDATE, str(version))
    return f"models:/{name}/{version}", int(version)


def _version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    """A run's latest metrics with `eval/` stripped (an unprefixed name loses to eval/)."""
    if not run_id:
        return {}
    raw = client.get_run(run_id).data.metrics
    out = {k: v for k, v in raw.items() if not k.startswith("eval/")}
    out.update({k[len("eval/"):]: v for k, v in raw.items() if k.startswith("eval/")})
    return out


def _gate_value(gate: Any, key: str) -> Any:
    return gate[key] if isinstance(gate, Mapping) else getattr(gate, key)


def gate_checks(
    candidate: Mapping[str, float], gate: Any, champion: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Each gate condition on the candidate's metrics, with its figures and verdict.

    Metrics are found by name whatever their sample count (`transfer_success` reads
    `transfer_success_1000`); the copy-paste baseline's are `copy_paste/<name>_<count>`.

    Args:
        candidate: metrics of the candidate's run (names as `evaluate` logs them, `eval/` stripped).
        gate: PromoteConfig or a mapping with min_transfer_success, max_kid_vs_copy_paste,
            min_identity_kept (0 = not gated), max_landmark_error, allow_worse_than_champion.
        champion: metrics of the current champion's run, if there is one.
    Returns:
        [{"check", "metric", "value", "op", "threshold", "passed"}], in a stable order.
    """
    from geogan.metrics.registry import find

    checks: list[dict[str, Any]] = []

    def value_of(metrics: Mapping[str, float], name: str) -> tuple[str, float | None]:
        hit = find(metrics, name)
        return (hit[0], hit[1]) if hit else (f"{name}_<n>", None)

    def add(check: str, metric: str, value: float | None, op: str, threshold: float | None) -> None:
        ok = (value is not None and threshold is not None and math.isfinite(value) and math.isfinite(threshold)
              and (value >= threshold if op == ">=" else value <= threshold))
        checks.append({"check": check, "metric": metric, "value": value, "op": op, "threshold": threshold, "passed": ok})

    add("promote.min_transfer_success", *value_of(candidate, "transfer_success"), ">=",
        float(_gate_value(gate, "min_transfer_success")))
    kid_key, kid = value_of(candidate, "kid_a2b")
    _, kid_copy_paste = value_of(candidate, "copy_paste/kid_a2b")
    ratio = float(_gate_value(gate, "max_kid_vs_copy_paste"))
    add("promote.max_kid_vs_copy_paste", kid_key, kid, "<=", None if kid_copy_paste is None else ratio * kid_copy_paste)
    min_kept = float(_gate_value(gate, "min_identity_kept"))
    if min_kept > 0:
        add("promote.min_identity_kept", *value_of(candidate, "identity_kept"), ">=", min_kept)
    add("promote.max_landmark_error", *value_of(candidate, "landmark_err"), "<=",
        float(_gate_value(gate, "max_landmark_error")))
    if champion and not _gate_value(gate, "allow_worse_than_champion"):
        _, champion_value = value_of(champion, "transfer_success")
        if champion_value is not None:
            add("not worse than champion", *value_of(candidate, "transfer_success"), ">=", champion_value)
    return checks


def _describe(c: dict[str, Any]) -> str:
    value = "missing" if c["value"] is None else f"{c['value']:.4g}"
    threshold = "a missing baseline" if c["threshold"] is None else f"{c['threshold']:.4g}"
    return f"{c['metric']} {value} (needs {c['op']} {threshold}, {c['check']})"


def promote(attribute: str, gate: Any, tracking_uri: str, client: Any = None) -> dict[str, Any]:
    """Move alias `champion` to the `candidate` version if its run's metrics pass the gate.

    Args:
        attribute: e.g. "Mustache" (registered model `geogan-Mustache`).
        gate: PromoteConfig or an equivalent mapping (see `gate_checks`).
        tracking_uri: the tracking/registry server or store.
        client: an MlflowClient to use instead of one for `tracking_uri`.
    Returns:
        {"model", "version", "previous_champion", "promoted", "checks", "metrics"}.
    Raises:
        PromotionRefused: no candidate, or a failing check (all failing figures in the message).
    """
    client = client or _client(tracking_uri)
    name = registered_name(attribute)
    candidate = _version_by_alias(client, name, CANDIDATE)
    if candidate is None:
        raise PromotionRefused(f"{name}: no version has alias '{CANDIDATE}' (run the register stage first)")
    champion = _version_by_alias(client, name, CHAMPION)
    metrics = _run_metrics(client, candidate.run_id)
    result = {"model": name, "version": int(candidate.version),
              "previous_champion": int(champion.version) if champion else None, "metrics": metrics}
    if champion is not None and champion.version == candidate.version:
        return {**result, "promoted": False, "checks": [], "reason": f"version {candidate.version} is already {CHAMPION}"}
    checks = gate_checks(metrics, gate, _run_metrics(client, champion.run_id) if champion else None)
    failures = [c for c in checks if not c["passed"]]
    if failures:
        raise PromotionRefused(
            f"{name} version {candidate.version} refused: " + "; ".join(_describe(c) for c in failures), failures
        )
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    client.set_model_version_tag(name, candidate.version, "promoted_from", str(champion.version) if champion else "none")
    return {**result, "promoted": True, "checks": checks}


def compare_runs(tracking_uri: str, experiment_prefix: str, attributes: Sequence[str]) -> list[dict[str, Any]]:
    """The latest evaluated run of each attribute's experiment, with its metrics and the aliases.

    Args:
        tracking_uri: the tracking/registry server or store.
        experiment_prefix: experiments are `<prefix>-<Attribute>`.
        attributes: attributes to list (one row each, even without runs).
    Returns:
        Rows {"attribute", "run_id", "run_name", "status", "started", "metrics", "tags", "champion", "candidate"}.
    """
    client = _client(tracking_uri)
    rows = []
    for attribute in attributes:
        row: dict[str, Any] = {"attribute": attribute, "metrics": {}, "tags": {}}
        exp = client.get_experiment_by_name(f"{experiment_prefix}-{attribute}")
        runs = (client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=50)
                if exp else [])
        # The newest run that was evaluated; an unevaluated (e.g. crashed) newer run is skipped.
        run = next((r for r in runs if any(k.startswith("eval/") for k in r.data.metrics)), runs[0] if runs else None)
        if run is not None:
            row.update(run_id=run.info.run_id, run_name=run.info.run_name, status=run.info.status,
                       started=time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000)),
                       metrics=_run_metrics(client, run.info.run_id), tags=dict(run.data.tags))
        for alias in (CHAMPION, CANDIDATE):
            version = _version_by_alias(client, registered_name(attribute), alias)
            row[alias] = int(version.version) if version else None
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per attribute: its run and aliases, then each metric with its interval, the model beside the baselines."""
    from geogan.metrics.report import by_method, comparison_table

    blocks = []
    for r in rows:
        head = (f"{r['attribute']}: run {str(r.get('run_id') or '-')[:8]} ({r.get('status', 'no runs')}, "
                f"{r.get('started', '-')}), {CHAMPION} {r.get(CHAMPION) or '-'}, {CANDIDATE} {r.get(CANDIDATE) or '-'}")
        digest = r.get("tags", {}).get("eval.set_digest")
        if digest:
            head += f", evaluation set {digest[:12]}, judge {r['tags'].get('eval.judge_sha256', '?')[:12]}"
        methods = by_method(r.get("metrics", {}))
        blocks.append(head + ("\n" + comparison_table(methods) if methods else "\n(no evaluation yet)"))
    return "\n\n".join(blocks)
