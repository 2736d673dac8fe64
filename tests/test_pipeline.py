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
from geogan.stages import pipeline as gp
from tests.helpers.params import ROOT, tiny_params_dict

pytest.importorskip("kfp")

COMPILED = ROOT / "pipelines" / "geogan_pipeline.yaml"
GPU_EXECUTORS = {"exec-landmarks", "exec-train-judge", "exec-train", "exec-evaluate", "exec-evaluate-2"}


def _load_package(path: Path) -> dict:
    """The pipeline spec, with the platform spec (second YAML document) under 'platforms'."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return {**spec, **platform}


@pytest.fixture(scope="module")
def compiled() -> dict:
    return _load_package(COMPILED)


def test_committed_yaml_equals_a_fresh_compile(tmp_path):
    fresh = gp.compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/geogan_pipeline.yaml is stale: run `geogan pipeline compile` and commit the result")


def test_cli_compile_writes_the_package(tmp_path, capsys):
    gp.main(["compile", "--out", str(tmp_path / "p.yaml")])
    assert "compiled" in capsys.readouterr().out
    assert _load_package(tmp_path / "p.yaml")["pipelineInfo"]["name"] == "geogan"


def test_yaml_carries_gpus_pvc_and_secrets(compiled):
    executors = compiled["deploymentSpec"]["executors"]
    platform = compiled["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert GPU_EXECUTORS <= set(executors)
    for name, executor in executors.items():
        container = executor["container"]
        resources = container["resources"]
        assert resources["cpuRequest"] > 0 and resources["memoryRequest"] > 0, name
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, name
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        assert "pip install" not in " ".join(container["command"]), f"{name} would pip-install at run time"
        k8s = platform[name]
        assert [m["mountPath"] for m in k8s["pvcMount"]] == [gp.DATA_MOUNT], name
        assert k8s["pvcMount"][0]["pvcNameParameter"]["runtimeValue"]["constant"] == gp.DATA_PVC
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in k8s["secretAsEnv"]}
        assert secrets == {gp.S3_SECRET: set(gp.S3_SECRET_KEYS), gp.MLFLOW_SECRET: set(gp.MLFLOW_SECRET_KEYS)}, name
        gpu = resources.get("accelerator", {})
        if name in GPU_EXECUTORS:
            assert gpu["resourceType"] == "nvidia.com/gpu", name
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}, name
            assert k8s["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
        else:
            assert not gpu and "nodeSelector" not in k8s, f"{name} should not ask for a GPU"
    train_gpus = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert train_gpus["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"


def test_yaml_loops_over_attributes_and_branches_on_nodes(compiled):
    root = compiled["root"]
    assert root["inputDefinitions"]["parameters"]["params_yaml"].get("isOptional") is not True
    assert root["inputDefinitions"]["parameters"]["attributes"]["defaultValue"] == ["Mustache", "Eyeglasses"]
    loops = [t for t in root["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and loops[0]["parameterIterator"]["items"]["inputParameter"].endswith("attributes")
    text = COMPILED.read_text()
    assert "pipelinechannel--train_nodes" in text and "multi-node" in text and "single-node" in text
    job_inputs = compiled["components"]["comp-train-pytorchjob"]["inputDefinitions"]["parameters"]
    assert job_inputs["run_id"]["parameterType"] == "STRING"


def test_every_dvc_stage_has_a_component():
    import components

    dvc_stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert dvc_stages <= set(components.__all__), f"no KFP component for {dvc_stages - set(components.__all__)}"


def test_component_literal_defaults_match_the_shared_constants():
    # Component bodies are serialised into the YAML, so their defaults are literals, not the constants.
    from components import stages

    train = inspect.signature(stages.train.python_func).parameters
    job = inspect.signature(stages.train_pytorchjob.python_func).parameters
    assert train["work_root"].default == f"{gp.DATA_MOUNT}/runs"
    assert job["pvc_name"].default == gp.DATA_PVC and job["shared_root"].default == gp.DATA_MOUNT


# ---------------------------------------------------------------- helpers the components call


def test_write_params_validates_and_names_the_parameter(tmp_path):
    text = yaml.safe_dump(tiny_params_dict())
    path, cfg = gp.write_params(text, tmp_path)
    assert path.read_text() == text and cfg.train.steps == 4
    bad = tiny_params_dict()
    bad["train"]["stpes"] = 3
    with pytest.raises(ConfigError, match=r"params_yaml.*stpes"):
        gp.write_params(yaml.safe_dump(bad), tmp_path / "bad")


def test_scalar_metrics_flattens_and_keeps_finite_numbers():
    values = {"fid": 12.5, "n": 3, "ok": True, "name": "x", "nan": float("nan"), "geo": {"err": 0.1, "l": [1]}}
    assert gp.scalar_metrics(values) == {"fid": 12.5, "n": 3.0, "geo.err": 0.1}


def test_log_metrics_file_logs_onto_the_artifact(tmp_path):
    logged = {}
    (tmp_path / "m.json").write_text(json.dumps({"a": 1, "b": {"c": 2.5}, "s": "text"}))
    gp.log_metrics_file(SimpleNamespace(log_metric=logged.__setitem__), tmp_path / "m.json")
    assert logged == {"a": 1.0, "b.c": 2.5}


def test_torchrun_command_for_one_pod_and_for_a_pytorchjob(tmp_path):
    args = gp.train_args(tmp_path / "p.yaml", "Mustache", Path("pre"), Path("lm"), Path("s.json"), Path("o"), Path("w"))
    single = gp.torchrun_command(4, args)
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert single[3:10] == ["--standalone", "--nproc-per-node", "4", "-m", "geogan.stages.train", "--params",
                            str(tmp_path / "p.yaml")]
    multi = gp.torchrun_command(8, args, nnodes=3, python="python")
    assert multi[:6] == ["python", "-m", "torch.distributed.run", "--nnodes", "3", "--nproc-per-node"]
    assert "--no-progress" in multi


def test_train_args_match_the_dvc_train_command(tmp_path):
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]["cmd"]
    dvc_flags = {w for w in shlex.split(cmd) if w.startswith("--")}
    ours = {w for w in gp.train_args(Path("p"), "A", Path("a"), Path("b"), Path("c"), Path("d"), Path("e"))
            if w.startswith("--")}
    assert dvc_flags <= ours


def test_work_dir_is_keyed_by_attribute_and_config(tmp_path):
    _, cfg = gp.write_params(yaml.safe_dump(tiny_params_dict()), tmp_path / "a")
    _, same = gp.write_params(yaml.safe_dump(tiny_params_dict()) + "# a comment\n", tmp_path / "b")
    _, other = gp.write_params(yaml.safe_dump(tiny_params_dict(**{"train.steps": 5})), tmp_path / "c")
    root = tmp_path / "runs"
    assert gp.work_dir(root, "Mustache", cfg) == gp.work_dir(root, "Mustache", same)
    assert gp.work_dir(root, "Mustache", cfg).parent == root / "Mustache"
    assert gp.work_dir(root, "Mustache", cfg) != gp.work_dir(root, "Mustache", other)


def test_k8s_name_is_dns_1123():
    assert gp.k8s_name("geogan", "Wearing_Hat", "1234ABCD") == "geogan-wearing-hat-1234abcd"
    assert len(gp.k8s_name("geogan", "x" * 100)) <= 40
    with pytest.raises(ValueError):
        gp.k8s_name("__")


class _FakeTrainingClient:
    """Stands in for kubeflow-training's TrainingClient: 'runs' the job by writing its output."""

    namespace = "kubeflow"

    def __init__(self, exists: bool = False):
        self.created: list[dict] = []
        self.exists = exists
        self.custom_api = SimpleNamespace(create_namespaced_custom_object=self._create)

    def _create(self, group, version, namespace, plural, body):
        from kubernetes.client.exceptions import ApiException

        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        self.created.append(body)
        if self.exists:
            raise ApiException(status=409, reason="AlreadyExists")

    def wait_for_job_conditions(self, name, namespace, job_kind, expected_conditions, wait_timeout, polling_interval):
        command = self.created[-1]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "generator.pt").write_bytes(b"weights")
        (out / "meta.json").write_text(json.dumps({"attribute": "Mustache", "step": 4, "mlflow_run_id": "r1"}))
        return SimpleNamespace(status=SimpleNamespace(conditions=[SimpleNamespace(type="Succeeded")]))


@pytest.mark.parametrize("exists", [False, True], ids=["new-job", "retried-task"])
def test_run_pytorchjob_stages_creates_awaits_and_copies(tmp_path, exists):
    pytest.importorskip("kubeflow.training")
    inputs = tmp_path / "kfp"
    (inputs / "prepared").mkdir(parents=True)
    (inputs / "prepared" / "manifest.csv").write_text("index,image\n")
    (inputs / "landmarks").mkdir()
    (inputs / "split.json").write_text("{}")
    client = _FakeTrainingClient(exists=exists)
    summary = gp.run_pytorchjob(yaml.safe_dump(tiny_params_dict()), "Mustache", inputs / "prepared",
                                inputs / "landmarks", inputs / "split.json", tmp_path / "out" / "generator",
                                run_id="0123456789abcdef", image="img:1", nodes=3, gpus_per_node=2,
                                shared_root=tmp_path / "pvc", client=client)
    assert summary["job"] == "geogan-mustache-01234567" and summary["condition"] == "Succeeded"
    assert (tmp_path / "out" / "generator" / "generator.pt").read_bytes() == b"weights"
    stage = tmp_path / "pvc" / "jobs" / "0123456789abcdef" / "Mustache"
    assert (stage / "prepared" / "manifest.csv").is_file() and (stage / "split.json").is_file()
    job = client.created[0]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "2"
    assert gp.model_metadata(tmp_path / "out" / "generator") == {"attribute": "Mustache", "step": 4,
                                                                 "mlflow_run_id": "r1"}


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
    url = gp.submit("http://kfp.example:8080/", ["Mustache", "Eyeglasses"], params, experiment="exp",
                    package=COMPILED, client_factory=_FakeKfpClient)
    assert url == "http://kfp.example:8080/#/runs/details/run-42"
    package, kwargs = _FakeKfpClient.last.calls[0]
    assert package == str(COMPILED) and kwargs["experiment_name"] == "exp"
    assert kwargs["arguments"]["params_yaml"] == params.read_text()
    assert kwargs["arguments"]["attributes"] == ["Mustache", "Eyeglasses"]
    assert kwargs["service_account"] == gp.SERVICE_ACCOUNT


def test_submit_rejects_an_attribute_not_in_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    with pytest.raises(ConfigError, match="Mustach.*did you mean 'Mustache'"):
        gp.submit("http://x", ["Mustach"], params, package=COMPILED, client_factory=_FakeKfpClient)


def test_cli_submit_prints_the_url(tmp_path, monkeypatch, capsys):
    import kfp

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.setattr(kfp, "Client", _FakeKfpClient)
    monkeypatch.setattr("geogan.tracking.probe", lambda url, *a, **k: 200)  # the fake host "answers"
    gp.main(["submit", "--host", "http://h:1", "--attribute", "Mustache", "--params", str(params),
             "--package", str(COMPILED), "--experiment", "e", "--no-cache"])
    assert capsys.readouterr().out.strip() == "http://h:1/#/runs/details/run-42"
    assert _FakeKfpClient.last.calls[0][1]["enable_caching"] is False


def _artifact(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path), metadata={})


@pytest.mark.slow
def test_train_component_uses_torchrun_when_the_pod_has_several_gpus(tmp_path, monkeypatch):
    """The component body itself, with the GPU count faked to 2: torchrun runs 2 CPU (gloo) ranks."""
    from components import stages as components
    from geogan.stages import ingest, landmarks, split

    params_text = yaml.safe_dump(tiny_params_dict(**{"train.steps": 2, "train.checkpoint_every": 2}))
    _, cfg = gp.write_params(params_text, tmp_path)
    ingest.run(cfg, out=tmp_path / "prepared", progress=False)
    landmarks.run(cfg, prepared=tmp_path / "prepared", out=tmp_path / "landmarks", progress=False)
    split.run(cfg, "Mustache", tmp_path / "prepared", tmp_path / "landmarks", tmp_path / "split.json")
    monkeypatch.setattr(gp, "gpu_count", lambda: 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    generator = _artifact(tmp_path / "generator")
    components.train.python_func(params_yaml=params_text, attribute="Mustache",
                                 prepared=_artifact(tmp_path / "prepared"), landmarks=_artifact(tmp_path / "landmarks"),
                                 split=_artifact(tmp_path / "split.json"), generator=generator,
                                 work_root=str(tmp_path / "runs"))
    assert (tmp_path / "generator" / "generator.pt").is_file()
    assert generator.metadata["nproc_per_node"] == 2 and generator.metadata["step"] == 2
    assert list((tmp_path / "runs" / "Mustache").iterdir()) == [gp.work_dir(tmp_path / "runs", "Mustache", cfg)]


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
        assert not list(it.glob("train-pytorchjob*")), "train_nodes=1 must not take the PyTorchJob branch"
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
        assert metadata == gp.scalar_metrics(kfp_metrics), "the Metrics artefact should carry every number"
        kfp_registry = json.loads((register_dir / "registration").read_text())
        dvc_registry = json.loads((dvc_dir / "registry" / f"{attribute}.json").read_text())
        assert set(kfp_registry) == set(dvc_registry) and kfp_registry["alias"] == "candidate"
        assert kfp_registry["registered_model"] == dvc_registry["registered_model"] == f"geogan-{attribute}"
