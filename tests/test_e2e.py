"""The README's DVC commands end to end on a tiny config in a copy of the repo, typed as a user types them:
outputs, up-to-date, exp run and back, MLflow, the registry's candidate, serving, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.params import write_params
from tests.helpers.processes import VENV_BIN, copy_tree_of_repo

pytestmark = pytest.mark.slow

ATTRS = ("Mustache", "Eyeglasses")
# The smallest nets: this checks the plumbing (DVC, MLflow, registry, serving), not the model. FID off: six
# evaluations here would pass ~40 images each through Inception on the CPU (about 7 CPU minutes); its network is
# checked in tests/test_fid.py and its wiring into the evaluation in tests/test_evaluate.py.
TINY = {"train.steps": 4, "train.checkpoint_every": 2, "train.image_every": 4, "train.log_every": 2,
        "model.ngf": 4, "model.ndf": 4, "model.n_scales": 1,
        "judge.max_steps": 3, "evaluate.sources": 4, "evaluate.references": 2, "evaluate.fid": "off"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)


def _clone(dest: Path, **overrides) -> Path:
    """A fresh-clone-like copy of the repo with a tiny params.yaml, committed in its own git repo."""
    copy_tree_of_repo(dest)
    write_params(dest / "params.yaml", **{**TINY, **overrides})
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "config", "user.name", "geogan-test")
    _git(dest, "config", "user.email", "test@example.invalid")
    _git(dest, "config", "commit.gpgsign", "false")
    if not (dest / ".dvc").is_dir():
        subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=dest, check=True)
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "fresh clone")
    return dest


def _outputs(repo: Path) -> list[Path]:
    outs = [repo / "data/prepared/images.npy", repo / "data/prepared/manifest.csv", repo / "data/landmarks/landmarks.npy",
            repo / "models/judge/judge.pt", repo / "models/judge/trained_on.json"]
    for a in ATTRS:
        outs += [repo / f"data/splits/{a}.json", repo / f"data/evalsets/{a}.json", repo / f"models/{a}/generator.pt",
                 repo / f"models/{a}/meta.json",
                 repo / f"metrics/{a}.json", repo / f"registry/{a}.json"]
    return outs


def fresh_shell(repo: Path) -> dict[str, str]:
    """The environment of a new terminal in the clone after `make demo`: no venv on PATH, no MLflow URI."""
    env = {"HOME": os.environ.get("HOME", str(repo)), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "GIT_PYTHON_REFRESH": "quiet"}
    (repo / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # what `make demo` leaves in the clone
    return env


def _typed(repo: Path, env: dict, line: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a README command line as written (split on spaces), in the clone."""
    return subprocess.run(line.split(), check=False, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def test_readme_dvc_commands_in_a_fresh_shell(tmp_path):
    """`.venv/bin/dvc repro`, `.venv/bin/dvc exp run -S train.steps=N`, a params edit back and `.venv/bin/dvc repro`.

    The stages run through bin/geogan-stage, which finds the clone's .venv without PATH; after
    the experiment and back, `candidate` is the version of the weights on disk, with their own figures.
    """
    repo = _clone(tmp_path / "repo")
    env = fresh_shell(repo)
    uri = f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}"

    first = _typed(repo, env, ".venv/bin/dvc repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    missing = [str(p.relative_to(repo)) for p in _outputs(repo) if not p.is_file()]
    assert not missing, f"missing outputs: {missing}"
    for a in ATTRS:
        metrics = json.loads((repo / f"metrics/{a}.json").read_text())
        for method in ("model", "copy_paste", "do_nothing"):  # 4 sources x 2 references
            assert {"landmark_err_8", "gt_psnr_8", "transfer_success_8", "instance_fidelity_8"} <= metrics[method].keys()
        assert json.loads((repo / f"models/{a}/meta.json").read_text())["step"] == TINY["train.steps"]

    second = _typed(repo, env, ".venv/bin/dvc repro")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Data and pipelines are up to date" in second.stdout, second.stdout
    assert "Running stage" not in second.stdout
    assert not subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=repo, capture_output=True,
                              text=True).stdout, "dvc staged files in the user's git index"

    _check_mlflow(uri)
    _check_serving(uri, repo)

    steps = TINY["train.steps"] + 2
    exp = _typed(repo, env, f".venv/bin/dvc exp run -S train.steps={steps}")
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-5000:]
    for a in ATTRS:
        assert json.loads((repo / f"models/{a}/meta.json").read_text())["step"] == steps
    assert "Running stage 'train@Mustache'" in exp.stdout and "Running stage 'ingest'" not in exp.stdout
    shown = _typed(repo, env, ".venv/bin/dvc exp show --csv")
    assert shown.returncode == 0 and str(steps) in shown.stdout, shown.stdout[-2000:] + shown.stderr[-2000:]
    # train.steps is not in the resume key: the experiment continued the checkpointed run (and its MLflow run).
    _check_mlflow(uri)

    # And back: the params edited to the first value, then `dvc repro`.
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace(f"steps: {steps}\n", f"steps: {TINY['train.steps']}\n", 1))
    back = _typed(repo, env, ".venv/bin/dvc repro")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-5000:]
    _check_candidate_is_on_disk(uri, repo, TINY["train.steps"])
    table = _typed(repo, {**env, "PYTHONPATH": str(repo)}, ".venv/bin/geogan compare")  # this copy's code
    assert table.returncode == 0, table.stderr[-3000:]
    print(table.stdout)
    head = next(ln for ln in table.stdout.splitlines() if ln.startswith("Mustache"))
    assert head.startswith("Mustache version 1 (candidate): ") and f", {TINY['train.steps']} steps" in head, table.stdout
    assert "copy_paste" in table.stdout and "transfer_success_8" in table.stdout, table.stdout


def _check_candidate_is_on_disk(uri: str, repo: Path, steps: int) -> None:
    """`candidate` holds the weights in models/<attr> and carries their own evaluation, registered once."""
    from mlflow import MlflowClient

    from geogan.io import file_sha256
    from geogan.registry import version_metrics

    client = MlflowClient(uri)
    for a in ATTRS:
        version = client.get_model_version_by_alias(f"geogan-{a}", "candidate")
        on_disk = json.loads((repo / f"metrics/{a}.json").read_text())
        assert int(version.version) == 1, f"{a}: the first weights came back as version {version.version}"
        assert version.tags["generator_sha256"] == file_sha256(repo / f"models/{a}/generator.pt")
        assert version_metrics(version)["train_steps"] == steps
        assert version_metrics(version)["landmark_err_8"] == on_disk["model"]["landmark_err_8"]
        assert version_metrics(version)["copy_paste/gt_psnr_8"] == on_disk["copy_paste"]["gt_psnr_8"]
        assert version.tags["eval.set_digest"] == on_disk["eval_set"]["digest"]
        assert sorted(int(v.version) for v in client.search_model_versions(f"name='geogan-{a}'")) == [1, 2]


def _check_mlflow(uri: str) -> None:
    """One training run per attribute with params, metrics and image artifacts, registered as the candidate."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for a in ATTRS:
        exp = client.get_experiment_by_name(f"geogan-{a}")
        assert exp is not None, f"no MLflow experiment for {a}"
        runs = client.search_runs([exp.experiment_id])
        train_runs = [r for r in runs if r.data.tags.get("stage") == "train"]
        assert len(train_runs) == 1, [(r.info.run_id, r.data.tags) for r in runs]
        run = train_runs[0]
        assert run.data.params.get("train.steps") == str(TINY["train.steps"]) and run.data.params.get("attribute") == a
        assert any(k.startswith("loss/") for k in run.data.metrics), run.data.metrics
        assert any(k.startswith("eval/") for k in run.data.metrics), run.data.metrics
        assert run.info.status == "FINISHED"
        assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a stage left its run RUNNING"
        images = [f for f in _artifacts(client, run.info.run_id) if f.endswith(".png")]
        assert images, f"{a}: no image artifact in run {run.info.run_id}"
        version = client.get_model_version_by_alias(f"geogan-{a}", "candidate")
        assert version.run_id == run.info.run_id, (version.run_id, run.info.run_id)


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def _check_serving(uri: str, repo: Path) -> None:
    import mlflow
    import pandas as pd

    from geogan.serving import decode_image, encode_image

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/geogan-Mustache@candidate")
    split = json.loads((repo / "data/splits/Mustache.json").read_text())
    images = np.load(repo / "data/prepared/images.npy")
    a, b = images[split["test"]["A"][0]], images[split["train"]["B"][0]]
    out = model.predict(pd.DataFrame({"source": [encode_image(a)], "reference": [encode_image(b)]}))
    result = decode_image(out["output"][0])
    assert result.shape == a.shape and result.dtype == np.uint8


def test_unknown_attribute_stops_repro_with_one_line_and_no_output(tmp_path):
    repo = _clone(tmp_path / "repo", attributes=["Mustache", "Beard"])
    res = _typed(repo, fresh_shell(repo), ".venv/bin/dvc repro")
    assert res.returncode != 0
    text = res.stdout + res.stderr
    lines = [ln for ln in text.splitlines() if ln.startswith("geogan ") and "error" in ln]
    assert len(lines) == 1 and "Beard" in lines[0], text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    leftovers = [str(p.relative_to(repo)) for d in ("data", "models", "metrics", "registry") if (repo / d).exists()
                 for p in (repo / d).rglob("*")
                 if not p.is_relative_to(repo / "data" / "source")]  # the ingest stage's input folder
    assert not leftovers, f"half-written outputs: {leftovers}"
