"""MLflow tracking at the edge: parallel runs on a fresh local SQLite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="mlflow not installed")

from tests.helpers.params import ROOT  # noqa: E402

OPEN_TRACKER = """
import sys
from geogan.tracking import MlflowTracker
t = MlflowTracker(sys.argv[1], "geogan-Mustache", None, run_name=sys.argv[2])
t.log_metrics({"x": 1.0}, step=0)
t.finish()
"""


def test_parallel_runs_on_a_fresh_sqlite_store_all_start(tmp_path: Path):
    # Without the store lock, processes creating the tables at once die with "duplicate column name".
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_TRACKER, uri, f"run{i}"], cwd=tmp_path,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err[-2000:]
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("geogan-Mustache")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"run{i}" for i in range(4)]
