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
from tests.conftest import ROOT, tiny_params_dict

pytest.importorskip("kfp")

from components import runtime as rt  # noqa: E402 - after the skip: the pipeline edge needs kfp
from components import settings as st  # noqa: E402
from components import trainjob as tj  # noqa: E402
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


# ---------------------------------------------------------------- helpers the components call


def test_write_params_validates_and_names_the_parameter(tmp_path):
    text = yaml.safe_dump(tiny_params_dict())
    path, cfg = rt.write_params(text, tmp_path)
    assert path.read_text() == text and cfg.train.steps == 4
    bad = tiny_params_dict()
    bad["train"]["stpes"] = 3
    with pytest.raises(ConfigError, match=r"params_yaml.*stpes"):
        rt.write_params(yaml.safe_dump(bad), tmp_path / "bad")


def test_scalar_metrics_flattens_and_keeps_finite_numbers():
    values = {"fid": 12.5, "n": 3, "ok": True, "name": "x", "nan": float("nan"), "geo": {"err": 0.1, "l": [1]}}
    assert rt.scalar_metrics(values) == {"fid": 12.5, "n": 3.0, "geo.err": 0.1}


def test_log_metrics_file_logs_onto_the_artifact(tmp_path):
    logged = {}
    (tmp_path / "m.json").write_text(json.dumps({"a": 1, "b": {"c": 2.5}, "s": "text"}))
    rt.log_metrics_file(SimpleNamespace(log_metric=logged.__setitem__), tmp_path / "m.json")
    assert logged == {"a": 1.0, "b.c": 2.5}


def test_torchrun_command_for_one_pod_and_for_a_trainjob_node(tmp_path):
    args = rt.train_args(tmp_path / "p.yaml", "Mustache", Path("pre"), Path("lm"), Path("s.json"), Path("o"), Path("w"))
    single = rt.torchrun_command(args, nproc_per_node=4)
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert single[3:10] == ["--standalone", "--nproc-per-node", "4", "-m", "geogan.stages.train", "--params",
                            str(tmp_path / "p.yaml")]
    node = rt.torchrun_command(args, python="python")  # sizes and rendezvous from the Trainer's PET_* variables
    assert node[:5] == ["python", "-m", "torch.distributed.run", "-m", "geogan.stages.train"]
    assert "--no-progress" in node


def test_train_args_match_the_dvc_train_command(tmp_path):
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]["cmd"]
    dvc_flags = {w for w in shlex.split(cmd) if w.startswith("--")}
    ours = {w for w in rt.train_args(Path("p"), "A", Path("a"), Path("b"), Path("c"), Path("d"), Path("e"))
            if w.startswith("--")}
    assert dvc_flags <= ours


def test_work_dir_is_keyed_by_attribute_and_config(tmp_path):
    _, cfg = rt.write_params(yaml.safe_dump(tiny_params_dict()), tmp_path / "a")
    _, same = rt.write_params(yaml.safe_dump(tiny_params_dict()) + "# a comment\n", tmp_path / "b")
    _, other = rt.write_params(yaml.safe_dump(tiny_params_dict(**{"train.steps": 5})), tmp_path / "c")
    root = tmp_path / "runs"
    assert rt.work_dir(root, "Mustache", cfg) == rt.work_dir(root, "Mustache", same)
    assert rt.work_dir(root, "Mustache", cfg).parent == root / "Mustache"
    assert rt.work_dir(root, "Mustache", cfg) != rt.work_dir(root, "Mustache", other)


def test_k8s_name_is_dns_1123():
    assert rt.k8s_name("geogan", "Wearing_Hat", "1234ABCD") == "geogan-wearing-hat-1234abcd"
    assert len(rt.k8s_name("geogan", "x" * 100)) <= 40
    with pytest.raises(ValueError):
        rt.k8s_name("__")


class _FakeTrainerClient:
    """Stands in for kubeflow's TrainerClient (the methods run_trainjob calls): 'runs' the job by writing its output."""

    def __init__(self, exists: bool = False, status: str = "Complete"):
        from kubeflow.trainer.constants import constants

        self.constants, self.created, self.exists, self.status, self.waits = constants, [], exists, status, []
        api = SimpleNamespace(create_namespaced_custom_object=self._create)
        self.backend = SimpleNamespace(custom_api=api, namespace="kubeflow")

    def _create(self, group, version, namespace, plural, body):
        from kubernetes.client.exceptions import ApiException

        assert (group, version, plural) == (self.constants.GROUP, self.constants.VERSION,
                                            self.constants.TRAINJOB_PLURAL)
        self.created.append(body)
        if self.exists:
            raise ApiException(status=409, reason="AlreadyExists")

    def wait_for_job_status(self, name, status, timeout, polling_interval):
        assert status <= {self.constants.TRAINJOB_RUNNING, self.constants.TRAINJOB_COMPLETE,
                          self.constants.TRAINJOB_FAILED}
        self.waits.append(status)
        if self.constants.TRAINJOB_RUNNING not in status and self.status == "Complete":
            command = self.created[-1]["spec"]["trainer"]["command"]
            out = Path(command[command.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "generator.pt").write_bytes(b"weights")
            (out / "meta.json").write_text(json.dumps({"attribute": "Mustache", "step": 4, "mlflow_run_id": "r1"}))
        return SimpleNamespace(name=name, status=self.status if len(self.waits) > 1 else "Running")

    def get_job_logs(self, name, follow):
        assert follow
        yield from ("step 1\n", "step 2\n")


def _kfp_inputs(tmp_path: Path) -> Path:
    inputs = tmp_path / "kfp"
    (inputs / "prepared").mkdir(parents=True)
    (inputs / "prepared" / "manifest.csv").write_text("index,image\n")
    (inputs / "landmarks").mkdir()
    (inputs / "split.json").write_text("{}")
    return inputs


@pytest.mark.parametrize("exists", [False, True], ids=["new-job", "retried-task"])
def test_run_trainjob_stages_creates_streams_awaits_and_copies(tmp_path, exists):
    pytest.importorskip("kubeflow.trainer")
    inputs, client, logged = _kfp_inputs(tmp_path), _FakeTrainerClient(exists=exists), []
    summary = tj.run_trainjob(yaml.safe_dump(tiny_params_dict()), "Mustache", inputs / "prepared",
                              inputs / "landmarks", inputs / "split.json", tmp_path / "out" / "generator",
                              run_id="0123456789abcdef", image="img@sha256:" + "a" * 64, nodes=3, gpus_per_node=2,
                              shared_root=tmp_path / "pvc", client=client, echo=logged.append)
    assert summary["trainjob"] == "geogan-mustache-01234567" and summary["status"] == "Complete"
    assert logged == ["step 1", "step 2"], "the job's log is streamed into the step's log"
    assert (tmp_path / "out" / "generator" / "generator.pt").read_bytes() == b"weights"
    stage = tmp_path / "pvc" / "jobs" / "0123456789abcdef" / "Mustache"
    assert (stage / "prepared" / "manifest.csv").is_file() and (stage / "split.json").is_file()
    trainer = client.created[0]["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 2)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert client.created[0]["spec"]["runtimeRef"]["name"] == st.TRAINING_RUNTIME
    assert client.created[0]["metadata"]["labels"]["pipeline/runid"] == "0123456789abcdef"
    assert rt.model_metadata(tmp_path / "out" / "generator") == {"attribute": "Mustache", "step": 4,
                                                                 "mlflow_run_id": "r1"}


def test_run_trainjob_names_a_failed_job_and_copies_nothing(tmp_path):
    pytest.importorskip("kubeflow.trainer")
    inputs = _kfp_inputs(tmp_path)
    with pytest.raises(RuntimeError, match=r"TrainJob kubeflow/geogan-mustache-01234567 ended Failed"):
        tj.run_trainjob(yaml.safe_dump(tiny_params_dict()), "Mustache", inputs / "prepared", inputs / "landmarks",
                        inputs / "split.json", tmp_path / "out", run_id="0123456789abcdef", image="img", nodes=2,
                        gpus_per_node=1, shared_root=tmp_path / "pvc", client=_FakeTrainerClient(status="Failed"),
                        echo=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_run_stage_maps_artifacts_to_paths_and_records_the_summary(tmp_path):
    out = SimpleNamespace(path=str(tmp_path / "prepared"), metadata={})
    summary = rt.run_stage("ingest", yaml.safe_dump(tiny_params_dict()), out=out, metadata_to=out)
    assert (tmp_path / "prepared" / "manifest.csv").is_file() and out.metadata == summary and summary


def test_metrics_markdown_sets_methods_side_by_side_and_links_the_run(monkeypatch):
    metrics = {"model": {"acc": 0.9, "geo": {"err": 0.25}}, "copy_paste": {"acc": 0.5}, "train_steps": 4}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    text = rt.metrics_markdown(metrics, "Mustache", rt.mlflow_run_url("abc"))
    assert "| metric | model | copy_paste |" in text and "| acc | 0.9 | 0.5 |" in text
    assert "| geo.err | 0.25 |  |" in text
    assert "[http://mlflow:5000/#/runs/abc]" in text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert rt.mlflow_run_url("abc") is None


def test_grids_html_inlines_every_png(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "grid.png").write_bytes(b"\x89PNG fake")
    html = rt.grids_html(tmp_path, "Mustache")
    assert html.count("<img ") == 1 and "data:image/png;base64,iVBORyBmYWtl" in html


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


def _artifact(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path), metadata={})


@pytest.mark.slow
def test_train_component_uses_torchrun_when_the_pod_has_several_gpus(tmp_path, monkeypatch):
    """The component body itself, with the GPU count faked to 2: torchrun runs 2 CPU (gloo) ranks."""
    from components import stages as components
    from geogan.stages import ingest, landmarks, split

    params_text = yaml.safe_dump(tiny_params_dict(**{"train.steps": 2, "train.checkpoint_every": 2}))
    _, cfg = rt.write_params(params_text, tmp_path)
    ingest.run(cfg, out=tmp_path / "prepared", progress=False)
    landmarks.run(cfg, prepared=tmp_path / "prepared", out=tmp_path / "landmarks", progress=False)
    split.run(cfg, "Mustache", tmp_path / "prepared", tmp_path / "landmarks", tmp_path / "split.json")
    monkeypatch.setattr(rt, "gpu_count", lambda: 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    generator = _artifact(tmp_path / "generator")
    components.train.python_func(params_yaml=params_text, attribute="Mustache",
                                 prepared=_artifact(tmp_path / "prepared"), landmarks=_artifact(tmp_path / "landmarks"),
                                 split=_artifact(tmp_path / "split.json"), generator=generator,
                                 work_root=str(tmp_path / "runs"))
    assert (tmp_path / "generator" / "generator.pt").is_file()
    assert generator.metadata["nproc_per_node"] == 2 and generator.metadata["step"] == 2
    assert list((tmp_path / "runs" / "Mustache").iterdir()) == [rt.work_dir(tmp_path / "runs", "Mustache", cfg)]


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


# ---------------------------------------------------------------- provenance


def test_mlflow_runs_of_a_kfp_step_are_tagged_with_the_kfp_run(monkeypatch):
    pytest.importorskip("mlflow")
    from geogan.tracking import context_tags

    monkeypatch.delenv(rt.KFP_RUN_ID_ENV, raising=False)
    monkeypatch.delenv(rt.KFP_RUN_URL_ENV, raising=False)
    assert "kfp.run_id" not in context_tags("train")
    rt.kfp_run_env("run-7", ui_host="http://kfp:8080/")
    tags = context_tags("train")
    assert tags["kfp.run_id"] == "run-7" and tags["kfp.run_url"] == "http://kfp:8080/#/runs/details/run-7"


def test_git_commit_outside_git_is_the_image_build_arg(tmp_path, monkeypatch):
    from geogan.stages.train import git_commit

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("GEOGAN_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # no repository here, as in the image (.git is not copied in)
    monkeypatch.setenv(st.GIT_COMMIT_ENV, "0123abc")
    assert git_commit(tmp_path) == "0123abc"
    if (ROOT / ".git").exists():  # a checkout: the code's own commit, whatever the working directory
        monkeypatch.chdir(tmp_path)
        assert git_commit() not in {"unknown", "0123abc"}
