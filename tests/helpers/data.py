"""A tiny prepared synthetic dataset (rendered, exact landmarks, split) and the sampler training builds on it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from geogan.config import Config
from geogan.training.build import training_sampler
from tests.helpers.params import tiny_config


@dataclass(frozen=True)
class TinyData:
    """A prepared synthetic dataset with its exact landmarks and per-attribute splits."""

    prepared: Path
    landmarks: Path
    splits: dict[str, Path]


def make_tiny_data(root: Path, attributes: Sequence[str] = ("Mustache",), identities: int = 24,
                   images_per_identity: int = 2, resolution: int = 64, seed: int = 0) -> TinyData:
    """Render synthetic faces, copy their exact landmarks and split each attribute, all under `root`.

    Uses the library directly (no ingest/landmarks stage processes), so it takes about a second.
    """
    from geogan.data.synthetic import write_synthetic_dataset
    from geogan.io import atomic_write_json
    from geogan.stages import split as split_stage

    root = Path(root)
    prepared, landmarks = root / "prepared", root / "landmarks"
    write_synthetic_dataset(prepared, identities, images_per_identity, resolution, seed, progress=False)
    landmarks.mkdir(parents=True)
    shutil.copyfile(prepared / "landmarks_exact.npy", landmarks / "landmarks.npy")
    atomic_write_json(landmarks / "report.json", {"backend": "exact", "images": identities * images_per_identity})
    cfg = tiny_config(seed=seed)
    splits = {}
    for attribute in attributes:
        splits[attribute] = root / "splits" / f"{attribute}.json"
        split_stage.run(cfg, attribute, prepared, landmarks, splits[attribute])
    return TinyData(prepared=prepared, landmarks=landmarks, splits=splits)


def library_sampler(cfg: Config, data: TinyData, attribute: str, rank: int = 0, world_size: int = 1):
    """The UnpairedSampler the train stage builds, on CPU."""
    from geogan.data.dataset import load_prepared

    prepared = load_prepared(data.prepared, data.landmarks)
    split = json.loads(data.splits[attribute].read_text())
    return training_sampler(prepared, split, cfg.train, torch.device("cpu"), rank, world_size)
