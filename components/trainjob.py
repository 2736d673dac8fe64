"""Multi-node training as a Kubeflow Trainer v2 TrainJob: stage the inputs on the PVC, create, stream logs, wait.

The TrainingRuntime `geogan-torch` (k8s/base/trainingruntime.yaml) holds what every run shares (data
PVC, /dev/shm, S3 and MLflow secrets, service account, GPU toleration); the job says only what differs:
image, command, nodes and each node's GPUs, CPU and memory. k8s/jobs/trainjob-train.yaml is the same
shape for `kubectl create`. The `kubeflow` SDK and kubernetes are imported inside `run_trainjob` only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from components.runtime import k8s_name, torchrun_command, train_args, work_dir, write_params
from components.settings import DATA_MOUNT, GPU_RESOURCE, IMAGE, TRAINING_RUNTIME
from geogan.io import atomic_path

API_VERSION, KIND, PLURAL = "trainer.kubeflow.org/v1alpha1", "TrainJob", "trainjobs"
PART_OF = {"app.kubernetes.io/part-of": "geogan"}


def trainjob_manifest(name: str, command: list[str], nodes: int, gpus_per_node: int, image: str = IMAGE,
                      cpu: str = "8", memory: str = "32Gi", runtime: str = TRAINING_RUNTIME,
                      labels: Mapping[str, str] | None = None, namespace: str | None = None) -> dict[str, Any]:
    """A trainer.kubeflow.org/v1alpha1 TrainJob of `nodes` nodes x `gpus_per_node` GPUs on the geogan runtime.

    Args:
        name: the job name (`k8s_name`).
        command: the trainer container's command (`torchrun_command(args)`, no per-pod flags).
        nodes: training nodes (>= 1).
        gpus_per_node: GPUs of each node (0 = CPU only, gloo); also the processes per node.
        labels: extra labels (the KFP run id, the attribute).
    Returns:
        The manifest as a plain dict (CustomObjectsApi.create_namespaced_custom_object's body).
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"TrainJob {name}: nodes must be >= 1 and gpus_per_node >= 0, got {nodes}, {gpus_per_node}")
    resources: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus_per_node:
        resources[GPU_RESOURCE] = str(gpus_per_node)
    metadata: dict[str, Any] = {"name": name, "labels": {**PART_OF, **dict(labels or {})}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": runtime},
            "trainer": {
                "image": image,
                "command": list(command),
                "numNodes": nodes,
                "numProcPerNode": max(gpus_per_node, 1),
                "resourcesPerNode": {"requests": dict(resources), "limits": dict(resources)},
            },
        },
    }


def run_trainjob(params_yaml: str, attribute: str, prepared: Path, landmarks: Path, split: Path, out: Path,
                 run_id: str, image: str, nodes: int, gpus_per_node: int, shared_root: Path = Path(DATA_MOUNT),
                 namespace: str = "", timeout_s: int = 7 * 24 * 3600, client: Any = None,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one attribute as a TrainJob and copy its generator to `out`.

    The job's pods cannot see this pod's KFP artefacts, so the inputs are staged on the shared
    PVC (mounted here at `shared_root`) first. The job's first node's log is streamed into this
    step's log. Retrying the KFP task finds the job by name and waits for it again; the trainer
    resumes from the checkpoints in `work_dir`.

    Args:
        params_yaml, attribute: the params.yaml content and the attribute to train.
        prepared, landmarks, split: the KFP input artefact paths.
        out: the KFP output Model path (a folder is written there).
        run_id: the pipeline run's id (names the job and its folders, labels the job).
        image, nodes, gpus_per_node: the job's image and size.
        namespace: where to create the job; "" = the client's (this pod's) namespace.
        timeout_s: how long to wait for Complete or Failed.
        client: a `kubeflow.trainer.TrainerClient` (tests pass a fake with the same methods).
        echo: where log lines go (this step's stdout).
    Returns:
        A summary: job name, namespace, size, final status, output path.
    Raises:
        RuntimeError: the job failed, could not be created, or wrote no generator.
    """
    name = k8s_name("geogan", attribute, run_id[:8])
    stage = Path(shared_root) / "jobs" / run_id / attribute
    params, cfg = write_params(params_yaml, stage)
    for src, dst in ((prepared, "prepared"), (landmarks, "landmarks"), (split, "split.json")):
        _stage_copy(src, stage / dst)
    model_dir = stage / "model"
    args = train_args(params, attribute, stage / "prepared", stage / "landmarks", stage / "split.json", model_dir,
                      work_dir(Path(shared_root) / "runs", attribute, cfg))
    manifest = trainjob_manifest(name, torchrun_command(args, python="python"), nodes, gpus_per_node, image,
                                 labels={"geogan/attribute": k8s_name(attribute), "pipeline/runid": run_id[:63]})
    if client is None:
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        client = TrainerClient(KubernetesBackendConfig(namespace=namespace or None))
    namespace = _create(client, manifest)
    client.wait_for_job_status(name, {"Running", "Complete", "Failed"}, timeout=timeout_s, polling_interval=10)
    for line in client.get_job_logs(name, follow=True):  # node-0's log, until its container ends
        echo(line.rstrip("\n"))
    job = client.wait_for_job_status(name, {"Complete", "Failed"}, timeout=timeout_s, polling_interval=30)
    if job.status != "Complete":
        raise RuntimeError(f"TrainJob {namespace}/{name} ended {job.status}: `kubectl -n {namespace} describe "
                           f"trainjob {name}` and the node pods' logs say why")
    if not (model_dir / "generator.pt").is_file():
        raise RuntimeError(f"TrainJob {namespace}/{name} completed but wrote no {model_dir / 'generator.pt'}")
    with atomic_path(out) as tmp:
        shutil.copytree(model_dir, tmp)
    return {"trainjob": name, "namespace": namespace, "nodes": nodes, "gpus_per_node": gpus_per_node,
            "status": job.status, "out": str(out)}


def _stage_copy(src: Path, dst: Path) -> None:
    """Copy a KFP artefact (file or folder) onto the PVC atomically, replacing an older copy."""
    with atomic_path(dst) as tmp:
        (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, tmp)


def _create(client: Any, manifest: dict[str, Any]) -> str:
    """Create the TrainJob through the client's Kubernetes API; an existing one (a retried task) is kept."""
    from kubernetes.client.exceptions import ApiException

    backend = client.backend
    group, version = API_VERSION.split("/")
    try:
        backend.custom_api.create_namespaced_custom_object(group, version, backend.namespace, PLURAL, manifest)
    except ApiException as e:
        if e.status != 409:  # 409: a retry of this task; the job already exists, so wait for it
            raise RuntimeError(f"could not create TrainJob {backend.namespace}/{manifest['metadata']['name']}: "
                               f"{e.status} {e.reason}") from e
        print(f"TrainJob {backend.namespace}/{manifest['metadata']['name']} exists: waiting for it", file=sys.stderr)
    return backend.namespace
