"""What the KFP components run in their pods: the shared helper, the TrainJob launcher, visuals, provenance."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from geogan.config import ConfigError
from tests.helpers.params import ROOT, tiny_params_dict

from components import runtime as rt  # the pods' helpers: no kfp needed
from components import settings as st
from components import trainjob as tj

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


def _artifact(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path), metadata={})


@pytest.mark.slow
def test_train_component_uses_torchrun_when_the_pod_has_several_gpus(tmp_path, monkeypatch):
    """The component body itself, with the GPU count faked to 2: torchrun runs 2 CPU (gloo) ranks."""
    pytest.importorskip("kfp")
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


def test_publish_evaluation_writes_metrics_table_and_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    (tmp_path / "metrics.json").write_text(json.dumps({"model": {"acc": 0.75}, "do_nothing": {"acc": 0.1}}))
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "transfers.png").write_bytes(b"\x89PNG")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "meta.json").write_text(json.dumps({"mlflow_run_id": "r9"}))
    logged = {}
    metrics = SimpleNamespace(path=str(tmp_path / "metrics.json"), log_metric=logged.__setitem__)
    table, grids = (SimpleNamespace(path=str(tmp_path / name)) for name in ("table.md", "grids.html"))
    rt.publish_evaluation("Mustache", metrics, SimpleNamespace(path=str(tmp_path / "plots")), table, grids,
                          SimpleNamespace(path=str(tmp_path / "model")))
    assert logged == {"model.acc": 0.75, "do_nothing.acc": 0.1}
    text = (tmp_path / "table.md").read_text()
    assert "| acc | 0.75 | 0.1 |" in text and "http://mlflow:5000/#/runs/r9" in text
    assert (tmp_path / "grids.html").read_text().count("<img ") == 1
