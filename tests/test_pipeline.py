"""The Kubeflow pipeline: the committed YAML is fresh, carries the cluster settings, and runs under kfp.local like DVC."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from geogan.config import ConfigError
from tests.helpers.params import ROOT, tiny_params_dict

pytest.importorskip("kfp")

from components import runtime as rt  # noqa: E402 - after the skip: the pipeline edge needs kfp
from components import settings as st  # noqa: E402
from pipelines import cli  # noqa: E402

COMPILED = ROOT / "pipelines" / "geogan_pipeline.yaml"
DIGEST_IMAGE = "ghcr.io/geogan/geogan-pipeline@sha256:" + "0" * 64
# Executor -> the pipeline parameter that sets its GPU count (0 = no GPU: a CPU backend or a CPU-only cluster).
GPU_EXECUTORS = {"exec-landmarks": "landmark_gpus", "exec-train-judge": "eval_gpus", "exec-train": "gpus_per_node",
                 "exec-evaluate": "eval_gpus", "exec-evaluate-2": "eval_gpus"}


def _load_package(path: Path) -> dict:
    """The pipeline spec, with the platform spec (second YAML document) under 'platforms'."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return {**spec, **platform}


@pytest.fixture(scope="module")
def compiled() -> dict:
    return _load_package(COMPILED)


def test_committed_yaml_equals_a_fresh_compile(tmp_path):
    fresh = cli.compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/geogan_pipeline.yaml is stale: run `geogan-pipeline compile` and commit the result")


def test_cli_compile_writes_the_package(tmp_path, capsys):
    cli.main(["compile", "--out", str(tmp_path / "p.yaml")])
    assert "compiled" in capsys.readouterr().out
    assert _load_package(tmp_path / "p.yaml")["pipelineInfo"]["name"] == "geogan"


def _all_tasks(compiled: dict) -> dict[str, dict]:
    """Every task of every DAG (root and sub-DAGs), by task key."""
    dags = [compiled["root"]["dag"], *(c["dag"] for c in compiled["components"].values() if "dag" in c)]
    return {key: task for dag in dags for key, task in dag["tasks"].items()}


def test_yaml_carries_gpus_only_where_used_pvc_shm_and_secrets(compiled):
    executors = compiled["deploymentSpec"]["executors"]
    platform = compiled["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(GPU_EXECUTORS) <= set(executors)
    for name, executor in executors.items():
        container = executor["container"]
        resources = container["resources"]
        assert resources["cpuRequest"] > 0 and resources["memoryRequest"] > 0, name
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, name
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        assert "pip install" not in " ".join(container["command"]), f"{name} would pip-install at run time"
        k8s = platform[name]
        assert [m["mountPath"] for m in k8s["pvcMount"]] == [st.DATA_MOUNT], name
        assert k8s["pvcMount"][0]["pvcNameParameter"]["runtimeValue"]["constant"] == st.DATA_PVC
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in k8s["secretAsEnv"]}
        assert secrets == {st.S3_SECRET: set(st.S3_SECRET_KEYS), st.MLFLOW_SECRET: set(st.MLFLOW_SECRET_KEYS)}, name
        gpu = resources.get("accelerator", {})
        if name in GPU_EXECUTORS:  # the count is a parameter that submit sets to 0 where nothing uses a GPU
            assert gpu["resourceType"] == "nvidia.com/gpu", name
            assert gpu["resourceCount"] == f"{{{{$.inputs.parameters['pipelinechannel--{GPU_EXECUTORS[name]}']}}}}"
            assert k8s["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
        else:
            assert not gpu and "tolerations" not in k8s, f"{name} should not ask for a GPU"
        assert "nodeSelector" not in k8s, f"{name}: a GPU request places the pod; a selector would bar CPU clusters"
        shm = [m for m in k8s.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert (shm == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": st.SHM_SIZE, "volumeName": "dshm"}]
                if name == "exec-train" else not shm), name


def test_every_parameter_a_task_reads_is_an_input_of_its_dag(compiled):
    """A task inside a loop or branch reads its parent DAG's inputs: each must be declared there, or the run
    fails with "Parent pipeline input argument ... not found" (a parameter used only in a resource setting)."""
    dags = {"root": compiled["root"], **{k: c for k, c in compiled["components"].items() if "dag" in c}}
    for name, dag in dags.items():
        declared = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        for key, task in dag["dag"]["tasks"].items():
            for param in task.get("inputs", {}).get("parameters", {}).values():
                read = param.get("componentInputParameter")
                assert read is None or read in declared, f"{name}/{key} reads {read}, not an input of {name}"


def test_every_step_has_a_display_name_and_the_evaluation_has_visuals(compiled):
    tasks = _all_tasks(compiled)
    steps = {k: t for k, t in tasks.items() if "componentRef" in t and not k.startswith(("condition", "for-loop"))}
    for key, task in steps.items():
        shown = task["taskInfo"]["name"]
        assert shown != key or key in {"ingest", "landmarks", "split", "train", "evaluate"}, key
        assert not shown[-1].isdigit(), f"{key}: display name {shown!r} looks like a deduplicated task key"
    assert tasks["evaluate-2"]["taskInfo"]["name"] == tasks["evaluate"]["taskInfo"]["name"] == "evaluate"
    outputs = compiled["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]
    assert {name: a["artifactType"]["schemaTitle"] for name, a in outputs.items()} == {
        "metrics": "system.Metrics", "plots": "system.Dataset", "table": "system.Markdown", "grids": "system.HTML"}


def test_yaml_loops_over_attributes_and_branches_to_a_trainjob(compiled):
    root = compiled["root"]
    params = root["inputDefinitions"]["parameters"]
    assert params["params_yaml"].get("isOptional") is not True
    assert params["attributes"]["defaultValue"] == ["Mustache", "Eyeglasses"]
    loops = [t for t in root["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and loops[0]["parameterIterator"]["items"]["inputParameter"].endswith("attributes")
    text = COMPILED.read_text()
    assert "pipelinechannel--train_nodes" in text and "multi-node" in text and "single-node" in text
    assert "train_trainjob" in text and "pytorchjob" not in text.lower()
    job = _all_tasks(compiled)["train-trainjob"]
    assert job["taskInfo"]["name"] == "train (Trainer v2 TrainJob)"
    assert "GPU" not in str(compiled["deploymentSpec"]["executors"]["exec-train-trainjob"]["container"]["resources"])
    # Every step that opens an MLflow run gets the KFP run id (the MLflow run's kfp.run_id tag).
    for key in ("train", "train-trainjob", "train-judge", "evaluate", "register"):
        run_id = _all_tasks(compiled)[key]["inputs"]["parameters"]["kfp_run_id"]
        assert run_id["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}", key


def test_every_dvc_stage_has_a_component():
    from components import stages

    names = {n for n in dir(stages) if hasattr(getattr(stages, n), "component_spec")}
    dvc_stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert dvc_stages <= names, f"no KFP component for {dvc_stages - names}"


def test_component_bodies_are_a_few_lines_over_one_helper():
    from components import stages

    for name in ("ingest", "landmarks", "train_judge", "split", "evalset", "register"):
        body = inspect.getsource(getattr(stages, name).python_func).split('"""')[-1]
        lines = [line for line in body.splitlines() if line.strip()]
        assert len(lines) <= 5 and "run_stage(" in body, f"{name}: {lines}"


def test_component_literal_defaults_match_the_shared_constants():
    # Component bodies are serialised into the YAML, so their defaults are literals, not the constants.
    from components import stages

    train = inspect.signature(stages.train.python_func).parameters
    job = inspect.signature(stages.train_trainjob.python_func).parameters
    assert train["work_root"].default == f"{st.DATA_MOUNT}/runs"
    assert job["shared_root"].default == st.DATA_MOUNT


# ---------------------------------------------------------------- submit


class _FakeKfpClient:
    def __init__(self, host, namespace=None):
        self.host, self.namespace, self.calls = host, namespace, []
        _FakeKfpClient.last = self

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self.calls.append((pipeline_file, kwargs))
        return SimpleNamespace(run_id="run-42")


def test_submit_passes_params_and_prints_the_run_url(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    url = cli.submit("http://kfp.example:8080/", ["Mustache", "Eyeglasses"], params, experiment="exp",
                     package=COMPILED, image=DIGEST_IMAGE, client_factory=_FakeKfpClient)
    assert url == "http://kfp.example:8080/#/runs/details/run-42"
    package, kwargs = _FakeKfpClient.last.calls[0]
    assert package == str(COMPILED) and kwargs["experiment_name"] == "exp"
    assert kwargs["arguments"]["params_yaml"] == params.read_text()
    assert kwargs["arguments"]["attributes"] == ["Mustache", "Eyeglasses"]
    assert kwargs["service_account"] == st.SERVICE_ACCOUNT
    assert kwargs["arguments"]["image"] == DIGEST_IMAGE
    # The tiny params use the exact (CPU) landmark backend: the landmarks step asks for no GPU.
    assert {k: kwargs["arguments"][k] for k in ("gpus_per_node", "landmark_gpus", "eval_gpus")} == {
        "gpus_per_node": 1, "landmark_gpus": 0, "eval_gpus": 1}


def test_submit_cpu_only_asks_for_no_gpu_and_fan_asks_for_one(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict(**{"landmarks.backend": "fan"})))
    for cpu_only, expected in ((True, (0, 0, 0)), (False, (2, 1, 1))):
        cli.submit("http://x", ["Mustache"], params, package=COMPILED, image=DIGEST_IMAGE, gpus_per_node=2,
                   cpu_only=cpu_only, client_factory=_FakeKfpClient)
        arguments = _FakeKfpClient.last.calls[0][1]["arguments"]
        assert (arguments["gpus_per_node"], arguments["landmark_gpus"], arguments["eval_gpus"]) == expected


def test_resolve_image_pins_a_tag_to_its_digest(tmp_path, monkeypatch):
    assert cli.resolve_image(DIGEST_IMAGE) == DIGEST_IMAGE
    assert cli.resolve_image("ghcr.io/x/y:1.0", allow_tag=True) == "ghcr.io/x/y:1.0"
    monkeypatch.setenv("PATH", str(tmp_path))  # no crane, skopeo or docker
    with pytest.raises(ConfigError, match=r"--image ghcr.io/x/y:1.0: cannot resolve.*NAME@sha256"):
        cli.resolve_image("ghcr.io/x/y:1.0")
    docker = tmp_path / "docker"  # docker without buildx: its usage text, many lines, exit 1
    docker.write_text("#!/bin/sh\necho 'Usage:  docker [OPTIONS] COMMAND' >&2\necho >&2\necho 'A self-sufficient runtime' >&2\n"
                      "exit 1\n")
    docker.chmod(0o755)
    with pytest.raises(ConfigError) as refused:
        cli.resolve_image("ghcr.io/x/y:1.0")
    assert "\n" not in str(refused.value) and "docker: Usage:  docker [OPTIONS] COMMAND)" in str(refused.value)
    docker.unlink()
    crane = tmp_path / "crane"  # a registry client that answers like `crane digest`
    crane.write_text("#!/bin/sh\necho sha256:" + "b" * 64 + "\n")
    crane.chmod(0o755)
    assert cli.resolve_image("ghcr.io/x/y:1.0") == "ghcr.io/x/y@sha256:" + "b" * 64
    assert cli.resolve_image("localhost:5000/y") == "localhost:5000/y@sha256:" + "b" * 64


def test_submit_rejects_an_attribute_not_in_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    with pytest.raises(ConfigError, match="Mustach.*did you mean 'Mustache'"):
        cli.submit("http://x", ["Mustach"], params, package=COMPILED, client_factory=_FakeKfpClient)


def test_cli_submit_prints_the_url(tmp_path, monkeypatch, capsys):
    import kfp

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.setattr(kfp, "Client", _FakeKfpClient)
    monkeypatch.setattr("geogan.tracking.probe", lambda url, *a, **k: 200)  # the fake host "answers"
    cli.main(["submit", "--host", "http://h:1", "--attribute", "Mustache", "--params", str(params),
             "--package", str(COMPILED), "--experiment", "e", "--no-cache", "--image", DIGEST_IMAGE])
    assert capsys.readouterr().out.strip() == "http://h:1/#/runs/details/run-42"
    assert _FakeKfpClient.last.calls[0][1]["enable_caching"] is False


# ---------------------------------------------------------------- kfp.local vs the DVC path


def _dvc_commands(attributes: list[str]) -> list[str]:
    """dvc.yaml's commands in stage order, foreach expanded (what `dvc repro` runs)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = []
    for stage in stages.values():
        if "foreach" in stage:
            commands += [stage["do"]["cmd"].replace("${item}", a) for a in attributes]
        else:
            commands.append(stage["cmd"])
    return commands


@pytest.mark.slow
def test_kfp_local_runs_the_pipeline_like_the_dvc_path(tmp_path, monkeypatch):
    """The whole pipeline under kfp.local (SubprocessRunner, no Docker) on the tiny synthetic config,
    then dvc.yaml's commands on the same params: same prepared data, landmarks, splits and evaluation sets,
    same metric keys."""
    from kfp import local

    from pipelines.geogan_pipeline import geogan_pipeline

    params = tiny_params_dict(**{"evaluate.fid": "off"})
    attributes = list(params["attributes"])
    params_text = yaml.safe_dump(params, sort_keys=False)

    # KFP path (each step a subprocess of this interpreter; MLflow in its own sqlite file).
    kfp_dir = tmp_path / "kfp"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{kfp_dir}/mlflow.db")
    kfp_dir.mkdir()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(kfp_dir / "root"),
               raise_on_error=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "non-Python base image" under SubprocessRunner
        geogan_pipeline(params_yaml=params_text, attributes=attributes, work_root=str(kfp_dir / "runs"))
    (run_dir,) = (kfp_dir / "root").iterdir()

    # DVC path: dvc.yaml's own commands, in a folder of their own.
    dvc_dir = tmp_path / "dvc"
    dvc_dir.mkdir()
    (dvc_dir / "params.yaml").write_text(params_text)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{dvc_dir}/mlflow.db")
    launcher_env = {**os.environ, "GEOGAN_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    for cmd in _dvc_commands(attributes):
        argv = shlex.split(cmd)
        assert argv[0] == "bin/geogan-stage"
        subprocess.run([str(ROOT / argv[0]), *argv[1:]], cwd=dvc_dir, env=launcher_env, check=True)

    # Shared steps: byte-identical outputs.
    for rel in ("manifest.csv", "images.npy"):
        assert (run_dir / "ingest" / "prepared" / rel).read_bytes() == (dvc_dir / "data/prepared" / rel).read_bytes()
    assert ((run_dir / "landmarks" / "landmarks" / "landmarks.npy").read_bytes()
            == (dvc_dir / "data/landmarks/landmarks.npy").read_bytes())
    assert (run_dir / "train-judge" / "judge" / "judge.pt").is_file()

    # Per attribute (ParallelFor iterations are for-loop-*-iteration-<i>, in attributes order).
    iterations = sorted(run_dir.glob("for-loop-*-iteration-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(iterations) == len(attributes)
    for attribute, it in zip(attributes, iterations):
        # Task folders are named per branch: the single-node branch holds train, evaluate-2, register-2.
        (evaluate_dir,) = it.glob("evaluate*")
        (register_dir,) = it.glob("register*")
        assert not list(it.glob("train-trainjob*")), "train_nodes=1 must not take the TrainJob branch"
        kfp_split = it / "split" / "split"
        assert kfp_split.read_bytes() == (dvc_dir / "data/splits" / f"{attribute}.json").read_bytes(), attribute
        kfp_evalset = it / "evalset" / "evalset"
        assert kfp_evalset.read_bytes() == (dvc_dir / "data/evalsets" / f"{attribute}.json").read_bytes(), attribute
        assert (it / "train" / "generator" / "generator.pt").is_file()
        kfp_metrics = json.loads((evaluate_dir / "metrics").read_text())
        dvc_metrics = json.loads((dvc_dir / "metrics" / f"{attribute}.json").read_text())
        assert set(kfp_metrics) == set(dvc_metrics), attribute
        for method in ("model", "copy_paste", "do_nothing"):
            assert set(kfp_metrics[method]) == set(dvc_metrics[method]), (attribute, method)
        assert kfp_metrics["train_steps"] == dvc_metrics["train_steps"], attribute
        same_set = {k: v for k, v in dvc_metrics["eval_set"].items() if k != "file"}  # the file's path is each runner's
        assert {k: v for k, v in kfp_metrics["eval_set"].items() if k != "file"} == same_set, attribute
        logged = json.loads((evaluate_dir / "executor_output.json").read_text())
        metadata = logged["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        assert metadata == rt.scalar_metrics(kfp_metrics), "the Metrics artefact should carry every number"
        kfp_registry = json.loads((register_dir / "registration").read_text())
        dvc_registry = json.loads((dvc_dir / "registry" / f"{attribute}.json").read_text())
        assert set(kfp_registry) == set(dvc_registry) and kfp_registry["alias"] == "candidate"
        assert kfp_registry["registered_model"] == dvc_registry["registered_model"] == f"geogan-{attribute}"
