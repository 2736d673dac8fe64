"""The GeoGAN Kubeflow pipeline: ingest, landmarks, judge; then per attribute split, evalset, train, evaluate, register.

The same stages as dvc.yaml, driven by the same params.yaml (passed whole as `params_yaml`); platform
settings are applied at the call site. GPU counts are pipeline parameters, so the whole pipeline runs on a
CPU-only cluster with every count at 0 (`geogan-pipeline submit` sets them from params.yaml). Compile with
`geogan-pipeline compile`; tests/test_pipeline.py checks that the committed YAML equals a fresh compile.
"""

from kfp import dsl, kubernetes

from components.settings import (DATA_MOUNT, DATA_PVC, GPU_RESOURCE, IMAGE, MLFLOW_SECRET, MLFLOW_SECRET_KEYS,
                                 S3_SECRET, S3_SECRET_KEYS, SHM_SIZE)
from components.stages import (evalset, evaluate, ingest, landmarks, register, split, train, train_judge,
                               train_trainjob)

RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # ties each MLflow run to this KFP run (tags kfp.run_id)


def _on_cluster(task: dsl.PipelineTask, name: str, image: str, cpu: str, memory: str) -> dsl.PipelineTask:
    """The project image, CPU/memory, the data PVC, the S3 + MLflow secrets and a display name: every step."""
    task.set_display_name(name)
    task.set_container_image(image)
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)
    kubernetes.use_secret_as_env(task, S3_SECRET, {k: k for k in S3_SECRET_KEYS})
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {k: k for k in MLFLOW_SECRET_KEYS})
    return task


def _on_gpu(task: dsl.PipelineTask, gpus) -> dsl.PipelineTask:
    """`gpus` GPUs (a parameter: 0 on a CPU-only cluster or a CPU backend), tolerating GPU nodes' taint.

    A GPU request places the pod on a GPU node by itself; a request of 0 fits any node. The task also
    takes the count as an input (`gpus`): the compiler threads a parameter into a nested DAG (loop,
    branch) only when a task there consumes it, not when only a resource setting refers to it.
    """
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    return task


def _with_shm(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A memory-backed /dev/shm: NCCL and DataLoader workers need more than the container's 64 MiB."""
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def _evaluate_and_register(inputs: dict, generator, judge, evalset_data, image, eval_gpus) -> None:
    """Evaluate a trained generator, then register it (the tail of both training branches).

    Each branch has its own tail because kfp.local cannot yet resolve `dsl.OneOf` over
    artefacts ("Expected 1 artifact in ArtifactSelectorSpec"); on a cluster only one branch runs.
    """
    evaluate_task = _on_gpu(_on_cluster(
        evaluate(**{k: v for k, v in inputs.items() if k != "split"}, model=generator, judge=judge,
                 evalset=evalset_data, kfp_run_id=RUN_ID, gpus=eval_gpus),
        "evaluate", image, cpu="4", memory="16Gi"), gpus=eval_gpus)
    register_task = _on_cluster(
        register(params_yaml=inputs["params_yaml"], attribute=inputs["attribute"], model=generator,
                 metrics=evaluate_task.outputs["metrics"], split=inputs["split"], kfp_run_id=RUN_ID),
        "register (MLflow, alias candidate)", image, cpu="1", memory="2Gi")
    register_task.set_caching_options(False)  # a side effect in MLflow: always run it


@dsl.pipeline(name="geogan", description="GeoGAN instance-level facial attribute transfer: data to registered model.")
def geogan_pipeline(
    params_yaml: str,
    attributes: list = ["Mustache", "Eyeglasses"],
    image: str = IMAGE,
    train_nodes: int = 1,
    gpus_per_node: int = 1,
    landmark_gpus: int = 1,
    eval_gpus: int = 1,
    work_root: str = f"{DATA_MOUNT}/runs",
):
    """Args:
        params_yaml: the whole params.yaml content (the same file `dvc repro` reads).
        attributes: attributes to train, each listed in params.yaml.
        image: the project image every step runs in (by digest: KFP's cache key is this string).
        train_nodes: 1 = train in the step's pod (torchrun over its GPUs); > 1 = a Trainer v2 TrainJob over N nodes.
        gpus_per_node: GPUs of each training pod (0 = CPU).
        landmark_gpus: GPUs of the landmarks step (1 for the `fan` backend, 0 for `dlib` and `exact`).
        eval_gpus: GPUs of the judge and evaluate steps (0 = CPU).
        work_root: checkpoints of resumable training (on the data PVC).
    """
    ingest_task = _on_cluster(ingest(params_yaml=params_yaml), "ingest", image, cpu="2", memory="8Gi")
    prepared = ingest_task.outputs["prepared"]
    landmarks_task = _on_gpu(_on_cluster(landmarks(params_yaml=params_yaml, prepared=prepared, gpus=landmark_gpus),
                                         "landmarks", image, cpu="4", memory="16Gi"), gpus=landmark_gpus)
    judge_task = _on_gpu(_on_cluster(train_judge(params_yaml=params_yaml, prepared=prepared, kfp_run_id=RUN_ID,
                                                 gpus=eval_gpus),
                                     "train judge (attribute classifier)", image, cpu="8", memory="16Gi"),
                         gpus=eval_gpus)

    with dsl.ParallelFor(attributes, name="each attribute") as attribute:
        lms = landmarks_task.outputs["landmarks"]
        split_task = _on_cluster(split(params_yaml=params_yaml, attribute=attribute, prepared=prepared, landmarks=lms),
                                 "split", image, cpu="1", memory="4Gi")
        evalset_task = _on_cluster(
            evalset(params_yaml=params_yaml, attribute=attribute, prepared=prepared, landmarks=lms),
            "evaluation set", image, cpu="1", memory="4Gi")
        inputs = dict(params_yaml=params_yaml, attribute=attribute, prepared=prepared, landmarks=lms,
                      split=split_task.outputs["split"])
        tail = dict(judge=judge_task.outputs["judge"], evalset_data=evalset_task.outputs["evalset"], image=image,
                    eval_gpus=eval_gpus)
        with dsl.If(train_nodes > 1, name="multi-node"):
            # This pod only stages data, streams the job's log and waits: no GPU; the TrainJob's pods get them.
            job_task = _on_cluster(
                train_trainjob(**inputs, kfp_run_id=RUN_ID, image=image, nodes=train_nodes,
                               gpus_per_node=gpus_per_node),
                "train (Trainer v2 TrainJob)", image, cpu="1", memory="4Gi")
            _evaluate_and_register(inputs, job_task.outputs["generator"], **tail)
        with dsl.Else(name="single-node"):
            train_task = _with_shm(_on_gpu(_on_cluster(
                train(**inputs, work_root=work_root, kfp_run_id=RUN_ID, gpus=gpus_per_node),
                "train", image, cpu="8", memory="32Gi"), gpus=gpus_per_node))
            train_task.set_retry(num_retries=2)  # resumes from its checkpoints in work_root
            _evaluate_and_register(inputs, train_task.outputs["generator"], **tail)
