"""Shared helpers for the trainer and end-to-end tests: a tiny prepared dataset, stage commands, weight checks."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geogan.config import Config, ModelConfig, config_from_dict
from geogan.data.dataset import Batch
from geogan.nets import STOCK, Kernels, Nets
from geogan.training.build import Compiler, compiled_state, eager_state, nets_for, step_context, training_sampler
from geogan.training.steps import RegionView, StepContext, TrainingState
from tests.conftest import ROOT, tiny_params_dict

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class TinyData:
    """A prepared synthetic dataset with its exact landmarks and per-attribute splits."""

    prepared: Path
    landmarks: Path
    splits: dict[str, Path]


STEADY_STEP = 10**6  # a step past every warm-up: full loss weights, refinement on


def random_batch(seed: int, n: int = 2, size: int = 32) -> Batch:
    """A random step batch: images in [-1, 1], landmarks inside the frame."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, 3, size, size, generator=g) * 2 - 1
    lm = torch.rand(2, n, 68, 2, generator=g) * 1.6 - 0.8
    return Batch(x_a=x[0], x_b=x[1], lm_a=lm[0], lm_b=lm[1])


def tiny_config(**overrides) -> Config:
    """The tiny test config (tests/conftest.py) with dotted overrides, as a `Config`."""
    return config_from_dict(tiny_params_dict(**overrides), source="tiny params")


def tiny_model(**overrides) -> ModelConfig:
    """The tiny config's `model` section with field overrides (e.g. ngf=4)."""
    return dataclasses.replace(tiny_config().model, **overrides)


def tiny_nets(kernels: Kernels = STOCK, seed: int = 0, **model) -> Nets:
    """The tiny config's nets, built as training builds them, with `seed` as train.seed."""
    return nets_for(tiny_model(**model), dataclasses.replace(tiny_config().train, seed=seed), kernels)


def tiny_state(compiler: Compiler | None = None, losses: bool = False, distributed: bool = False,
               kernels: Kernels = STOCK, **model) -> TrainingState:
    """The CPU training state of the tiny nets; `compiler` (e.g. torch.compile with backend
    "aot_eager") compiles G and D, or with `losses` each phase's D and loss terms as one graph."""
    state = eager_state(tiny_nets(kernels, **model), tiny_config().train, torch.device("cpu"), distributed)
    return compiled_state(state, compiler, losses) if compiler is not None else state


def tiny_context(size: int = 32, region: RegionView | None = None, loss: dict | None = None, **train) -> StepContext:
    """The step context of the tiny config at a steady step, with `loss` and `train` field overrides, on CPU."""
    cfg = tiny_config()
    return step_context(dataclasses.replace(cfg.loss, **(loss or {})), dataclasses.replace(cfg.train, **train),
                        STEADY_STEP, size, torch.device("cpu"), region)


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


def stage_env(tmp: Path, threads: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a stage subprocess: MLflow in a SQLite file under `tmp`, the repo importable.

    `threads` (OMP_NUM_THREADS) defaults to this process's setting (tests/conftest.py).
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


def checkpoint_steps(work: Path) -> list[int]:
    """Steps of the checkpoints in work/checkpoints, ascending."""
    folder = Path(work) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("ckpt-*.pt"))


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


def generator_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of models/<attr>/generator.pt, loaded through the library's own loader."""
    from geogan.model import load_generator

    gen, _ = load_generator(Path(model_dir) / "generator.pt")
    return {k: v.detach().clone() for k, v in gen.state_dict().items()}


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every tensor bit-identical (same keys, torch.equal)."""
    assert a.keys() == b.keys(), f"different tensors: {sorted(set(a) ^ set(b))}"
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)}/{len(a)} tensors differ, e.g. {differ[:3]}; max |diff| {max_abs_diff(a, b):.3g}"


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def states_differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def all_finite(obj) -> bool:
    """True if every floating tensor inside a (nested) checkpoint is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, float):
        return bool(np.isfinite(obj))
    return True


def library_sampler(cfg: Config, data: TinyData, attribute: str, rank: int = 0, world_size: int = 1):
    """The UnpairedSampler the train stage builds, on CPU."""
    from geogan.data.dataset import load_prepared

    prepared = load_prepared(data.prepared, data.landmarks)
    split = json.loads(data.splits[attribute].read_text())
    return training_sampler(prepared, split, cfg.train, torch.device("cpu"), rank, world_size)


def cpu_env():
    from geogan.training.distributed import DistEnv

    return DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


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


def no_effect_biases(net: torch.nn.Module) -> set[str]:
    """Names of the conv biases that cannot change any output of `net` (tests/test_distributed.py proves the set).

    A conv followed by an InstanceNorm (no affine) adds a per-channel constant that the norm
    subtracts again: every conv of a conv block, both convs of each ResNet block, D's second
    and third trunk convs. The decoder's 1x1 `reduce` convs too: their constant stays
    constant through the bilinear x2 upsampling (weights summing to 1), the reflection pad
    and the next conv, whose norm then removes it. Their true gradient is 0, so what they
    get is float noise, which Adam (about lr * sign(grad)) turns into steps of +-lr.
    """
    from geogan.nets.layers import Decoder, InstanceNorm

    names: set[str] = set()
    for prefix, module in net.named_modules():
        where = f"{prefix}." if prefix else ""
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, layer), (_, after) in itertools.pairwise(children):
                if isinstance(layer, torch.nn.Conv2d) and layer.bias is not None and isinstance(after, InstanceNorm):
                    names.add(f"{where}{name}.bias")
        if isinstance(module, Decoder):
            names.update(f"{where}reduce.{i}.bias" for i in range(len(module.reduce)))
    return names
