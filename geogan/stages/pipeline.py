"""`geogan pipeline`: compile and submit the Kubeflow pipeline, and the helpers its components call in their pods.

The KFP components (components/stages.py) are thin: each writes the `params_yaml` string
parameter to a file, loads it with `load_config` and calls one stage's `run()`. What they
share lives here, so that it is tested like the rest of the library: the params file, the
Metrics artefact, the torchrun command for several GPUs in one pod, and the multi-node
path (stage the inputs on a shared PVC, create a `PyTorchJob`, await it, copy the model back).
kfp, kubernetes and kubeflow-training are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from geogan.config import Config, ConfigError, check_attribute, config_to_dict, load_config
from geogan.io import atomic_path, atomic_write_text

# Names the pipeline and the k8s/ manifests share (tests/test_k8s.py checks they agree).
IMAGE = "ghcr.io/geogan/geogan-pipeline:0.1.0"
DATA_PVC = "geogan-data"
DATA_MOUNT = "/mnt/geogan"
S3_SECRET = "geogan-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
MLFLOW_SECRET = "geogan-mlflow"
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SERVICE_ACCOUNT = "geogan-pipeline"
PACKAGE = Path("pipelines/geogan_pipeline.yaml")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA GPU feature discovery


# ---------------------------------------------------------------- helpers run inside the component pods


def write_params(params_yaml: str, folder: str | Path) -> tuple[Path, Config]:
    """Write the `params_yaml` pipeline parameter to folder/params.yaml and validate it.

    Args:
        params_yaml: the whole params.yaml content, as passed to the pipeline.
        folder: where to write it (a temp folder of the component, or the shared PVC).
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


def train_args(params: Path, attribute: str, prepared: Path, landmarks: Path, split: Path, out: Path,
               work: Path) -> list[str]:
    """The `geogan.stages.train` arguments, the same as dvc.yaml's train command with other paths."""
    return ["--params", str(params), "--attribute", attribute, "--prepared", str(prepared),
            "--landmarks", str(landmarks), "--split", str(split), "--out", str(out), "--work", str(work),
            "--no-progress"]


def torchrun_command(nproc_per_node: int, args: Sequence[str], nnodes: int | None = None,
                     python: str = sys.executable) -> list[str]:
    """`python -m torch.distributed.run ... -m geogan.stages.train <args>`.

    Args:
        nproc_per_node: processes (GPUs) per node.
        args: the train stage's arguments (`train_args`).
        nnodes: nodes in a PyTorchJob; None = one pod (`--standalone` rendezvous on localhost).
            In a PyTorchJob the training operator sets PET_NODE_RANK, PET_MASTER_ADDR and
            PET_MASTER_PORT, which torchrun reads as defaults for its own flags.
        python: the interpreter (default: this one; "python" for another pod's image).
    """
    launcher = [python, "-m", "torch.distributed.run"]
    where = ["--standalone"] if nnodes is None else ["--nnodes", str(nnodes)]
    return [*launcher, *where, "--nproc-per-node", str(nproc_per_node), "-m", "geogan.stages.train", *args]


def k8s_name(*parts: str, max_len: int = 40) -> str:
    """A DNS-1123 name from parts ('geogan', 'Mustache', run id): lower case, '-', at most max_len.

    40, not 63: the operator appends '-master-0' / '-worker-12' and a Service name to it.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:max_len].rstrip("-")
    if not name:
        raise ValueError(f"no valid Kubernetes name can be made from {parts!r}")
    return name


def pytorchjob_manifest(name: str, image: str, command: Sequence[str], nodes: int, gpus_per_node: int,
                        pvc_name: str = DATA_PVC, mount_path: str = DATA_MOUNT, namespace: str | None = None,
                        cpu: str = "8", memory: str = "32Gi", service_account: str = SERVICE_ACCOUNT,
                        backoff_limit: int = 3) -> dict[str, Any]:
    """A kubeflow.org/v1 PyTorchJob: 1 Master + (nodes - 1) Workers, each `gpus_per_node` GPUs.

    Every replica mounts the shared data PVC (ReadWriteMany) and gets the S3 and MLflow
    secrets as environment, like the KFP steps. k8s/jobs/pytorchjob-train.yaml is the same
    shape for `kubectl create`.

    Args:
        name: the job name (`k8s_name`).
        image: the project image.
        command: the container command (`torchrun_command(..., nnodes=nodes)`).
        nodes: replicas in all (>= 1).
        gpus_per_node: GPUs per replica (0 = CPU-only, gloo).
    Returns:
        The manifest as a plain dict, ready for CustomObjectsApi.create_namespaced_custom_object.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"PyTorchJob {name}: nodes must be >= 1 and gpus_per_node >= 0, got {nodes}, {gpus_per_node}")
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "containers": [{
            "name": "pytorch",  # the training operator looks for this container name
            "image": image,
            "command": list(command),
            "env": [_secret_env(S3_SECRET, key) for key in S3_SECRET_KEYS]
                   + [_secret_env(MLFLOW_SECRET, key) for key in MLFLOW_SECRET_KEYS],
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
            "volumeMounts": [{"name": "data", "mountPath": mount_path},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc_name}},
                    # NCCL and DataLoader workers need more shared memory than the 64 MiB default.
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
    }
    if gpus_per_node:
        limits[GPU_RESOURCE] = str(gpus_per_node)
        pod_spec["nodeSelector"] = {GPU_NODE_LABEL[0]: GPU_NODE_LABEL[1]}
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": {"app.kubernetes.io/part-of": "geogan"}},
                             "spec": copy.deepcopy(pod_spec)}}

    specs = {"Master": replica(1)}
    if nodes > 1:
        specs["Worker"] = replica(nodes - 1)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "geogan"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(max(gpus_per_node, 1)),
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit},
            "pytorchReplicaSpecs": specs,
        },
    }


def _secret_env(secret: str, key: str) -> dict[str, Any]:
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def run_pytorchjob(params_yaml: str, attribute: str, prepared: Path, landmarks: Path, split: Path, out: Path,
                   run_id: str, image: str, nodes: int, gpus_per_node: int, pvc_name: str = DATA_PVC,
                   shared_root: Path = Path(DATA_MOUNT), namespace: str = "", timeout_s: int = 7 * 24 * 3600,
                   client: Any = None) -> dict[str, Any]:
    """Train one attribute as a multi-node PyTorchJob and copy its generator to `out`.

    The job's pods cannot see this pod's KFP artefacts, so the inputs are staged on the
    shared PVC (mounted here at `shared_root`) first. Retrying the KFP task finds the job by
    name and waits for it again; the trainer resumes from the checkpoints in `work_dir`.

    Args:
        params_yaml: the params.yaml content.
        attribute: the attribute to train.
        prepared, landmarks, split: the KFP input artefact paths.
        out: the KFP output Model path (a folder is written there).
        run_id: the pipeline run's id (names the job and its folders).
        image, nodes, gpus_per_node, pvc_name: the job's image and size, and the shared PVC.
        namespace: where to create the job; "" = this pod's namespace.
        timeout_s: how long to wait for Succeeded/Failed.
        client: a kubeflow-training `TrainingClient` (tests pass a fake).
    Returns:
        A summary: job name, namespace, final condition, output path.
    Raises:
        RuntimeError: the job failed (with its conditions), or could not be created.
        TimeoutError: it did not finish within timeout_s.
    """
    name = k8s_name("geogan", attribute, run_id[:8])
    stage = Path(shared_root) / "jobs" / run_id / attribute
    params, cfg = write_params(params_yaml, stage)
    work = work_dir(Path(shared_root) / "runs", attribute, cfg)
    _stage_copy(prepared, stage / "prepared")
    _stage_copy(landmarks, stage / "landmarks")
    _stage_copy(split, stage / "split.json")
    model_dir = stage / "model"
    command = torchrun_command(max(gpus_per_node, 1), train_args(params, attribute, stage / "prepared",
                               stage / "landmarks", stage / "split.json", model_dir, work),
                               nnodes=nodes, python="python")
    manifest = pytorchjob_manifest(name, image, command, nodes, gpus_per_node, pvc_name, str(shared_root))

    from kubeflow.training import constants  # noqa: PLC0415 - the edge: only here

    if client is None:
        from kubeflow.training import TrainingClient

        client = TrainingClient()
    namespace = namespace or client.namespace
    _create_job(client, manifest, namespace, constants)
    job = client.wait_for_job_conditions(name, namespace=namespace, job_kind=constants.PYTORCHJOB_KIND,
                                         expected_conditions={constants.JOB_CONDITION_SUCCEEDED},
                                         wait_timeout=timeout_s, polling_interval=30)
    if not (model_dir / "generator.pt").is_file():
        raise RuntimeError(f"PyTorchJob {namespace}/{name} succeeded but wrote no {model_dir / 'generator.pt'}")
    with atomic_path(out) as tmp:
        shutil.copytree(model_dir, tmp)
    return {"job": name, "namespace": namespace, "nodes": nodes, "gpus_per_node": gpus_per_node,
            "condition": _last_condition(job), "out": str(out)}


def _stage_copy(src: Path, dst: Path) -> None:
    """Copy a KFP artefact (file or folder) onto the PVC atomically, replacing an older copy."""
    with atomic_path(dst) as tmp:
        (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, tmp)


def _create_job(client: Any, manifest: dict[str, Any], namespace: str, constants: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    plural = constants.JOB_PARAMETERS[constants.PYTORCHJOB_KIND]["plural"]
    try:
        client.custom_api.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace, plural,
                                                          manifest)
    except ApiException as e:
        if e.status != 409:  # 409: a retry of this task; the job already exists, so wait for it
            raise RuntimeError(f"could not create PyTorchJob {namespace}/{manifest['metadata']['name']}: "
                               f"{e.status} {e.reason}") from e


def _last_condition(job: Any) -> str:
    conditions = getattr(getattr(job, "status", None), "conditions", None) or []
    return getattr(conditions[-1], "type", "unknown") if conditions else "unknown"


# ---------------------------------------------------------------- compile / submit (run on a workstation)


def compile_pipeline(out: Path = PACKAGE) -> Path:
    """Compile pipelines/geogan_pipeline.py to `out` (written atomically)."""
    from kfp import compiler

    pipeline = _pipeline_func()
    with atomic_path(out) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return out


def submit(host: str, attributes: Sequence[str], params: Path = Path("params.yaml"), experiment: str = "geogan",
           package: Path = PACKAGE, run_name: str | None = None, namespace: str | None = None,
           service_account: str = SERVICE_ACCOUNT, image: str = IMAGE, train_nodes: int = 1,
           gpus_per_node: int = 1, enable_caching: bool = True,
           client_factory: Callable[..., Any] | None = None) -> str:
    """Submit the compiled pipeline to a KFP endpoint; returns the run's URL.

    Args:
        host: the KFP API / UI address, e.g. http://localhost:8080 after a port-forward.
        attributes: attributes to train (each must be listed in params.yaml).
        params: the params.yaml whose content drives every step (as in `dvc repro`).
        experiment: KFP experiment name.
        package: the compiled pipeline (the committed YAML, checked by tests/test_pipeline.py).
        train_nodes: > 1 trains each attribute as a PyTorchJob over that many nodes.
        gpus_per_node: GPUs per training pod (torchrun runs one process per GPU).
        client_factory: builds the client (default kfp.Client; tests pass a fake).
    """
    cfg = load_config(params)
    if not attributes:
        raise ConfigError("give at least one --attribute")
    for attribute in attributes:
        check_attribute(cfg, attribute)
    if not Path(package).is_file():
        raise FileNotFoundError(f"{package}: compiled pipeline not found (run `geogan pipeline compile`)")
    if client_factory is None:
        import kfp

        from geogan.tracking import probe

        answer = probe(f"{host.rstrip('/')}/apis/v2beta1/healthz")  # kfp.Client retries a closed port at length
        if isinstance(answer, str):
            raise ConfigError(f"KFP host {host} does not answer: {answer} (--host; a port-forward running?)")
        client_factory = kfp.Client
    client = client_factory(host=host, namespace=namespace)
    arguments = {"params_yaml": Path(params).read_text(encoding="utf-8"), "attributes": list(attributes),
                 "image": image, "train_nodes": train_nodes, "gpus_per_node": gpus_per_node}
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name or f"geogan-{'-'.join(attributes)}",
        experiment_name=experiment, namespace=namespace, enable_caching=enable_caching,
        service_account=service_account)
    return f"{host.rstrip('/')}/#/runs/details/{result.run_id}"


def _pipeline_func() -> Any:
    try:
        from pipelines.geogan_pipeline import geogan_pipeline
    except ImportError as e:
        raise ConfigError(f"cannot import pipelines.geogan_pipeline ({e}): run from the repository root "
                          "or install the project (`pip install -e .`)") from e
    return geogan_pipeline


def main(argv: Sequence[str] | None = None) -> None:
    """`geogan pipeline compile [--out FILE]` | `geogan pipeline submit --host URL --attribute A ...`."""
    p = argparse.ArgumentParser(prog="geogan pipeline", description="Compile or submit the Kubeflow pipeline.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile pipelines/geogan_pipeline.py to YAML")
    c.add_argument("--out", type=Path, default=PACKAGE)
    s = sub.add_parser("submit", help="submit a run to a KFP endpoint and print its URL")
    s.add_argument("--host", required=True, help="KFP address, e.g. http://localhost:8080")
    s.add_argument("--attribute", action="append", required=True, dest="attributes", help="repeat for several")
    s.add_argument("--experiment", default="geogan")
    s.add_argument("--params", type=Path, default=Path("params.yaml"))
    s.add_argument("--package", type=Path, default=PACKAGE)
    s.add_argument("--run-name", default=None)
    s.add_argument("--namespace", default=None, help="KFP namespace (multi-user Kubeflow)")
    s.add_argument("--service-account", default=SERVICE_ACCOUNT)
    s.add_argument("--image", default=IMAGE)
    s.add_argument("--train-nodes", type=int, default=1, help="> 1: train as a PyTorchJob over N nodes")
    s.add_argument("--gpus-per-node", type=int, default=1)
    s.add_argument("--no-cache", action="store_true", help="disable KFP step caching for this run")
    args = p.parse_args(argv)
    try:
        if args.command == "compile":
            print(f"geogan pipeline: compiled {compile_pipeline(args.out)}")
        else:
            print(submit(args.host, args.attributes, args.params, args.experiment, args.package, args.run_name,
                         args.namespace, args.service_account, args.image, args.train_nodes, args.gpus_per_node,
                         enable_caching=not args.no_cache))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"geogan pipeline: error: {e}")


if __name__ == "__main__":
    main()
