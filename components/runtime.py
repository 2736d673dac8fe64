"""What the KFP components run in their pods: params to a file, one stage call, artefact metadata and visuals.

The component bodies (components/stages.py) are serialised into the pipeline YAML, so they
stay a few lines and call `run_stage` here; this module is installed in the image and tested
like the library. kfp is not imported: artefacts are duck-typed (`.path`, `.metadata`).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from geogan.config import Config, ConfigError, config_to_dict, load_config
from geogan.io import atomic_write_text

# Environment variables that tie an MLflow run to the KFP run that made it (set on every step).
KFP_RUN_ID_ENV, KFP_RUN_URL_ENV = "GEOGAN_KFP_RUN_ID", "GEOGAN_KFP_RUN_URL"


def write_params(params_yaml: str, folder: str | Path) -> tuple[Path, Config]:
    """Write the `params_yaml` pipeline parameter to folder/params.yaml and validate it.

    Returns:
        The file's path and the loaded `Config`.
    Raises:
        ConfigError: naming the pipeline parameter and the bad key.
    """
    path = Path(folder) / "params.yaml"
    atomic_write_text(path, params_yaml)
    try:
        return path, load_config(path)
    except ConfigError as e:
        raise ConfigError(f"pipeline parameter params_yaml: {e}") from e


def run_stage(stage: str, params_yaml: str, *args: Any, metadata_to: Any = None, kfp_run_id: str = "",
              gpus: int = 0, **paths: Any) -> dict[str, Any]:
    """The body every component shares: params to a temp file, `geogan.stages.<stage>.run(cfg, *args, **paths)`.

    Args:
        stage: the stage module's name (`ingest`, `evaluate`, ...).
        params_yaml: the whole params.yaml content.
        args: positional arguments after the config (the attribute).
        metadata_to: an output artefact whose metadata gets the stage's summary (KFP UI, lineage).
        kfp_run_id: the KFP run, tagged on the MLflow runs the stage writes (`kfp_run_env`).
        gpus: the GPUs the step asked for (`expect_gpus` says when the pod sees fewer).
        paths: keyword paths; KFP artefacts are passed as themselves and become their `.path`.
    Returns:
        The stage's summary (JSON-safe).
    """
    if kfp_run_id:
        kfp_run_env(kfp_run_id)
    expect_gpus(gpus)
    module = importlib.import_module(f"geogan.stages.{stage}")
    kwargs = {k: Path(v.path) if hasattr(v, "path") else v for k, v in paths.items()}
    if "progress" in inspect.signature(module.run).parameters:
        kwargs["progress"] = False  # pod logs are not a terminal
    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = jsonable(module.run(cfg, *args, **kwargs) or {})
    if metadata_to is not None:
        metadata_to.metadata.update(summary)
    return summary


def train_in_pod(params_yaml: str, attribute: str, prepared: Any, landmarks: Any, split: Any, generator: Any,
                 work_root: str, kfp_run_id: str = "", gpus: int = 0) -> dict[str, Any]:
    """The single-pod train step: the stage in this process, or under torchrun when the pod has several GPUs."""
    import subprocess

    if kfp_run_id:
        kfp_run_env(kfp_run_id)  # torchrun's ranks inherit it
    expect_gpus(gpus)

    with tempfile.TemporaryDirectory() as tmp:
        params, cfg = write_params(params_yaml, tmp)
        paths = dict(prepared=Path(prepared.path), landmarks=Path(landmarks.path), split=Path(split.path),
                     out=Path(generator.path), work=work_dir(work_root, attribute, cfg))
        gpus = gpu_count()
        if gpus > 1:
            subprocess.run(torchrun_command(train_args(params, attribute, **paths), nproc_per_node=gpus), check=True)
            summary: dict[str, Any] = {"attribute": attribute, "nproc_per_node": gpus}
        else:
            from geogan.stages import train

            summary = train.run(cfg, attribute, progress=False, **paths)
    generator.metadata.update({**jsonable(summary), **model_metadata(generator.path)})
    return summary


def publish_evaluation(attribute: str, metrics: Any, plots: Any, table: Any, grids: Any, model: Any) -> None:
    """The evaluation in the KFP UI: each number on the Metrics artefact, a Markdown table, the grids as HTML."""
    values = json.loads(Path(metrics.path).read_text(encoding="utf-8"))
    log_metrics_file(metrics, metrics.path)
    run_id = model_metadata(model.path).get("mlflow_run_id")
    Path(table.path).write_text(metrics_markdown(values, attribute, mlflow_run_url(run_id)), encoding="utf-8")
    Path(grids.path).write_text(grids_html(plots.path, f"{attribute}: evaluation grids"), encoding="utf-8")


def mlflow_run_url(run_id: str | None) -> str | None:
    """The MLflow UI page of a run on the tracking server of MLFLOW_TRACKING_URI (None for a local store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not run_id or not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/runs/{run_id}"


def scalar_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten a (nested) metrics dict to dotted key -> float, keeping finite numbers only.

    KFP's Metrics artefact takes one float per name; strings, lists and NaN are left out
    (they stay in the JSON file the artefact points at).
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalar_metrics(value, prefix=f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def log_metrics_file(metrics_artifact: Any, path: str | Path) -> dict[str, float]:
    """Log every finite number of the JSON file at `path` onto a KFP `Metrics` artefact."""
    values = scalar_metrics(json.loads(Path(path).read_text(encoding="utf-8")))
    for name, value in sorted(values.items()):
        metrics_artifact.log_metric(name, value)
    return values


def metrics_markdown(metrics: Mapping[str, Any], attribute: str, mlflow_url: str | None = None) -> str:
    """The evaluation as a Markdown table for the KFP UI: each method's metrics side by side."""
    methods = [m for m in ("model", "copy_paste", "do_nothing") if isinstance(metrics.get(m), Mapping)]
    names = sorted({k for m in methods for k, v in scalar_metrics(metrics[m]).items()})
    lines = [f"# {attribute}: evaluation", ""]
    if mlflow_url:
        lines += [f"MLflow run: [{mlflow_url}]({mlflow_url})", ""]
    lines += ["| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in names:
        cells = [scalar_metrics(metrics[m]).get(name) for m in methods]
        lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.4g}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def grids_html(folder: str | Path, title: str) -> str:
    """The PNG figures of a folder inlined into one HTML page (the KFP UI shows HTML artefacts as they are)."""
    import base64

    parts = [f"<html><head><meta charset='utf-8'><title>{title}</title></head><body><h1>{title}</h1>"]
    for png in sorted(Path(folder).rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>{png.name}</h2><img alt='{png.name}' src='data:image/png;base64,{data}'/>")
    if len(parts) == 1:
        parts.append("<p>No figures were written.</p>")
    return "\n".join(parts) + "</body></html>\n"


def jsonable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A stage summary made safe for artefact metadata (paths and numpy values as plain JSON)."""
    return json.loads(json.dumps(dict(summary), default=str))


def model_metadata(folder: str | Path) -> dict[str, Any]:
    """The lineage keys of a trained model's meta.json (MLflow run id, step, data version), if present."""
    meta_file = Path(folder) / "meta.json"
    if not meta_file.is_file():
        return {}
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    return jsonable({k: meta[k] for k in ("attribute", "step", "mlflow_run_id", "data_version", "resolution")
                     if k in meta})


def work_dir(work_root: str | Path, attribute: str, cfg: Config) -> Path:
    """Where training checkpoints go on the shared PVC: <work_root>/<attribute>/<config digest>.

    Keyed by the config, not the run: a retried step, and a later run with the same params
    (after a failure, say), resume from the checkpoints, and the train step stays cacheable.
    The trainer itself starts afresh if the checkpoint's data or settings differ (its resume key).
    """
    digest = hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(work_root) / attribute / digest


def gpu_count() -> int:
    """CUDA devices visible to this pod (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def expect_gpus(requested: int) -> int:
    """The CUDA devices this pod sees; one line on stderr when it sees fewer than the step asked for."""
    seen = gpu_count()
    if seen < requested:
        print(f"warning: this step asked for {requested} GPU(s) and sees {seen}: check the node's device plugin "
              "and the image's CUDA", file=sys.stderr)
    return seen


def train_args(params: Path, attribute: str, prepared: Path, landmarks: Path, split: Path, out: Path,
               work: Path) -> list[str]:
    """The `geogan.stages.train` arguments, the same as dvc.yaml's train command with other paths."""
    return ["--params", str(params), "--attribute", attribute, "--prepared", str(prepared),
            "--landmarks", str(landmarks), "--split", str(split), "--out", str(out), "--work", str(work),
            "--no-progress"]


def torchrun_command(args: Sequence[str], nproc_per_node: int | None = None, python: str = sys.executable) -> list[str]:
    """`python -m torch.distributed.run ... -m geogan.stages.train <args>`.

    Args:
        args: the train stage's arguments (`train_args`).
        nproc_per_node: processes (GPUs) in this one pod (`--standalone` rendezvous on localhost);
            None = a TrainJob node: Kubeflow Trainer sets PET_NNODES, PET_NPROC_PER_NODE,
            PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads as its flags.
        python: the interpreter (default: this one; "python" for another pod's image).
    """
    launcher = [python, "-m", "torch.distributed.run"]
    where = [] if nproc_per_node is None else ["--standalone", "--nproc-per-node", str(nproc_per_node)]
    return [*launcher, *where, "-m", "geogan.stages.train", *args]


def k8s_name(*parts: str, max_len: int = 40) -> str:
    """A DNS-1123 name from parts ('geogan', 'Mustache', run id): lower case, '-', at most max_len.

    40, not 63: the Trainer's JobSet appends '-node-0-12' and a pod suffix to it.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:max_len].rstrip("-")
    if not name:
        raise ValueError(f"no valid Kubernetes name can be made from {parts!r}")
    return name


def kfp_run_env(run_id: str, ui_host: str = "") -> None:
    """Tag this process's MLflow runs with the KFP run (the stages read these into run tags)."""
    os.environ[KFP_RUN_ID_ENV] = run_id
    if ui_host:
        os.environ[KFP_RUN_URL_ENV] = f"{ui_host.rstrip('/')}/#/runs/details/{run_id}"
