"""KFP v2 components: one thin shell per pipeline stage, each calling the stage's `run()` in the project image.

Every component takes `params_yaml` (the whole params.yaml, so one config drives DVC and KFP) and hands
it, with its KFP artefacts, to `components.runtime.run_stage`. The bodies are serialised into the pipeline
YAML, so they import what they use and their defaults are literals (tests check they match
components.settings); the image has the project installed, so `install_kfp_package=False`.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(params_yaml: str, prepared: Output[Dataset]):
    """Prepare the dataset folder (images.npy, manifest.csv, report.json) from params `data:`."""
    from components.runtime import run_stage

    run_stage("ingest", params_yaml, out=prepared, metadata_to=prepared)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def landmarks(params_yaml: str, prepared: Input[Dataset], landmarks: Output[Dataset], gpus: int = 0):
    """68-point landmarks for every prepared image (GPU for the `fan` backend)."""
    from components.runtime import run_stage

    run_stage("landmarks", params_yaml, prepared=prepared, out=landmarks, metadata_to=landmarks, gpus=gpus)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_judge(params_yaml: str, prepared: Input[Dataset], judge: Output[Model], kfp_run_id: str = "",
                gpus: int = 0):
    """The attribute classifier that judges every evaluation: train partition, stopped on val, registered in MLflow."""
    from components.runtime import run_stage

    run_stage("train_judge", params_yaml, prepared=prepared, out=judge, metadata_to=judge, kfp_run_id=kfp_run_id,
              gpus=gpus)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evalset(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
            evalset: Output[Dataset]):
    """The fixed evaluation set of one attribute (test sources x references, other people), with its digest."""
    from components.runtime import run_stage

    run_stage("evalset", params_yaml, attribute, prepared=prepared, landmarks=landmarks, out=evalset,
              metadata_to=evalset)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
          split: Output[Dataset]):
    """The unpaired A/B split of one attribute (a JSON index into the prepared dataset)."""
    from components.runtime import run_stage

    run_stage("split", params_yaml, attribute, prepared=prepared, landmarks=landmarks, out=split, metadata_to=split)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
          split: Input[Dataset], generator: Output[Model], work_root: str = "/mnt/geogan/runs", kfp_run_id: str = "",
          gpus: int = 0):
    """Train GeoGAN for one attribute in this pod: torchrun over its GPUs if it has several.

    Checkpoints go to work_root/<attribute>/<config digest> (on the data PVC): a retried step resumes.
    """
    from components.runtime import train_in_pod

    train_in_pod(params_yaml, attribute, prepared, landmarks, split, generator, work_root, kfp_run_id, gpus)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_trainjob(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
                   split: Input[Dataset], generator: Output[Model], kfp_run_id: str, image: str, nodes: int,
                   gpus_per_node: int, shared_root: str = "/mnt/geogan", namespace: str = ""):
    """Train one attribute across nodes: a Kubeflow Trainer v2 TrainJob, created, its log streamed here, awaited.

    The same trainer (`python -m geogan.stages.train` under torchrun) runs in the job's pods;
    inputs and outputs pass through the shared data PVC.
    """
    from pathlib import Path

    from components.runtime import model_metadata
    from components.trainjob import run_trainjob

    summary = run_trainjob(params_yaml, attribute, Path(prepared.path), Path(landmarks.path), Path(split.path),
                           Path(generator.path), run_id=kfp_run_id, image=image, nodes=nodes,
                           gpus_per_node=gpus_per_node, shared_root=Path(shared_root), namespace=namespace)
    generator.metadata.update({**summary, **model_metadata(generator.path)})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
             evalset: Input[Dataset], model: Input[Model], judge: Input[Model], metrics: Output[Metrics],
             plots: Output[Dataset], table: Output[Markdown], grids: Output[HTML], kfp_run_id: str = "",
             gpus: int = 0):
    """Score the generator and the baselines on the evaluation set: Metrics, a Markdown table, the grids as HTML."""
    from components.runtime import publish_evaluation, run_stage

    run_stage("evaluate", params_yaml, attribute, prepared=prepared, landmarks=landmarks, evalset=evalset,
              model=model, judge=judge, out=metrics, plots=plots, kfp_run_id=kfp_run_id, gpus=gpus)
    publish_evaluation(attribute, metrics, plots, table, grids, model)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(params_yaml: str, attribute: str, model: Input[Model], metrics: Input[Metrics],
             split: Input[Dataset], registration: Output[Artifact], kfp_run_id: str = ""):
    """Register the generator in MLflow as `geogan-<attribute>` with alias `candidate`."""
    from components.runtime import run_stage

    run_stage("register", params_yaml, attribute, model=model, metrics=metrics, split=split, out=registration,
              metadata_to=registration, kfp_run_id=kfp_run_id)
