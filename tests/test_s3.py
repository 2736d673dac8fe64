"""Ingestion from S3 (a real moto_server on loopback) gives the same files as from the local folder.

The folder is CelebA-format, of synthetic faces (tests/helpers/celeba.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from geogan.config import DataConfig
from geogan.data.ingest import ingest
from geogan.data.sources import SourceError, open_source
from tests.helpers.celeba import BAD_FILES, write_celeba_folder
from tests.helpers.params import tiny_section
from tests.helpers.s3 import upload_folder

pytest.importorskip("boto3", reason="S3 sources need boto3")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cfg(source: str, **kw) -> DataConfig:
    return tiny_section("data", source=source, resolution=64, workers=kw.pop("workers", 1), license_ack=True, **kw)


def test_s3_ingest_matches_local(s3_env: str, tmp_path: Path) -> None:
    folder = tmp_path / "celeba"
    n_good = len(write_celeba_folder(folder).names)
    upload_folder(folder, "faces", "datasets/celeba-small")
    local = ingest(cfg(str(folder)), ["Mustache", "Eyeglasses"], tmp_path / "local", seed=0, progress=False)
    # Two workers: each spawned process opens its own client from the same environment.
    remote = ingest(cfg("s3://faces/datasets/celeba-small", workers=2), ["Mustache", "Eyeglasses"],
                    tmp_path / "s3", seed=0, progress=False)
    assert remote["source"] == "s3://faces/datasets/celeba-small/"
    assert remote["used"] == local["used"] == n_good
    assert remote["skipped_by_reason"] == local["skipped_by_reason"]
    assert set(remote["skipped_by_reason"]) == set(BAD_FILES.values())
    for name in ("manifest.csv", "images.npy", "crops.npy"):
        assert sha256(tmp_path / "s3" / name) == sha256(tmp_path / "local" / name), name


def test_s3_errors_name_the_source(s3_env: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="s3://no-such-bucket/x/: cannot list"):
        open_source("s3://no-such-bucket/x").list_files()
    with pytest.raises(SourceError, match="no bucket name"):
        open_source("s3:///prefix")
    import boto3

    boto3.client("s3").create_bucket(Bucket="empty")
    from geogan.data.ingest import IngestError

    with pytest.raises(IngestError, match="s3://empty/nothing/: no files found"):
        ingest(cfg("s3://empty/nothing"), ["Mustache"], tmp_path / "out", seed=0, progress=False)
