"""KFP v2 components: one thin shell per pipeline stage, each calling the stage's `run()` in the project image.

Every component takes `params_yaml` (the whole params.yaml content, so one config drives
DVC and KFP), writes it to a file, loads it with `load_config` and makes one library call
with its paths mapped to KFP artefacts (Dataset, Model, Metrics), so the KFP UI shows lineage.
The bodies are serialised into the pipeline YAML, so they import everything they use; the
image has the project installed (Dockerfile), so `install_kfp_package=False`. Defaults are
literals for the same reason (tests check they match geogan.stages.pipeline's constants).
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from geogan.stages.pipeline import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(params_yaml: str, prepared: Output[Dataset]):
    """Prepare the dataset folder (images.npy, manifest.csv, report.json) from params `data:`."""
    import tempfile
    from pathlib import Path

    from geogan.stages import ingest as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, out=Path(prepared.path), progress=False)
    prepared.metadata.update(jsonable(summary))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def landmarks(params_yaml: str, prepared: Input[Dataset], landmarks: Output[Dataset]):
    """68-point landmarks for every prepared image (GPU for the `fan` backend)."""
    import tempfile
    from pathlib import Path

    from geogan.stages import landmarks as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, prepared=Path(prepared.path), out=Path(landmarks.path), progress=False)
    landmarks.metadata.update(jsonable(summary))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_judge(params_yaml: str, prepared: Input[Dataset], judge: Output[Model]):
    """The attribute classifier that judges every evaluation: train partition only, stopped on val, registered in MLflow."""
    import tempfile
    from pathlib import Path

    from geogan.stages import train_judge as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, prepared=Path(prepared.path), out=Path(judge.path), progress=False)
    judge.metadata.update(jsonable(summary))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evalset(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
            evalset: Output[Dataset]):
    """The fixed evaluation set of one attribute (test sources x references, other people), with its digest."""
    import tempfile
    from pathlib import Path

    from geogan.stages import evalset as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, attribute, prepared=Path(prepared.path), landmarks=Path(landmarks.path),
                            out=Path(evalset.path))
    evalset.metadata.update(jsonable(summary))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
          split: Output[Dataset]):
    """The unpaired A/B split of one attribute (a JSON index into the prepared dataset)."""
    import tempfile
    from pathlib import Path

    from geogan.stages import split as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, attribute, prepared=Path(prepared.path), landmarks=Path(landmarks.path),
                            out=Path(split.path))
    split.metadata.update(jsonable(summary))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
          split: Input[Dataset], generator: Output[Model], work_root: str = "/mnt/geogan/runs"):
    """Train GeoGAN for one attribute in this pod: torchrun over its GPUs if it has several.

    Checkpoints go to work_root/<attribute>/<config digest> (on the data PVC): a retried step resumes.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    from geogan.stages import train as stage
    from geogan.stages.pipeline import (gpu_count, jsonable, model_metadata, torchrun_command, train_args, work_dir,
                                        write_params)

    with tempfile.TemporaryDirectory() as tmp:
        params, cfg = write_params(params_yaml, tmp)
        paths = dict(prepared=Path(prepared.path), landmarks=Path(landmarks.path), split=Path(split.path),
                     out=Path(generator.path), work=work_dir(work_root, attribute, cfg))
        gpus = gpu_count()
        if gpus > 1:
            subprocess.run(torchrun_command(gpus, train_args(params, attribute, **paths)), check=True)
            summary = {"attribute": attribute, "nproc_per_node": gpus}
        else:
            summary = stage.run(cfg, attribute, progress=False, **paths)
    generator.metadata.update({**jsonable(summary), **model_metadata(generator.path)})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_pytorchjob(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
                     split: Input[Dataset], generator: Output[Model], run_id: str, image: str, nodes: int,
                     gpus_per_node: int, pvc_name: str = "geogan-data", shared_root: str = "/mnt/geogan",
                     namespace: str = ""):
    """Train one attribute across nodes: a Kubeflow Training Operator PyTorchJob, created and awaited.

    The same trainer (`python -m geogan.stages.train` under torchrun) runs in the job's pods;
    inputs and outputs pass through the shared data PVC.
    """
    from pathlib import Path

    from geogan.stages.pipeline import model_metadata, run_pytorchjob

    summary = run_pytorchjob(params_yaml, attribute, Path(prepared.path), Path(landmarks.path), Path(split.path),
                             Path(generator.path), run_id=run_id, image=image, nodes=nodes,
                             gpus_per_node=gpus_per_node, pvc_name=pvc_name, shared_root=Path(shared_root),
                             namespace=namespace)
    generator.metadata.update({**summary, **model_metadata(generator.path)})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(params_yaml: str, attribute: str, prepared: Input[Dataset], landmarks: Input[Dataset],
             evalset: Input[Dataset], model: Input[Model], judge: Input[Model], metrics: Output[Metrics],
             plots: Output[Dataset]):
    """Score the generator and the baselines on the evaluation set; the metrics JSON is the Metrics artefact's file."""
    import tempfile
    from pathlib import Path

    from geogan.stages import evaluate as stage
    from geogan.stages.pipeline import log_metrics_file, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        stage.run(cfg, attribute, prepared=Path(prepared.path), landmarks=Path(landmarks.path),
                  evalset=Path(evalset.path), model=Path(model.path), judge=Path(judge.path),
                  out=Path(metrics.path), plots=Path(plots.path), progress=False)
    log_metrics_file(metrics, metrics.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(params_yaml: str, attribute: str, model: Input[Model], metrics: Input[Metrics],
             split: Input[Dataset], registration: Output[Artifact]):
    """Register the generator in MLflow as `geogan-<attribute>` with alias `candidate`."""
    import tempfile
    from pathlib import Path

    from geogan.stages import register as stage
    from geogan.stages.pipeline import jsonable, write_params

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = write_params(params_yaml, tmp)
        summary = stage.run(cfg, attribute, model=Path(model.path), metrics=Path(metrics.path),
                            split=Path(split.path), out=Path(registration.path))
    registration.metadata.update(jsonable(summary))
