"""One training step in two phases: D on detached fakes, then G through a frozen D.

Kept apart from the loop so the benchmark times exactly the step that training runs
(both build it through `geogan.training.build`).
Losses stay on the device; `LossGuard` accumulates a finiteness flag without syncing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from geogan.data.dataset import Batch
from geogan.landmarks.regions import RegionSpec, attribute_box, box_crop, box_mask, outside_mass
from geogan.losses import discriminator_loss_terms, generator_loss_terms, local_generator_terms, weigh
from geogan.training.augment import diff_augment
from geogan.training.distributed import DistEnv, first_over_ranks, mean_over_ranks


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RegionView:
    """How the step uses the attribute's landmark region: D's local crops, cutout sparing, the mask prior."""

    spec: RegionSpec
    local_d: bool = False  # crops go to the local discriminator
    spare_cutout: bool = False  # cutout leaves the region alone
    mask_prior: bool = False  # the G terms include the mask mass outside the region


@dataclass(frozen=True)
class StepContext:
    """Per-step constants: image size, loss weights, refinement weight, precision."""

    size: int
    weights: dict[str, float]
    refine_weight: float
    autocast: Callable[[], Any] = contextlib.nullcontext
    channels_last: bool = False
    d_augment: tuple[str, ...] = ()  # DiffAugment policies applied to every D input
    region: RegionView | None = None  # the attribute's landmark region, for the terms that use it


@dataclass
class TrainingState:
    """Networks, their (possibly DDP-wrapped / compiled) forwards, and optimisers."""

    gen: torch.nn.Module  # the plain modules: what checkpoints hold
    disc: torch.nn.Module
    gen_fwd: Callable[..., Any]  # DDP and/or torch.compile wrappers used in the step
    disc_fwd: Callable[..., Any]
    disc_frozen: Callable[..., Any]  # D for the G phase: no DDP (D gets no gradients there)
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    # Each phase's D input, D forward and unweighted loss terms: `discriminator_terms` and
    # `generator_terms`, or compiled together (`compiled_state(..., losses=True)`) so layout copies and loss arithmetic fuse with D.
    d_terms: Callable[..., dict[str, torch.Tensor]]
    g_terms: Callable[..., dict[str, torch.Tensor]]
    landmark_heatmaps: bool = False  # the flow net also takes landmark heatmaps
    # Under `train.grad_sync: flat`: average G's / D's gradients over ranks after their backward (no DDP wrappers)
    sync_g: Callable[[], None] | None = None
    sync_d: Callable[[], None] | None = None


def train_step(state: TrainingState, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
    """One full GeoGAN step (G cycle forward, D update, G update); returns detached losses."""
    # Under CUDA graphs (train.compile_cuda_graphs) a new step may reuse the last step's graph outputs'
    # memory; elsewhere this is a counter increment.
    torch.compiler.cudagraph_mark_step_begin()
    out = generator_forward(state, batch, ctx)
    logs_d = discriminator_phase(state, batch, out, ctx)
    logs_g = generator_phase(state, batch, out, ctx)
    return {**logs_d, **logs_g}


def generator_forward(state: TrainingState, batch: Batch, ctx: StepContext) -> Any:
    """The generator's whole cycle for a batch (heatmaps from landmarks when configured)."""
    heat_a = heat_b = None
    if state.landmark_heatmaps:
        from geogan.nets.flow import landmark_heatmaps

        heat_a, heat_b = landmark_heatmaps(batch.lm_a, ctx.size), landmark_heatmaps(batch.lm_b, ctx.size)
    # A tensor, not a float: a compiled G would specialise on the float and compile again when
    # `refine_start_step` turns the refinement on (minutes, mid-run). The fill is a kernel, not a copy.
    refine_weight = torch.full((), ctx.refine_weight, device=batch.x_a.device)
    with ctx.autocast():
        return state.gen_fwd(_layout(batch.x_a, ctx.channels_last), _layout(batch.x_b, ctx.channels_last),
                             refine_weight, heat_a, heat_b)


def fakes_of(out: Any) -> list[torch.Tensor]:
    """The four generated images of the cycle, each with its target domain."""
    return [out.x_out, out.x_removed, out.x_rec_b, out.x_rec_a]


def discriminator_phase(state: TrainingState, batch: Batch, out: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
    """Update D on real a, real b and the detached fakes; returns detached loss tensors."""
    state.disc.requires_grad_(True)
    with ctx.autocast():
        terms = state.d_terms(state.disc_fwd, batch.x_a, batch.x_b, fakes_of(out), batch.lm_a, batch.lm_b,
                              ctx.d_augment, ctx.channels_last, ctx.region)
    total, logs = weigh(terms, ctx.weights, "d")
    state.opt_d.zero_grad(set_to_none=True)
    total.backward()
    if state.sync_d is not None:
        state.sync_d()
    state.opt_d.step()
    return logs


def generator_phase(state: TrainingState, batch: Batch, out: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
    """Update G through D with D's parameters frozen (no D gradients computed)."""
    state.disc.requires_grad_(False)
    with ctx.autocast():
        terms = state.g_terms(state.disc_frozen, out, batch.lm_a, batch.lm_b, ctx.size, ctx.d_augment,
                              ctx.channels_last, ctx.region)
    total, logs = weigh(terms, ctx.weights, "g")
    state.opt_g.zero_grad(set_to_none=True)
    total.backward()
    if state.sync_g is not None:
        state.sync_g()
    state.opt_g.step()
    state.disc.requires_grad_(True)
    return logs


def discriminator_terms(disc_fwd: Callable[..., Any], x_a: torch.Tensor, x_b: torch.Tensor, fakes: list[torch.Tensor],
                        lm_a: torch.Tensor, lm_b: torch.Tensor, d_augment: tuple[str, ...], channels_last: bool,
                        region: RegionView | None = None) -> dict[str, torch.Tensor]:
    """D's unweighted loss terms from one forward over reals and detached fakes (and their region crops)."""
    n = x_a.shape[0]
    # One forward over reals and fakes: one DDP all-reduce, fewer launches.
    d_in = torch.cat([x_a, x_b, *(f.detach() for f in fakes)])
    lm_in = torch.cat([lm_a, lm_b, *fake_landmarks(lm_a, lm_b)])  # each image's own geometry
    x_in, crops = _d_inputs(d_in, lm_in, d_augment, channels_last, region)
    if crops is None:
        return discriminator_loss_terms(disc_fwd(x_in), n_real_a=n, n_real_b=n, n_fake=4 * n)
    d_all = disc_fwd(x_in, crops)
    terms = discriminator_loss_terms(d_all[:-1], n_real_a=n, n_real_b=n, n_fake=4 * n)
    local = discriminator_loss_terms(d_all[-1:], n_real_a=n, n_real_b=n, n_fake=4 * n)
    return {**terms, **{f"local_{k}": v for k, v in local.items()}}


def generator_terms(disc_frozen: Callable[..., Any], out: Any, lm_a: torch.Tensor, lm_b: torch.Tensor, size: int,
                    d_augment: tuple[str, ...], channels_last: bool, region: RegionView | None = None,
                    ) -> dict[str, torch.Tensor]:
    """G's unweighted loss terms, D seeing the four fakes (and their region crops)."""
    n = lm_a.shape[0]
    lm_fakes = torch.cat(fake_landmarks(lm_a, lm_b))
    x_in, crops = _d_inputs(torch.cat(fakes_of(out)), lm_fakes, d_augment, channels_last, region)
    if crops is None:
        terms = generator_loss_terms(out, disc_frozen(x_in), n=n, lm_a=lm_a, lm_b=lm_b, size=size)
    else:
        d_fake = disc_frozen(x_in, crops)
        terms = generator_loss_terms(out, d_fake[:-1], n=n, lm_a=lm_a, lm_b=lm_b, size=size)
        terms.update(local_generator_terms(d_fake[-1], n))
    if region is not None and region.mask_prior:
        # a's mask lives in a's frame, the way back's mask in b's.
        inside_a = box_mask(attribute_box(lm_a, region.spec.points, region.spec.margin), size)
        inside_b = box_mask(attribute_box(lm_b, region.spec.points, region.spec.margin), size)
        terms["mask_region"] = outside_mass(out.mask, inside_a) + outside_mass(out.mask_rec, inside_b)
    return terms


def fake_landmarks(lm_a: torch.Tensor, lm_b: torch.Tensor) -> list[torch.Tensor]:
    """The landmarks of the four fakes, in `fakes_of` order: a* and rec_a have a's geometry, F(b) and rec_b b's."""
    return [lm_a, lm_b, lm_b, lm_a]


def _d_inputs(x: torch.Tensor, lm: torch.Tensor, d_augment: tuple[str, ...], channels_last: bool,
              region: RegionView | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What D sees: DiffAugment (differentiable, so G's gradients pass) in D's layout, and the region crops."""
    if region is None or not (region.local_d or region.spare_cutout):
        return _layout(diff_augment(x, d_augment), channels_last), None
    box = attribute_box(lm, region.spec.points, region.spec.margin)
    spare = box_mask(box, x.shape[-1]) if region.spare_cutout and "cutout" in d_augment else None
    x = diff_augment(x, d_augment, spare)
    crops = _layout(box_crop(x, box, region.spec.crop_hw), channels_last) if region.local_d else None
    return _layout(x, channels_last), crops


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class LossGuard:
    """Remembers, on the device, whether any loss was non-finite and when it first was.

    `update` costs a few tiny kernels and no host sync; `check` syncs once and raises
    naming the first bad loss and its step, before anything is written.
    """

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_names = None  # (L,) bool over loss names, set at the first update
        self.names: list[str] = []

    def update(self, losses: dict[str, torch.Tensor], step: int) -> None:
        if not self.names:
            self.names = list(losses)
            self.bad_names = torch.zeros(len(self.names), dtype=torch.bool, device=self.first_bad_step.device)
        values = torch.stack([losses[k].detach().float() for k in self.names])
        bad = ~torch.isfinite(values)
        fresh = bad.any() & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(fresh, torch.full_like(self.first_bad_step, step + 1), self.first_bad_step)
        self.bad_names = torch.where(fresh, bad, self.bad_names)

    def check(self, env: DistEnv | None = None) -> None:
        """Raise if a loss went bad; with `env` under DDP every rank raises together (none is left waiting)."""
        step = int(self.first_bad_step)
        if env is not None and env.distributed:
            step = first_over_ranks(env, step)
        if step >= 0:
            mine = int(self.first_bad_step) == step and self.bad_names is not None
            names = [n for n, b in zip(self.names, self.bad_names.tolist()) if b] if mine else ["(on another rank)"]
            raise NonFiniteLossError(f"loss {', '.join(names)} became non-finite (NaN/Inf) at step {step}; "
                                     "stopped without saving; the last good checkpoint is kept")

    @staticmethod
    def read(losses: dict[str, torch.Tensor], env: DistEnv | None = None) -> dict[str, float]:
        """Losses as floats, one host transfer for all; with `env` under DDP, averaged over ranks.

        Each rank's losses are means over its shard; equal shards make their mean the loss of
        the global batch, so an N-GPU run logs the same curve as one GPU at that batch.
        """
        names = list(losses)
        values = torch.stack([losses[k].detach().float() for k in names])
        if env is not None:
            values = mean_over_ranks(env, values)
        return dict(zip(names, values.tolist()))


def visual_rows(batch: Batch, out: Any, n: int = 8) -> list[tuple[str, torch.Tensor]]:
    """The image-grid rows: a, b, warped b', mask, blend, refined a*, F(b), flow."""
    from geogan.visualize import flow_to_rgb

    return [("source a", batch.x_a[:n]), ("ref b", batch.x_b[:n]), ("warped b'", out.x_warp[:n]),
            ("mask m", out.mask[:n] * 2 - 1), ("blend", out.x_blend[:n]), ("a* refined", out.x_out[:n]),
            ("F(b)", out.x_removed[:n]), ("flow", flow_to_rgb(out.flow_ab[:n]))]
