"""Fixtures the tests share: tiny params, the real faces, one torch thread, an S3 server. Helpers: tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001
    # Tests run on CPU with small thread counts, whatever the machine has. Under pytest-xdist
    # (`make test` runs workers) one thread per worker, so they do not oversubscribe the cores;
    # the workers inherit the controller's environment, hence the override. Set before any test
    # module imports torch (this file imports neither torch nor the helpers at the top).
    # MLflow's telemetry thread rewrites os.environ while other threads read it (a KeyError seen once in
    # test_registry); the tests and the servers they start inherit this, and nothing here is online anyway.
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    """A params.yaml for a run that takes seconds."""
    from tests.helpers.params import write_params

    return write_params(tmp_path / "params.yaml")


@pytest.fixture
def shared_faces() -> Path:
    """The 200 real CelebA-HQ faces beside the project (non-commercial research use only)."""
    from tests.helpers.params import SHARED_FACES

    if not (SHARED_FACES / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real faces not present at {SHARED_FACES} (../shared/data/celebahq-200)")
    return SHARED_FACES


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the test, restored afterwards (`tests.helpers.training.torch_threads`)."""
    from tests.helpers.training import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto_server started for this test module, stopped afterwards."""
    from tests.helpers.s3 import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and child processes) at the test server with dummy credentials."""
    from tests.helpers.s3 import TEST_CREDENTIALS

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return moto_endpoint
