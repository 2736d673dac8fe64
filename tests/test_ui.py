"""The MLflow UI as a user meets it: training-mode experiments, described runs, and a real browser's view of a run."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="mlflow not installed")

from tests.helpers.params import ROOT  # noqa: E402
from tests.helpers.data import make_tiny_data  # noqa: E402
from tests.helpers.params import tiny_config  # noqa: E402


def _screenshots_module():
    spec = importlib.util.spec_from_file_location("docs_screenshots", ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store holding one tiny Mustache training run, judged and evaluated (no FID), as `make demo` leaves it."""
    from geogan.stages import evalset, evaluate, train, train_judge

    tmp = tmp_path_factory.mktemp("ui")
    data = make_tiny_data(tmp / "data", ("Mustache",), identities=40)
    cfg = tiny_config(**{"evaluate.fid": "off", "judge.max_steps": 20, "judge.eval_every": 10, "evaluate.sources": 6,
                         "evaluate.references": 3, "evaluate.bootstrap": 300, "split.val_fraction": 0.2})
    model = tmp / "models" / "Mustache"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # MLflow's artifacts land in the tmp folder, not the checkout
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        train_judge.run(cfg, data.prepared, tmp / "judge", progress=False)
        evalset.run(cfg, "Mustache", data.prepared, data.landmarks, tmp / "evalsets" / "Mustache.json")
        train.run(cfg, "Mustache", data.prepared, data.landmarks, data.splits["Mustache"], model,
                  tmp / "runs" / "Mustache", progress=False)
        evaluate.run(cfg, "Mustache", data.prepared, data.landmarks, tmp / "evalsets" / "Mustache.json", model,
                     tmp / "judge", tmp / "metrics.json", tmp / "plots", progress=False)
    return tmp


def test_training_run_is_named_described_sourced_and_finished(store: Path):
    import mlflow

    from geogan.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING

    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("geogan-Mustache")
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    (run,) = client.search_runs([exp.experiment_id])
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "Mustache train 4 steps seed 0 64px ngf8"
    assert "**Mustache**" in tags["mlflow.note.content"] and "4 steps" in tags["mlflow.note.content"]
    assert tags["mlflow.project.entryPoint"] == "train" and tags["mlflow.user"]
    assert tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
    assert any(k.startswith("eval/") for k in run.data.metrics), "the evaluation logs into the training run"


def test_an_experiment_made_before_the_kind_tag_is_marked_and_a_chosen_kind_kept(tmp_path: Path):
    import mlflow

    from geogan.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, ensure_experiment

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = client.create_experiment("geogan-Mustache")
    chosen = client.create_experiment("geogan-judge", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment(client, "geogan-Mustache") == old
    assert ensure_experiment(client, "geogan-judge") == chosen
    new = ensure_experiment(client, "geogan-Eyeglasses")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_comparison_link_opens_the_chart_view_over_every_attribute():
    from geogan.tracking import comparison_url

    local = comparison_url("sqlite:////tmp/mlflow.db", ["1", "2"])
    assert local.startswith("http://127.0.0.1:5000/#/compare-experiments/s?")
    assert "experiments=%5B%221%22%2C%222%22%5D" in local and "compareRunsMode=CHART" in local
    assert comparison_url("https://mlflow.example.org/", ["3"]).startswith("https://mlflow.example.org/#/")


def test_browser_run_page_names_a_key_metric_and_shows_the_transfer_grid(store: Path):
    ui = _screenshots_module()
    if ui.chromium_path() is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium; or set CHROMIUM): "
                    "the MLflow UI browser check is skipped")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright not installed (requirements.lock): the MLflow UI browser check is skipped")
    with ui.mlflow_ui(store / "mlflow.db") as url:
        demo = ui.find_demo(url, ["Mustache"])
        with ui.browser_page() as page:
            metric_named, grid_shown = ui.run_page_shows(page, url, demo)
    assert demo.key_metric.startswith("eval/"), demo.key_metric
    assert metric_named, f"the run page never named {demo.key_metric}"
    assert grid_shown, f"the run's grid {demo.grid} was not shown as a loaded image"
    assert os.path.basename(demo.grid).startswith("step-")
