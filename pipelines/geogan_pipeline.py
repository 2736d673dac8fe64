"""The GeoGAN Kubeflow pipeline: ingest -> landmarks, judge, then per attribute split, evalset -> train -> evaluate -> register.

The same stages as dvc.yaml, driven by the same params.yaml (passed whole as `params_yaml`).
Platform settings (GPUs, CPU/memory, the data PVC, secrets, node placement) are applied at
the call site. Compile with `geogan pipeline compile` (or `python -m pipelines.geogan_pipeline`);
tests/test_pipeline.py checks that the committed YAML equals a fresh compile.
"""

from kfp import dsl, kubernetes

from components import evalset, evaluate, ingest, landmarks, register, split, train, train_judge, train_pytorchjob
from geogan.stages.pipeline import (DATA_MOUNT, DATA_PVC, GPU_NODE_LABEL, GPU_RESOURCE, IMAGE, MLFLOW_SECRET,
                                    MLFLOW_SECRET_KEYS, PACKAGE, S3_SECRET, S3_SECRET_KEYS)


def _on_cluster(task: dsl.PipelineTask, image: str, cpu: str, memory: str) -> dsl.PipelineTask:
    """The project image, CPU/memory, the data PVC and the S3 + MLflow secrets: every step gets these."""
    task.set_container_image(image)
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)
    kubernetes.use_secret_as_env(task, S3_SECRET, {k: k for k in S3_SECRET_KEYS})
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {k: k for k in MLFLOW_SECRET_KEYS})
    return task


def _on_gpu(task: dsl.PipelineTask, gpus) -> dsl.PipelineTask:
    """GPUs, on GPU nodes (their label and taint, as set by the NVIDIA GPU operator)."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    return task


def _evaluate_and_register(inputs: dict, generator, judge, evalset_data, image) -> None:
    """Evaluate a trained generator, then register it (the tail of both training branches).

    Each branch has its own tail because kfp.local cannot yet resolve `dsl.OneOf` over
    artefacts ("Expected 1 artifact in ArtifactSelectorSpec"); on a cluster only one branch runs.
    """
    evaluate_task = _on_gpu(_on_cluster(evaluate(**{k: v for k, v in inputs.items() if k != "split"}, model=generator,
                                                 judge=judge, evalset=evalset_data),
                                        image, cpu="4", memory="16Gi"), gpus=1)
    register_task = _on_cluster(
        register(params_yaml=inputs["params_yaml"], attribute=inputs["attribute"], model=generator,
                 metrics=evaluate_task.outputs["metrics"], split=inputs["split"]),
        image, cpu="1", memory="2Gi")
    register_task.set_caching_options(False)  # a side effect in MLflow: always run it


@dsl.pipeline(name="geogan", description="GeoGAN instance-level facial attribute transfer: data to registered model.")
def geogan_pipeline(
    params_yaml: str,
    attributes: list = ["Mustache", "Eyeglasses"],
    image: str = IMAGE,
    train_nodes: int = 1,
    gpus_per_node: int = 1,
    work_root: str = f"{DATA_MOUNT}/runs",
):
    """Args:
        params_yaml: the whole params.yaml content (the same file `dvc repro` reads).
        attributes: attributes to train, each listed in params.yaml.
        image: the project image every step runs in.
        train_nodes: 1 = train in the step's pod (torchrun over its GPUs); > 1 = a PyTorchJob over N nodes.
        gpus_per_node: GPUs of each training pod.
        work_root: checkpoints of resumable training (on the data PVC).
    """
    ingest_task = _on_cluster(ingest(params_yaml=params_yaml), image, cpu="2", memory="8Gi")
    landmarks_task = _on_gpu(_on_cluster(
        landmarks(params_yaml=params_yaml, prepared=ingest_task.outputs["prepared"]),
        image, cpu="4", memory="16Gi"), gpus=1)
    judge_task = _on_gpu(_on_cluster(
        train_judge(params_yaml=params_yaml, prepared=ingest_task.outputs["prepared"]),
        image, cpu="8", memory="16Gi"), gpus=1)

    with dsl.ParallelFor(attributes) as attribute:
        split_task = _on_cluster(
            split(params_yaml=params_yaml, attribute=attribute, prepared=ingest_task.outputs["prepared"],
                  landmarks=landmarks_task.outputs["landmarks"]),
            image, cpu="1", memory="4Gi")
        evalset_task = _on_cluster(
            evalset(params_yaml=params_yaml, attribute=attribute, prepared=ingest_task.outputs["prepared"],
                    landmarks=landmarks_task.outputs["landmarks"]),
            image, cpu="1", memory="4Gi")
        inputs = dict(params_yaml=params_yaml, attribute=attribute, prepared=ingest_task.outputs["prepared"],
                      landmarks=landmarks_task.outputs["landmarks"], split=split_task.outputs["split"])
        with dsl.If(train_nodes > 1, name="multi-node"):
            # This pod only stages data and waits: no GPU; the job's pods get them.
            job_task = _on_cluster(
                train_pytorchjob(**inputs, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, image=image, nodes=train_nodes,
                                 gpus_per_node=gpus_per_node),
                image, cpu="1", memory="4Gi")
            _evaluate_and_register(inputs, job_task.outputs["generator"], judge_task.outputs["judge"],
                                   evalset_task.outputs["evalset"], image)
        with dsl.Else(name="single-node"):
            train_task = _on_gpu(_on_cluster(
                train(**inputs, work_root=work_root),
                image, cpu="8", memory="32Gi"), gpus=gpus_per_node)
            train_task.set_retry(num_retries=2)  # resumes from its checkpoints in work_root
            _evaluate_and_register(inputs, train_task.outputs["generator"], judge_task.outputs["judge"],
                                   evalset_task.outputs["evalset"], image)


if __name__ == "__main__":
    from kfp import compiler

    compiler.Compiler().compile(geogan_pipeline, str(PACKAGE))
    print(f"compiled {PACKAGE}")
