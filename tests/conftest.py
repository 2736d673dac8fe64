"""Shared fixtures: a tiny config (few images, few steps, CPU) and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = ROOT.parent / "shared" / "data" / "celebahq-200"

# Tests run on CPU with small thread counts, whatever the machine has. Under pytest-xdist
# (`make test` runs workers) one thread per worker, so they do not oversubscribe the cores;
# the workers inherit the controller's environment, hence the override.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")


def tiny_params_dict(**overrides) -> dict:
    """The repo's params.yaml shrunk for tests; `overrides` are dotted keys."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrink = {
        "data.synthetic_identities": 24,
        "data.synthetic_images_per_identity": 2,
        "data.resolution": 64,
        "data.workers": 1,
        "model.ngf": 8,
        "model.ndf": 8,
        "model.n_blocks": 1,
        "train.steps": 4,
        "train.batch_size": 2,
        "train.checkpoint_every": 2,
        "train.log_every": 2,
        "train.image_every": 4,
        "train.device": "cpu",
        "judge.width": 8,
        "judge.max_steps": 6,
        "judge.eval_every": 3,
        "judge.batch_size": 8,
        "judge.device": "cpu",
        "evaluate.sources": 4,
        "evaluate.references": 2,
        "evaluate.bootstrap": 200,
        "evaluate.batch_size": 4,
        "evaluate.device": "cpu",
    }
    shrink.update(overrides)
    for dotted, value in shrink.items():
        node = params
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return params


def write_params(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(tiny_params_dict(**overrides), sort_keys=False))
    return path


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    """A params.yaml for a run that takes seconds."""
    return write_params(tmp_path / "params.yaml")


@pytest.fixture
def shared_faces() -> Path:
    """The 200 real CelebA-HQ faces beside the project (non-commercial research use only)."""
    if not (SHARED_FACES / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real faces not present at {SHARED_FACES} (../shared/data/celebahq-200)")
    return SHARED_FACES
