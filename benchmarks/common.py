"""What the benchmarks share: variants, kernel levers, the training state built as training builds it, random batches."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from geogan.config import Config, load_config
from geogan.data.dataset import Batch
from geogan.nets import COMPILED, STOCK
from geogan.nets.fast_ops import LEVERS, TRIED_LEVERS
from geogan.training.build import COMPILED_PARTS, compiled_state, eager_state, nets_for, region_view_for, step_context
from geogan.training.compile_cache import cache_custom_autograd_functions
from geogan.training.steps import StepContext, TrainingState

ROOT = Path(__file__).resolve().parents[1]
STEADY_STEP = 10**6  # past every warm-up: full loss weights, refinement on, as most of a run is

# name -> (train.precision, train.channels_last)
VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16_cl": ("bf16", True)}

__all__ = ["LEVERS", "ROOT", "TRIED_LEVERS", "VARIANTS", "add_with_levers", "bench_config", "compile_regions", "kernel_events", "make_state",
           "random_batch", "recipe_config"]


def recipe_config(params: Path, variant: str = "fp32") -> Config:
    """A params file (e.g. params/celeba-128.yaml) as it is, with a variant's precision and layout, eager."""
    cfg = load_config(params)
    precision, channels_last = VARIANTS[variant]
    return dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, precision=precision, channels_last=channels_last, compile=False))


def bench_config(ngf: int = 16, ndf: int = 64, n_blocks: int = 3, variant: str = "fp32") -> Config:
    """params.yaml with the reference's widths (or the given ones) and a variant's precision and layout."""
    cfg = recipe_config(ROOT / "params.yaml", variant)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ngf=ngf, ndf=ndf, n_blocks=n_blocks, n_scales=3))


def compile_regions(state: TrainingState, **compile_kwargs: Any) -> None:
    """Compile each sub-network in place (regional compilation) instead of G's whole cycle and D whole.

    Meant to trace each net's body once instead of once per call. Measured (benchmarks/NOTES.md run 24,
    256 px): no shorter a cold compile, since each net compiles again for each way the step calls it (inputs
    with and without gradients, D's scales per resolution), a 52 s warm start against 70 s, and a step 26%
    slower, the glue between the regions running eager. A benchmark option, not training's. State dicts
    keep their keys.
    """
    cache_custom_autograd_functions()  # as compiled_state does
    gen, disc = state.gen, state.disc
    local = [disc.local] if disc.local is not None else []
    for net in (gen.flow, gen.mask, gen.refine, gen.removal, *disc.scales, *local):
        net.compile(**compile_kwargs)


def add_with_levers(parser: argparse.ArgumentParser) -> None:
    """The `--with LEVER ...` option of every benchmark that builds the compiled step: exact rewrites left out of
    the compiled kernels (`TRIED_LEVERS`) to turn on, into `args.with_levers`."""
    parser.add_argument("--with", dest="with_levers", nargs="*", default=[], choices=TRIED_LEVERS,
                        help="turn on exact rewrites left out of the compiled kernels (fast_ops.TRIED_LEVERS)")


def make_state(cfg: Config, size: int, device: torch.device, compile_mode: str | None = None,
               compile_losses: bool = False, without: Sequence[str] = (), with_levers: Sequence[str] = (),
               distributed: bool = False, regions: bool = False,
               parts: Sequence[str] = COMPILED_PARTS, blocks: bool = False) -> tuple[TrainingState, StepContext]:
    """The training state and step context training builds for `cfg`, optionally compiled.

    Args:
        compile_mode: torch.compile's mode ("default", "reduce-overhead", ...); None = eager
            with the stock kernels. Compiled, the nets use the compiled kernels.
        compile_losses: compile each phase's D and loss terms as one graph (NOTES run 9).
        without: compiled-kernel levers (`LEVERS`) to turn off, to measure each one's worth.
        with_levers: levers left out of the compiled kernels (`TRIED_LEVERS`) to turn on.
        regions: with `compile_mode`, compile each sub-network alone (`compile_regions`), not the whole step.
        parts: with `compile_mode`, the step's graphs to compile (`COMPILED_PARTS`); the others run eager.
        blocks: with `compile_mode`, G's transfer and removal compiled once each, not G's whole cycle
            (`build.CompiledBlocks`; NOTES run 38).
    """
    kernels = COMPILED.without(without).with_levers(with_levers) if compile_mode else STOCK
    state = eager_state(nets_for(cfg.model, cfg.train, kernels), cfg.train, device, distributed)
    if compile_mode and regions:
        compile_regions(state, mode=compile_mode, dynamic=False)  # D's scales: one static graph per size
    elif compile_mode:
        channels_last = device.type == "cuda" and cfg.train.channels_last
        state = compiled_state(state, functools.partial(torch.compile, mode=compile_mode), losses=compile_losses,
                               parts=parts, blocks=blocks, channels_last=channels_last)
    # The first attribute's landmark region, for a recipe whose local D, mask prior or cutout use one
    region = region_view_for(cfg, cfg.regions.get(cfg.attributes[0]), size)
    return state, step_context(cfg.loss, cfg.train, STEADY_STEP, size, device, region)


def random_batch(batch: int, size: int, device: torch.device, seed: int) -> Batch:
    """A step batch of random images in [-1, 1] and landmarks inside the frame."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(2, batch, 3, size, size, generator=g) * 2 - 1
    lm = torch.rand(2, batch, 68, 2, generator=g) * 1.6 - 0.8
    return Batch(x_a=x[0].to(device), x_b=x[1].to(device), lm_a=lm[0].to(device), lm_b=lm[1].to(device))


def kernel_events(fn: Callable[[], object], reps: int) -> list:
    """The CUDA kernels of `reps` calls of `fn` under the profiler, one averaged event per kernel name (those with
    device time; `device_time_total` in µs over all calls). GPU time, not wall time: what the GPU did."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return [ev for ev in prof.key_averages() if ev.device_time_total > 0]


# Host calls that make the CPU wait for the GPU (or can: an allocator that frees cached memory synchronises).
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync", "cudaMemcpy",
              "cudaFree", "cudaMalloc")


def host_profile(fn: Callable[[], object], reps: int, trace_to: str | None = None) -> dict:
    """Where the host's time goes in `reps` calls of `fn`: the host calls that wait on the GPU, per call, and the
    operators with the most CPU time of their own. A step whose wall time is well over its GPU time either waits
    (these calls) or cannot launch fast enough (the operators). `trace_to`: a Chrome trace file to write."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    if trace_to:
        prof.export_chrome_trace(trace_to)
    events = prof.key_averages()
    waits = {ev.key: [round(ev.count / reps, 1), round(ev.cpu_time_total / reps / 1e3, 2)]
             for ev in events if ev.key in HOST_WAITS}
    top = sorted(events, key=lambda ev: -ev.self_cpu_time_total)[:20]
    return {"host_waits_per_step": waits,  # name: [calls, ms]
            "top_self_cpu_ms_per_step": {ev.key[:100]: round(ev.self_cpu_time_total / reps / 1e3, 2) for ev in top}}
