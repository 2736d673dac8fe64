"""The training state of the tiny config, built as training builds it, and checks on weights and checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from geogan.config import ModelConfig
from geogan.data.dataset import Batch
from geogan.nets import STOCK, Kernels, Nets
from geogan.training.build import COMPILED_PARTS, Compiler, compiled_state, eager_state, nets_for, step_context
from geogan.training.steps import RegionView, StepContext, TrainingState
from tests.helpers.params import tiny_config

STEADY_STEP = 10**6  # a step past every warm-up: full loss weights, refinement on


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with `n` intra-op threads, then restore the count: on a shared 2-core machine two spinning
    OpenMP threads per process make small convs several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_batch(seed: int, n: int = 2, size: int = 32) -> Batch:
    """A random step batch: images in [-1, 1], landmarks inside the frame."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, 3, size, size, generator=g) * 2 - 1
    lm = torch.rand(2, n, 68, 2, generator=g) * 1.6 - 0.8
    return Batch(x_a=x[0], x_b=x[1], lm_a=lm[0], lm_b=lm[1])


def tiny_model(**overrides) -> ModelConfig:
    """The tiny config's `model` section with field overrides (e.g. ngf=4)."""
    return dataclasses.replace(tiny_config().model, **overrides)


def tiny_nets(kernels: Kernels = STOCK, seed: int = 0, **model) -> Nets:
    """The tiny config's nets, built as training builds them, with `seed` as train.seed."""
    return nets_for(tiny_model(**model), dataclasses.replace(tiny_config().train, seed=seed), kernels)


def tiny_state(compiler: Compiler | None = None, losses: bool = False, distributed: bool = False,
               kernels: Kernels = STOCK, grad_sync: str = "ddp", parts: Sequence[str] = COMPILED_PARTS,
               blocks: bool = False, **model) -> TrainingState:
    """The CPU training state of the tiny nets; `compiler` (e.g. torch.compile with backend
    "aot_eager") compiles G and D, or with `losses` each phase's D and loss terms as one graph.
    `grad_sync` is `train.grad_sync` when `distributed`; `parts` the compiled graphs (`COMPILED_PARTS`);
    `blocks` compiles G's transfer and removal once each instead of its whole cycle (`build.CompiledBlocks`)."""
    train = dataclasses.replace(tiny_config().train, grad_sync=grad_sync)
    state = eager_state(tiny_nets(kernels, **model), train, torch.device("cpu"), distributed)
    return compiled_state(state, compiler, losses, parts, blocks) if compiler is not None else state


def tiny_context(size: int = 32, region: RegionView | None = None, loss: dict | None = None, **train) -> StepContext:
    """The step context of the tiny config at a steady step, with `loss` and `train` field overrides, on CPU."""
    cfg = tiny_config()
    return step_context(dataclasses.replace(cfg.loss, **(loss or {})), dataclasses.replace(cfg.train, **train),
                        STEADY_STEP, size, torch.device("cpu"), region)


def checkpoint_steps(work: Path) -> list[int]:
    """Steps of the checkpoints in work/checkpoints, ascending."""
    folder = Path(work) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("ckpt-*.pt"))


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


def cpu_env():
    from geogan.training.distributed import DistEnv

    return DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


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


def save_tiny_generator(path: Path, seed: int, step: int = 4, size: int = 64) -> Path:
    """A tiny real generator (ngf 4, one block) saved as the train stage saves it; the seed sets its weights."""
    from geogan.model import save_generator

    generator = tiny_nets(seed=seed, ngf=4, ndf=4, n_blocks=1, n_scales=1).generator
    meta = {"attribute": "Mustache", "resolution": size, "step": step,
            "config": {"loss": {"refine_weight": 0.1, "refine_start_step": 0}, "model": {"flow_inputs": "rgb"}}}
    save_generator(path, generator, meta)
    return path
