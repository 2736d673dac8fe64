"""The tiny test params: the repo's params.yaml shrunk so that a run takes seconds, as a dict, a file or a Config."""

from __future__ import annotations

from pathlib import Path

import yaml

from geogan.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[2]
SHARED_FACES = ROOT.parent / "shared" / "data" / "celebahq-200"


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
    """Write the tiny params (with dotted overrides) to `path`."""
    path.write_text(yaml.safe_dump(tiny_params_dict(**overrides), sort_keys=False))
    return path


def tiny_config(**overrides) -> Config:
    """The tiny test config  with dotted overrides, as a `Config`."""
    return config_from_dict(tiny_params_dict(**overrides), source="tiny params")


def tiny_section(name: str, **fields):
    """One section of the tiny config (e.g. "landmarks") with field overrides."""
    import dataclasses

    return dataclasses.replace(getattr(tiny_config(), name), **fields)
