"""Processes the tests start: stage commands and their environment, free ports, a copy of the repo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.data import TinyData
from tests.helpers.params import ROOT

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_env(tmp: Path, threads: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a stage subprocess: MLflow in a SQLite file under `tmp`, the repo importable.

    `threads` (OMP_NUM_THREADS) defaults to this process's setting (set in tests/conftest.py).
    """
    env = dict(os.environ)
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp).resolve() / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
        "OMP_NUM_THREADS": str(threads or env.get("OMP_NUM_THREADS", "2")),
        "PYTHONUNBUFFERED": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    })
    env.update(extra)
    return env


def train_args(params: Path, attribute: str, data: TinyData, out: Path, work: Path) -> list[str]:
    """Arguments of `python -m geogan.stages.train` (without the interpreter)."""
    return ["--params", str(params), "--attribute", attribute, "--prepared", str(data.prepared),
            "--landmarks", str(data.landmarks), "--split", str(data.splits[attribute]),
            "--out", str(out), "--work", str(work), "--no-progress"]


def train_cmd(params: Path, attribute: str, data: TinyData, out: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "geogan.stages.train", *train_args(params, attribute, data, out, work)]


def run_stage(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a stage to completion, capturing its output (text)."""
    return subprocess.run(cmd, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float, poll: float = 0.02) -> bool:
    """Poll `condition` until it holds (True), the process exits or `timeout` passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def copy_tree_of_repo(dest: Path) -> list[str]:
    """Copy what a fresh clone holds (tracked + untracked-but-not-ignored files) into `dest`."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    files = [f for f in files if f and (ROOT / f).is_file()]
    for f in files:
        target = Path(dest) / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    return files
