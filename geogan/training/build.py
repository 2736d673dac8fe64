"""The training state built from the config in one place: nets, optimisers, compiled forwards, step context, sampler.

The loop, the train stage, the benchmarks and the tests all build through these functions,
so a benchmark times exactly the step that training runs.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Collection

import torch

from geogan.config import Config, LossConfig, ModelConfig, RegionConfig, TrainConfig
from geogan.data.dataset import DomainTensors, PreparedData, UnpairedSampler
from geogan.landmarks.regions import RegionSpec
from geogan.nets import COMPILED, STOCK, Kernels, Nets, build_nets
from geogan.training.compile_cache import cache_custom_autograd_functions
from geogan.training.grad_sync import FlatGradSync
from geogan.training.schedule import mask_weight_at, refine_weight_at
from geogan.training.steps import RegionView, StepContext, TrainingState, discriminator_terms, generator_terms

Compiler = Callable[[Callable[..., Any]], Callable[..., Any]]


def kernels_for(train: TrainConfig) -> Kernels:
    """The layer kernels `train.compile` asks for: the compiled rewrites, or the stock ops."""
    return COMPILED if train.compile else STOCK


def nets_for(model: ModelConfig, train: TrainConfig, kernels: Kernels | None = None) -> Nets:
    """Seed with `train.seed` (identical initial weights on every rank) and build the nets."""
    torch.manual_seed(train.seed)
    return build_nets(model, kernels if kernels is not None else kernels_for(train))


def autocast_for(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context factory for the step's forwards: bf16 autocast for "bf16" (and "auto" on CUDA), else none."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def step_context(loss: LossConfig, train: TrainConfig, step: int, size: int, device: torch.device,
                 region: RegionView | None = None) -> StepContext:
    """What step `step` runs with: the loss weights on their schedules, precision, layout, augmentation.

    Args:
        loss, train: the config sections.
        step: the step about to run (the mask weight warms up, refinement starts late).
        size: image size in pixels.
        device: where the step runs (bf16 and channels_last are CUDA's).
        region: the attribute's landmark region, for the terms that use it.
    """
    weights = {**loss.step_weights(), "lambda_mask": mask_weight_at(step, loss.lambda_mask, loss.mask_warmup_steps)}
    return StepContext(size=size, weights=weights,
                       refine_weight=refine_weight_at(step, loss.refine_weight, loss.refine_start_step),
                       autocast=autocast_for(train.precision, device),
                       channels_last=device.type == "cuda" and train.channels_last,
                       d_augment=train.d_augment, region=region)


def region_view_for(cfg: Config, region: RegionConfig | None, size: int) -> RegionView | None:
    """What the step does with the attribute's region, from the config; None when nothing uses it."""
    uses = {"local_d": cfg.model.local_ndf > 0, "spare_cutout": cfg.train.cutout_spares_region,
            "mask_prior": cfg.loss.lambda_mask_region > 0}
    if not any(uses.values()):
        return None
    if region is None:
        on = ", ".join(k for k, v in uses.items() if v)
        raise ValueError(f"{on} need the attribute's landmark region (regions.<attribute> in params.yaml)")
    return RegionView(spec=RegionSpec.from_config(region, size), **uses)


def build_training(nets: Nets, train: TrainConfig, device: torch.device, distributed: bool) -> TrainingState:
    """Move the nets to the device and wrap them for the step: layout, DDP, fused Adam, `train.compile`.

    Load checkpoint weights into the nets before calling this under DDP (DDP broadcasts
    rank 0's weights at construction).
    """
    state = eager_state(nets, train, device, distributed)
    return compiled_state(state, compiler_for(train, device), losses=train.compile_losses) if train.compile else state


def compiler_for(train: TrainConfig, device: torch.device) -> Compiler:
    """torch.compile as `train` asks: Inductor's default mode, or with CUDA graphs (mode "reduce-overhead").

    CUDA graphs replay each compiled graph as one launch instead of hundreds, which is what
    a launch-bound step needs (benchmarks/NOTES.md run 16); they need CUDA, so CPU runs compile
    in the default mode whatever `train.compile_cuda_graphs` says.
    """
    graphs = train.compile_cuda_graphs and device.type == "cuda"
    return functools.partial(torch.compile, mode="reduce-overhead" if graphs else "default")


def eager_state(nets: Nets, train: TrainConfig, device: torch.device, distributed: bool) -> TrainingState:
    """The state without torch.compile: nets on the device (channels_last on CUDA), Adam, and when `distributed`
    either DDP wrappers or flat gradient all-reduces (`train.grad_sync`)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    cuda = device.type == "cuda"
    gen, disc = nets.generator.to(device), nets.discriminator.to(device)
    if cuda and train.channels_last:
        gen, disc = gen.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    # Fused Adam: one kernel for all parameters on CUDA; foreach (a few kernels) on CPU.
    opt_kw: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
    betas = (train.beta1, train.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=train.lr_g, betas=betas, **opt_kw)
    opt_d = torch.optim.Adam(disc.parameters(), lr=train.lr_d, betas=betas, **opt_kw)
    heat = getattr(gen, "hparams", {}).get("flow_extra_in", 0) > 0
    gen_fwd, disc_fwd, sync_g, sync_d = gen, disc, None, None
    if distributed and train.grad_sync == "flat":  # plain modules; one all-reduce per net after its backward
        sync_g, sync_d = FlatGradSync(gen), FlatGradSync(disc)
    elif distributed:
        ids = [device.index] if cuda else None
        gen_fwd, disc_fwd = DDP(gen, device_ids=ids), DDP(disc, device_ids=ids)
    return TrainingState(gen, disc, gen_fwd, disc_fwd, disc, opt_g, opt_d, discriminator_terms, generator_terms,
                         landmark_heatmaps=heat, sync_g=sync_g, sync_d=sync_d)


# The step's compiled graphs, each compiled (and cached) on its own: G's cycle, the D phase, the G phase.
COMPILED_PARTS = ("generator_cycle", "d_phase", "g_phase")


class CompiledBlocks:
    """G's transfer and removal, each compiled once for the cycle's two calls of it (`Generator.forward`'s `blocks`).

    A compiled graph is specialised on its inputs' dtypes, strides and which need gradients, and the cycle calls
    each block first on data, then on generated images that need gradients and come from other producers (under
    bf16 autocast: the mask is bf16 from G, float32 from the eager warp). So every input is given float32 (exact
    for a bf16 input), one layout's strides, and is made to need gradients: both calls then look the same and
    share one graph, for a few input gradients nobody reads (the flow net's first convolution, the warp's to b).
    Without this the two calls compile two graphs each (benchmarks/NOTES.md runs 24, 37 and 38). Outside autograd
    (no_grad) nothing is made to need gradients.

    Measured at 256 px on an H200 (run 38): a third fewer kernels to build, but a cold start no shorter (248 s
    against 244 s for the whole cycle) and a step bound by the host (99 ms for 69 ms of GPU time), so training
    compiles the whole cycle; `bench_startup --blocks` measures this again.
    """

    def __init__(self, generator: torch.nn.Module, compiler: Compiler, channels_last: bool) -> None:
        self._transfer = compiler(generator.transfer)
        self._remove = compiler(generator.remove)
        self._layout = torch.channels_last if channels_last else torch.contiguous_format

    def transfer(self, x_a: torch.Tensor, x_b: torch.Tensor, refine_weight: float | torch.Tensor,
                 heat_a: torch.Tensor | None = None, heat_b: torch.Tensor | None = None) -> Any:
        heats = [None if h is None else self._laid_out(h) for h in (heat_a, heat_b)]
        return self._transfer(self._input(x_a), self._input(x_b), refine_weight, *heats)

    def remove(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._remove(self._input(x), self._input(mask))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = self._laid_out(x)
        # A leaf that needs gradients: it shares the caller's data, and nothing flows back into the caller's graph.
        return x.detach().requires_grad_() if torch.is_grad_enabled() and not x.requires_grad else x

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """`x` in float32 and the layout, with the strides the layout gives its shape. Where a dim has size 1 (a
        mask's one channel) the strides can differ with the same bytes: eager and Inductor lay out G's masks so."""
        x = x.float().contiguous(memory_format=self._layout)
        strides = torch.empty(x.shape, device="meta", memory_format=self._layout).stride()
        return x if x.stride() == strides else x.as_strided(x.shape, strides)


def compiled_state(state: TrainingState, compiler: Compiler, losses: bool = False,
                   parts: Collection[str] = COMPILED_PARTS, blocks: bool = False,
                   channels_last: bool = False) -> TrainingState:
    """`state` with G's forward and D compiled by `compiler` (e.g. `torch.compile`, or a partial of it).

    Args:
        losses: compile each phase's D input (DiffAugment, region crops), D forward and loss terms as
            one graph instead of D alone (`train.compile_losses`; benchmarks/NOTES.md runs 9 and 26): fewer
            eager launches between the graphs, which is what a launch-bound step (128 px) pays for.
        parts: which of `COMPILED_PARTS` to compile; the others run eager. A process compiling one part writes
            that part's graphs to the compile cache. A whole step's start hits them only if the part's inputs look
            the same with the other parts compiled: on the GPU the G phase's did not (benchmarks/NOTES.md run 35).
        blocks: compile G's transfer and removal once each (`CompiledBlocks`) instead of G's whole cycle, which
            traces and compiles each of them twice; the cycle's glue (one warp) runs eager. A benchmark option.
        channels_last: with `blocks`, the step's image layout (`StepContext.channels_last`) given to every input.
    """
    unknown = set(parts) - set(COMPILED_PARTS)
    if unknown:
        raise ValueError(f"compiled_state: unknown parts {sorted(unknown)}; expected some of {COMPILED_PARTS}")
    cache_custom_autograd_functions()  # else every start traces and partitions G's joint graph again
    # Each part's callables; with `losses`, D runs inside the compiled terms.
    callables = {"generator_cycle": {"gen_fwd": state.gen_fwd},
                 "d_phase": {"d_terms": discriminator_terms} if losses else {"disc_fwd": state.disc_fwd},
                 "g_phase": {"g_terms": generator_terms} if losses else {"disc_frozen": state.disc_frozen}}
    fields = dict(state.__dict__)
    for part in parts:
        if part == "generator_cycle" and blocks:  # the cycle eager (under DDP when it is), its blocks compiled
            fields["gen_fwd"] = functools.partial(state.gen_fwd,
                                                  blocks=CompiledBlocks(state.gen, compiler, channels_last))
        else:
            fields.update({name: compiler(fn) for name, fn in callables[part].items()})
    return TrainingState(**fields)


def training_sampler(data: PreparedData, split: dict, train: TrainConfig, device: torch.device, rank: int = 0,
                     world_size: int = 1) -> UnpairedSampler:
    """This rank's unpaired batches of a split's training partition (`split["train"]["A"]` and `["B"]`)."""
    return UnpairedSampler(DomainTensors(data, split["train"]["A"], device),
                           DomainTensors(data, split["train"]["B"], device),
                           batch_size=train.batch_size, seed=train.seed, rank=rank, world_size=world_size,
                           augment_flip=train.augment_flip)

