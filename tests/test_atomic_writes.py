"""Outputs are replaced whole or not at all: a write that fails halfway leaves the previous file byte for byte.

A child process writes under a file-size limit (RLIMIT_FSIZE) smaller than the new content, so
its write really stops partway, wherever it writes: with SIGXFSZ ignored the write raises
(EFBIG) and the writer must clean up; with SIGXFSZ at its default the process dies mid-write,
like a crash. Resuming past an unreadable newest checkpoint is reported, never silent.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

import torch

from geogan.io import atomic_write_json
from geogan.model import save_generator
from geogan.nets import Generator
from geogan.training.checkpoint import find_latest, list_checkpoints, save_checkpoint
from tests.helpers.params import ROOT

LIMIT = 64 * 1024  # bytes a child may write to any one file; every new output below is several times larger

# The child: each case replaces an existing output with a larger one, under the limit.
CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
import torch
from geogan.io import atomic_path, atomic_write_json
from geogan.model import save_generator
from geogan.nets import Generator
from geogan.training.checkpoint import save_checkpoint

root, limit, ignore, cases = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4].split(",")
# Ignored (Python's own default), the write fails with EFBIG; at the OS default it kills the process.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if ignore else signal.SIG_DFL)
torch.manual_seed(1)
writes = {
    "checkpoint": lambda: save_checkpoint(root / "checkpoints", 4, {"w": torch.randn(100_000)}),
    "generator": lambda: save_generator(root / "generator.pt", Generator(ngf=4, n_blocks=0), {"step": 2}),
    "json": lambda: atomic_write_json(root / "metrics.json", {"values": list(range(50_000))}),
    "folder": lambda: _folder(root / "model"),
}

def _folder(path):
    with atomic_path(path) as tmp:
        tmp.mkdir()
        atomic_write_json(tmp / "meta.json", {"step": 2})
        save_generator(tmp / "generator.pt", Generator(ngf=4, n_blocks=0), {"step": 2})

resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
result = {}
for case in cases:
    try:
        writes[case]()
        result[case] = "written"
    except OSError as e:
        result[case] = e.errno
print(json.dumps(result))
"""


def _previous_outputs(root: Path) -> None:
    """Small valid outputs, written without any limit: what a failed write must leave as it is."""
    torch.manual_seed(0)
    save_checkpoint(root / "checkpoints", 4, {"w": torch.randn(10)})
    save_generator(root / "generator.pt", Generator(ngf=4, n_blocks=0), {"step": 1})
    atomic_write_json(root / "metrics.json", {"values": [1, 2, 3]})
    (root / "model").mkdir()
    save_generator(root / "model" / "generator.pt", Generator(ngf=4, n_blocks=0), {"step": 1})
    atomic_write_json(root / "model" / "meta.json", {"step": 1})


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under root (hidden ones too), with the bytes of the files."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _write_under_limit(root: Path, ignore_sigxfsz: bool, cases: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", CHILD, str(root), str(LIMIT), "1" if ignore_sigxfsz else "0", cases]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # a hang guard only


def test_a_write_that_fails_halfway_leaves_the_previous_output_and_no_temp_file(tmp_path):
    _previous_outputs(tmp_path)
    before = _snapshot(tmp_path)
    res = _write_under_limit(tmp_path, ignore_sigxfsz=True, cases="checkpoint,generator,json,folder")
    assert res.returncode == 0, res.stderr[-3000:]
    # Each write really started and was stopped by the limit (not refused before writing).
    assert json.loads(res.stdout) == dict.fromkeys(["checkpoint", "generator", "json", "folder"], errno.EFBIG)
    after = _snapshot(tmp_path)
    assert after.keys() == before.keys(), f"files left behind or lost: {sorted(after.keys() ^ before.keys())}"
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"previous outputs changed by a failed write: {changed}"


def test_a_crash_mid_checkpoint_keeps_the_previous_checkpoint_resumable(tmp_path):
    _previous_outputs(tmp_path)
    old = (tmp_path / "checkpoints" / "ckpt-00000004.pt").read_bytes()
    res = _write_under_limit(tmp_path, ignore_sigxfsz=False, cases="checkpoint")
    assert res.returncode == -signal.SIGXFSZ, f"rc {res.returncode}: {res.stderr[-2000:]}"  # killed mid-write
    assert (tmp_path / "checkpoints" / "ckpt-00000004.pt").read_bytes() == old
    latest = find_latest(tmp_path / "checkpoints", key="none")
    assert latest.path == tmp_path / "checkpoints" / "ckpt-00000004.pt" and not latest.unreadable


def test_an_unreadable_newest_checkpoint_is_reported_and_the_older_one_found(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (2, 4):
        save_checkpoint(folder, step, {"w": torch.full((3,), float(step)), "resume_key": "k"})
    newest = list_checkpoints(folder)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as by a crash of a writer that is not atomic
    latest = find_latest(folder, "k")
    assert latest.path == folder / "ckpt-00000002.pt" and torch.equal(latest.state["w"], torch.full((3,), 2.0))
    assert [p for p, _ in latest.unreadable] == [newest]
    assert "\n" not in latest.unreadable[0][1]


def test_resume_fallback_is_logged_and_tagged_on_the_mlflow_run(tmp_path, monkeypatch, capsys):
    import mlflow

    from geogan.tracking import open_tracker
    from geogan.training.loop import train
    from tests.helpers.data import library_sampler, make_tiny_data
    from tests.helpers.params import tiny_config
    from tests.helpers.training import cpu_env

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = make_tiny_data(tmp_path / "data")
    quiet = {"train.log_every": 1000, "train.image_every": 1000, "model.ngf": 4, "model.ndf": 4, "model.n_scales": 1}
    steps = 6
    cfg = tiny_config(**{**quiet, "train.steps": steps, "train.checkpoint_every": 2})
    work = tmp_path / "work"
    train(cfg, library_sampler(cfg, data, "Mustache"), cpu_env(), work, key="k", progress=False, stop_after=4)
    bad = list_checkpoints(work / "checkpoints")[-1]
    assert bad.name == "ckpt-00000004.pt"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    capsys.readouterr()

    tracker = open_tracker(cfg.mlflow, "Mustache", run_name="fallback", root=tmp_path)
    try:
        result = train(cfg, library_sampler(cfg, data, "Mustache"), cpu_env(), work, key="k", tracker=tracker,
                       progress=False)
    finally:
        tracker.finish("FINISHED")
    assert result.resumed_from == 2 and result.step == steps
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "unreadable" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "resuming from the older ckpt-00000002.pt" in lines[0], lines
    tags = mlflow.MlflowClient().get_run(tracker.run_id).data.tags
    assert tags["resume.unreadable_checkpoints"].startswith("ckpt-00000004.pt: ")
    assert tags["resume.fallback"] == "ckpt-00000002.pt"
