"""What a new user hits, as a table: each bad input or fault, its command, exit code, one line, and what is left.

Every row of TRIALS runs `geogan <command>` in a subprocess (tiny synthetic data, MLflow in a
SQLite file under the test's tmp folder) and checks:
- the exit code;
- exactly one line on stderr that starts with `geogan <command>:` and matches the row's pattern,
  and no traceback and no "Exception ignored" anywhere in the output;
- on disk: the command's --out path does not exist;
- in MLflow: no run is left RUNNING, and the runs' statuses are the row's (none for a bad config).

Trials that need a signal, a DVC repo or another process live beside the code they test:
SIGTERM (exit 143, run KILLED) and a NaN loss (exit 2, run FAILED) in tests/test_training.py;
the README's DVC commands in a fresh shell and the exp-run-and-back sequence in tests/test_e2e.py;
a candidate worse only than the champion in tests/test_registry.py.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.params import ROOT, write_params
from tests.helpers.data import TinyData, make_tiny_data
from tests.helpers.processes import run_stage, stage_env
from tests.helpers.processes import free_port

pytest.importorskip("mlflow", reason="mlflow not installed")

ATTR = "Mustache"
DATA = "--prepared {data}/prepared --landmarks {data}/landmarks --split {data}/splits/Mustache.json"
TRAIN = f"train --params {{params}} --attribute Mustache {DATA} --out {{out}} --work {{tmp}}/work --no-progress"
CLOSED = "http://127.0.0.1:{closed}"  # a port nothing listens on
REFUSED = r"MLflow tracking server http://127\.0\.0\.1:\d+ \(MLFLOW_TRACKING_URI\) does not answer: Connection refused"


@dataclass(frozen=True)
class Trial:
    """One row: `geogan <args>` with tiny params (+ overrides) and env (+ extra); what it must print and leave."""

    args: str
    code: int
    line: str  # regex searched in the one line
    params: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    runs: tuple[str, ...] = ()  # statuses of the MLflow runs afterwards, sorted
    module: str = "geogan.cli"  # the console script's module (`geogan-pipeline` is pipelines.cli)
    prefix: str = ""  # how its one line starts; default "geogan <command>:"


TRIALS = {
    # Out-of-range params: refused at load, before any work, output or MLflow run.
    "train.steps 0": Trial(TRAIN, 2, r"'train\.steps' must be > 0, got 0", {"train.steps": 0}),
    "train.batch_size -4": Trial(TRAIN, 2, r"'train\.batch_size' must be > 0, got -4", {"train.batch_size": -4}),
    "train.checkpoint_every 0": Trial(TRAIN, 2, r"'train\.checkpoint_every' must be > 0", {"train.checkpoint_every": 0}),
    "train.log_every 0": Trial(TRAIN, 2, r"'train\.log_every' must be > 0, got 0", {"train.log_every": 0}),
    "split.test_fraction 1.5": Trial(
        "split --params {params} --attribute Mustache --prepared {data}/prepared --landmarks {data}/landmarks --out {out}",
        2, r"'split\.test_fraction' must be in \[0, 1\], got 1\.5", {"split.test_fraction": 1.5}),
    # A crash after the run started: one line, the run ends FAILED (not RUNNING), no model written.
    "train.init_from missing": Trial(TRAIN, 2, r"train\.init_from: /nonexistent/generator\.pt: not found",
                                     {"train.init_from": "/nonexistent/generator.pt"}, runs=("FAILED",)),
    # A tracking server that does not answer: one line naming the URI and the cause, before any work.
    "train, server down": Trial(TRAIN, 2, REFUSED, env={"MLFLOW_TRACKING_URI": CLOSED}),
    "evaluate, server down": Trial(
        "evaluate --params {params} --attribute Mustache --prepared {data}/prepared --landmarks {data}/landmarks "
        "--evalset {data}/evalsets/Mustache.json --model {root}/model --out {out}",
        2, REFUSED, env={"MLFLOW_TRACKING_URI": CLOSED}),
    "register, server down": Trial(
        "register --params {params} --attribute Mustache --model {root}/model --metrics {root}/m.json --out {out}",
        2, REFUSED, env={"MLFLOW_TRACKING_URI": CLOSED}),
    "promote, server down": Trial("promote --params {params} --attribute Mustache", 2, REFUSED,
                                  env={"MLFLOW_TRACKING_URI": CLOSED}),
    "compare, server down": Trial("compare --params {params}", 2, REFUSED, env={"MLFLOW_TRACKING_URI": CLOSED}),
    "transfer, server down": Trial(
        "transfer --model models:/geogan-Mustache@candidate --source {face} --reference {face} --out {out}",
        2, REFUSED, env={"MLFLOW_TRACKING_URI": CLOSED}),
    # A model or alias the registry does not hold: one line listing what it holds.
    "transfer, no such model": Trial(
        "transfer --model models:/geogan-Nope@candidate --source {face} --reference {face} --out {out}",
        2, r"models:/geogan-Nope@candidate: no registered model 'geogan-Nope' \(registered: geogan-Mustache\)",
        env={"MLFLOW_TRACKING_URI": "{registry}"}, runs=("FINISHED",)),
    "transfer, no champion yet": Trial(
        "transfer --model models:/geogan-Mustache@champion --source {face} --reference {face} --out {out}",
        2, r"'geogan-Mustache' has no alias 'champion' \(aliases: candidate -> 1; versions: 1\)",
        env={"MLFLOW_TRACKING_URI": "{registry}"}, runs=("FINISHED",)),
    # Images the model cannot use.
    "transfer, 1x1 source": Trial(
        "transfer --model {root}/model/generator.pt --source {tiny} --reference {face} --out {out}",
        2, r"tiny\.png: 1x1 px is too small for this 64 px model \(at least 16 px on the shorter side\)"),
    "ingest, corrupt images only": Trial(
        "ingest --params {params} --out {out}", 2, r"data source \S+corrupt: no usable image \(4 labelled; skipped corrupt 4\)",
        {"data.source": "{root}/corrupt", "data.format": "csv", "data.workers": 2, "attributes": [ATTR]}),
    # A KFP host that does not answer.
    "pipeline submit, host down": Trial(
        "submit --host http://127.0.0.1:{closed} --attribute Mustache --params {params} "
        "--package {repo}/pipelines/geogan_pipeline.yaml --allow-tag",
        1, r"KFP host http://127\.0\.0\.1:\d+ does not answer: Connection refused",
        module="pipelines.cli", prefix="geogan-pipeline: error:"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """What the trials' commands refer to: tiny data, a generator, images, a corrupt folder, a registry."""
    from geogan.registry import log_and_register
    from tests.helpers.training import save_tiny_generator

    root = tmp_path_factory.mktemp("world")
    data: TinyData = make_tiny_data(root / "data", attributes=(ATTR,))
    (root / "model").mkdir()
    save_tiny_generator(root / "model" / "generator.pt", seed=0)
    (root / "m.json").write_text('{"transfer_success": 0.5}')
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(root / "face.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "tiny.png")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    rows = ["image,Mustache"]
    for i in range(4):
        (corrupt / f"img{i}.jpg").write_bytes(np.random.default_rng(i).bytes(300))
        rows.append(f"img{i}.jpg,{1 if i % 2 else -1}")
    (corrupt / "attributes.csv").write_text("\n".join(rows) + "\n")
    registry = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    (root / "registry").mkdir()
    log_and_register(root / "model" / "generator.pt", ATTR, None, registry, {}, {"transfer_success": 0.5})
    return {"data": str(data.prepared.parent), "face": str(root / "face.png"), "tiny": str(root / "tiny.png"),
            "root": str(root), "registry": registry, "closed": str(free_port())}


@pytest.mark.parametrize("name", list(TRIALS))
def test_trial(name: str, world: dict[str, str], tmp_path: Path):
    trial = TRIALS[name]
    fill = {**world, "repo": str(ROOT), "tmp": str(tmp_path), "out": str(tmp_path / "out"), "params": str(tmp_path / "params.yaml")}
    write_params(tmp_path / "params.yaml", **{k: v.format(**fill) if isinstance(v, str) else v
                                              for k, v in trial.params.items()})
    env = stage_env(tmp_path, **{k: v.format(**fill) for k, v in trial.env.items()})
    args = trial.args.format(**fill).split()

    res = run_stage([sys.executable, "-m", trial.module, *args], env, tmp_path, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode == trial.code, f"rc {res.returncode}\n{text[-3000:]}"
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(trial.prefix or f"geogan {args[0]}:")]
    assert len(lines) == 1 and re.search(trial.line, lines[0]), res.stderr[-3000:]
    assert not (tmp_path / "out").exists(), "a failed command left its output"
    assert _statuses(env["MLFLOW_TRACKING_URI"], tmp_path) == trial.runs
    print(f"{name}: exit {res.returncode}: {lines[0]}")


def _statuses(uri: str, tmp_path: Path) -> tuple[str, ...]:
    """Statuses of every run in a local store (none if it was never created); a server URI has none to read."""
    if not uri.startswith("sqlite:///") or not Path(uri[len("sqlite:///"):]).is_file():
        return ()
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return tuple(sorted(r.info.status for r in client.search_runs(experiments)))


def test_the_decode_pool_is_gone_when_no_image_is_usable(world: dict[str, str], tmp_path: Path):
    """The pool shuts down before the error leaves ingest, not when its traceback is collected at exit
    (then stderr is closed: 'Exception ignored ... Bad file descriptor' after the one line)."""
    import multiprocessing

    from geogan.data.ingest import IngestError, ingest
    from tests.helpers.params import tiny_config

    cfg = tiny_config(**{"data.source": f"{world['root']}/corrupt", "data.format": "csv", "data.workers": 2,
                         "attributes": [ATTR]})
    with pytest.raises(IngestError, match="no usable image") as held:  # the traceback stays alive here
        ingest(cfg.data, cfg.attributes, tmp_path / "prepared", seed=0, progress=True)
    assert held.value is not None and multiprocessing.active_children() == []


def test_transfer_warns_nothing(world: dict[str, str], tmp_path: Path):
    """PIL's read-only arrays made torch warn 'The given NumPy array is not writable' on every transfer."""
    import warnings

    from geogan.stages.transfer import run_transfer

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_transfer(f"{world['root']}/model/generator.pt", Path(world["face"]), Path(world["face"]), tmp_path / "o.png")
    assert (tmp_path / "o.png").is_file()


def test_help_names_the_command_and_version_is_printed(capsys):
    from geogan import __version__, cli

    cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"geogan {__version__}"
    argv0 = sys.argv[0]
    try:
        with pytest.raises(SystemExit) as done:
            cli.main(["train", "--help"])
    finally:
        sys.argv[0] = argv0
    assert done.value.code == 0 and capsys.readouterr().out.lstrip().startswith("usage: geogan train ")


def test_stage_launcher_finds_the_venv_without_path_and_names_a_wrong_interpreter(tmp_path: Path):
    """dvc.yaml's `bin/geogan-stage <stage>` in a fresh shell: the clone's .venv, whatever PATH holds."""
    import shutil
    import subprocess

    clone = tmp_path / "clone"
    (clone / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin" / "geogan-stage", clone / "bin")
    shutil.copytree(ROOT / "geogan", clone / "geogan", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # what `make demo` leaves
    shell = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def stage(env: dict) -> subprocess.CompletedProcess:
        return subprocess.run(["bin/geogan-stage", "train", "--help"], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    found = stage(shell)
    assert found.returncode == 0 and found.stdout.startswith("usage: python -m geogan.stages.train"), found.stderr
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    wrong = stage({**shell, "GEOGAN_PYTHON": str(tmp_path / "bare" / "bin" / "python")})
    assert wrong.returncode == 127 and wrong.stdout == "", wrong
    (line,) = wrong.stderr.splitlines()
    assert line.startswith(f"geogan-stage: {tmp_path / 'bare' / 'bin' / 'python'} cannot import torch"), line
