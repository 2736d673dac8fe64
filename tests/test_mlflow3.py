"""MLflow 3 used fully, through the API of a real server: run context, system metrics, input datasets,
step images, distinct names, a described model version, metrics on the LoggedModel, the judge's params and model."""

from __future__ import annotations


import pytest

pytest.importorskip("mlflow", reason="mlflow not installed")
pytest.importorskip("psutil", reason="psutil not installed (MLflow's system metrics need it)")

from tests.helpers.data import make_tiny_data  # noqa: E402
from tests.helpers.params import tiny_config  # noqa: E402
from tests.helpers.mlflow import mlflow_server  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's stages for one attribute (judge, evalset, train, evaluate, register) against a tracking server."""
    import mlflow

    from geogan.stages import evalset, evaluate, register, train, train_judge

    tmp = tmp_path_factory.mktemp("mlflow3")
    data = make_tiny_data(tmp / "data", ("Mustache",), identities=40)
    cfg = tiny_config(**{"evaluate.fid": "off", "judge.max_steps": 20, "judge.eval_every": 10, "evaluate.sources": 6,
                         "evaluate.references": 3, "evaluate.bootstrap": 300, "split.val_fraction": 0.2})
    model, evalset_file = tmp / "models" / "Mustache", tmp / "evalsets" / "Mustache.json"
    with mlflow_server(tmp / "server") as uri, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        train_judge.run(cfg, data.prepared, tmp / "judge", progress=False)
        evalset.run(cfg, "Mustache", data.prepared, data.landmarks, evalset_file)
        train.run(cfg, "Mustache", data.prepared, data.landmarks, data.splits["Mustache"], model,
                  tmp / "runs" / "Mustache", progress=False)
        evaluate.run(cfg, "Mustache", data.prepared, data.landmarks, evalset_file, model, tmp / "judge",
                     tmp / "metrics.json", tmp / "plots", progress=False)
        record = register.run(cfg, "Mustache", model, tmp / "metrics.json", data.splits["Mustache"],
                              tmp / "registry.json")
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        exp = client.get_experiment_by_name("geogan-Mustache")
        (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train"]
        yield {"client": client, "run": run, "record": record, "data": data, "tmp": tmp}


def test_training_run_has_context_tags_and_a_distinct_name(demo):
    run, judge_runs = demo["run"], demo["client"].search_runs(
        [demo["client"].get_experiment_by_name("geogan-judge").experiment_id])
    tags = run.data.tags
    assert tags["mlflow.source.name"] and tags["mlflow.user"] and tags["mlflow.project.entryPoint"] == "train"
    assert tags["git_commit"] and tags["git_commit"] != "unknown"
    assert run.info.run_name.startswith("Mustache train 4 steps")
    assert run.info.run_name not in {r.info.run_name for r in judge_runs}


def test_training_run_has_system_metrics(demo):
    metrics = demo["run"].data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_training_run_has_its_input_datasets_with_digests(demo):
    from geogan.data.split import split_fingerprint
    from geogan.stages.train_judge import data_version

    data = demo["data"]
    inputs = {d.dataset.name: d for d in demo["run"].inputs.dataset_inputs}
    assert {"prepared", "split-Mustache", "evalset-Mustache"} <= set(inputs)
    assert inputs["prepared"].dataset.digest == data_version(data.prepared)[:16]
    assert inputs["split-Mustache"].dataset.digest == split_fingerprint(data.splits["Mustache"])[:16]
    contexts = {name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for name, d in inputs.items()}
    assert contexts["prepared"] == contexts["split-Mustache"] == "training" and contexts["evalset-Mustache"] == "evaluation"


def test_training_grids_are_step_indexed_images(demo):
    client, run = demo["client"], demo["run"]
    images = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
    # MLflow names a key/step image images/<key>+step+<step>+timestamp+<ms>+<uuid>.png (and a compressed twin).
    assert any(p.startswith("images/grids+step+4+") and p.endswith(".png") for p in images), images


def test_model_version_is_described_and_its_logged_model_carries_the_metrics(demo):
    client, record = demo["client"], demo["record"]
    version = client.get_model_version(record["registered_model"], record["version"])
    assert "**Mustache**" in version.description and "trained 4 steps" in version.description
    assert record["data_version"][:12] in version.description and "Evaluated on set" in version.description
    from geogan.registry import logged_model_id

    logged = client.get_logged_model(logged_model_id(version))
    # The registration's figures, tied to the evaluation set they were measured on (MLflow may add the run's own).
    scored = [m for m in logged.metrics if m.dataset_name == "evalset-Mustache"]
    assert any(m.key.startswith("eval/transfer_success") for m in scored), [m.key for m in logged.metrics]
    assert {m.dataset_digest for m in scored} == {version.tags["eval.set_digest"][:16]}


def test_judge_run_logs_params_and_its_model(demo):
    client = demo["client"]
    (run,) = client.search_runs([client.get_experiment_by_name("geogan-judge").experiment_id])
    assert run.data.params["seed"] and any(k.startswith("judge.") for k in run.data.params)
    (logged,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id and run.info.status == "FINISHED"
