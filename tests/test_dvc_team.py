"""DVC for a team: the named S3 remote round-trips through a real S3 server, the local one stays the default,
and the ingest stage sees a change of its data folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.params import ROOT
from tests.helpers.s3 import TEST_CREDENTIALS

DVC = Path(__import__("sys").executable).parent / "dvc"
pytestmark = pytest.mark.skipif(not DVC.is_file(), reason=f"dvc is not installed beside the interpreter ({DVC})")


def _run(repo: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run([str(DVC), *args], cwd=repo, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, **(env or {})})
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _repo(tmp_path: Path) -> Path:
    """A git + DVC repository with the project's DVC config (remotes and their names)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run(repo, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    return repo


def test_s3_remote_push_and_pull_round_trip(tmp_path, moto_endpoint):
    import boto3

    repo = _repo(tmp_path)
    assert _run(repo, "remote", "default").strip() == "localstore", "the demo keeps the local remote as the default"
    bucket, prefix = "geogan-dvc", "dvcstore"
    assert f"s3://{bucket}/{prefix}" in _run(repo, "remote", "list")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **{k.lower(): v for k, v in TEST_CREDENTIALS.items()
                                                          if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    _run(repo, "remote", "modify", "--local", "s3", "endpointurl", moto_endpoint)
    data = repo / "data" / "faces"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("face a\n")
    (data / "b.txt").write_text("face b\n")
    _run(repo, "add", "data/faces")
    _run(repo, "push", "-r", "s3", env=TEST_CREDENTIALS)
    stored = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert len(stored) >= 3, "two files and the directory's manifest in the bucket"
    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(repo, "pull", "-r", "s3", "data/faces.dvc", env=TEST_CREDENTIALS)
    assert (data / "a.txt").read_text() == "face a\n" and (data / "b.txt").read_text() == "face b\n"


def test_a_changed_file_in_the_data_folder_marks_ingest_changed(tmp_path):
    repo = _repo(tmp_path)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "geogan" / "data", repo / "geogan" / "data", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "source", repo / "data" / "source")
    (repo / "data" / "prepared").mkdir(parents=True)  # stands in for ingest's output: the lock records it
    (repo / "data" / "prepared" / "manifest.csv").write_text("index,image\n")
    _run(repo, "commit", "-f", "ingest")
    assert json.loads(_run(repo, "status", "ingest", "--json")) == {}
    (repo / "data" / "source" / "000001.jpg").write_bytes(b"a new face")
    changed = json.loads(_run(repo, "status", "ingest", "--json"))
    assert changed == {"ingest": [{"changed deps": {"data/source": "modified"}}]}
