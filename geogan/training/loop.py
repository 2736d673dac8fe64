"""The training loop: one code path for 1 CPU process, 1 GPU and N GPUs under torchrun.

Each step runs the generator's whole cycle once, then the discriminator phase (fakes
detached) and the generator phase (D frozen). Nothing in the step waits on the host:
losses stay on the device and are read only every `log_every` steps, together with a
device-side finiteness flag that guards every checkpoint, so a NaN never reaches disk.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geogan.config import Config, RegionConfig, TrainConfig, config_to_dict
from geogan.data.dataset import Batch, UnpairedSampler
from geogan.signals import Stopped
from geogan.tracking import NullTracker, Tracker
from geogan.training import checkpoint as ckpt
from geogan.training.build import build_training, kernels_for, nets_for, region_view_for, step_context
from geogan.training.compile_cache import cache_counters, compile_notice, compile_phases, use_compile_cache
from geogan.training.distributed import DistEnv, any_flag, params_in_sync
from geogan.training.ema import GeneratorEma, ema_decay_at
from geogan.training.schedule import lr_at
from geogan.training.steps import (LossGuard, NonFiniteLossError, RegionView, StepContext, TrainingState,  # noqa: F401
                                   generator_forward, train_step, visual_rows)
from geogan.visualize import image_grid, save_png


class Interrupted(Stopped):
    """SIGTERM/SIGINT arrived; a checkpoint was saved before leaving."""


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    step: int
    generator_state: dict[str, torch.Tensor]
    last_losses: dict[str, float]
    images_per_second: float
    checkpoint: Path | None
    resumed_from: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    cfg: Config,
    sampler: UnpairedSampler,
    env: DistEnv,
    work_dir: Path,
    key: str,
    tracker: Tracker | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    region: RegionConfig | None = None,
) -> TrainResult:
    """Train GeoGAN for cfg.train.steps steps, resuming from work_dir/checkpoints if it can.

    Args:
        cfg: the whole config (model, loss and train sections are used).
        sampler: unpaired batches for this rank.
        env: the distributed environment (from `init_from_env`).
        work_dir: run folder (checkpoints, image grids); written by rank 0 only.
        key: resume key; checkpoints with another key are not resumed.
        tracker: where metrics and grids go (rank 0); None logs nothing.
        progress: show a tqdm bar on rank 0.
        stop_after: stop (with a checkpoint) after this many steps of this call: for tests.
        region: the attribute's landmark region (`regions.<attr>`); needed by the local
            discriminator, the region-sparing cutout and the mask prior.
    Returns:
        A TrainResult holding the final generator weights (on CPU).
    Raises:
        NonFiniteLossError: a loss became NaN/Inf (names the loss and step).
        Interrupted: SIGTERM/SIGINT; a checkpoint was written first.
    """
    t = cfg.train
    started = time.perf_counter()
    tracker = tracker if (tracker is not None and env.is_main) else NullTracker()
    cache_folder = use_compile_cache(Path(work_dir)) if t.compile and t.compile_cache else None
    if cache_folder is not None:
        tracker.set_tags({"compile.cache": str(cache_folder)})
    if t.compile and env.is_main:
        print(compile_notice(cache_folder), flush=True)
    region_view = region_view_for(cfg, region, sampler.a.size)
    run = _start(cfg, env, Path(work_dir) / "checkpoints", key, tracker)
    if env.device.type == "cuda":
        # Shapes never change during a run: cuDNN may time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = t.cudnn_benchmark
    log = _Log(step=run.start, t0=time.perf_counter(), n0=run.start, started=started)
    stop: dict = {"signal": None}
    old_handlers = _install_signal_handlers(stop)
    bar = _progress_bar(progress and env.is_main, run.start, t.steps)
    try:
        _steps(cfg, run, sampler, env, Path(work_dir), key, tracker, region_view, log, stop, bar, stop_after)
    finally:
        _restore_signal_handlers(old_handlers)
        if bar is not None:
            bar.close()
    # The exported generator is the EMA when there is one: smoother, and what evaluation scores.
    exported = run.ema.module if run.ema is not None else run.ts.gen
    gen_state = {k: v.detach().cpu().clone() for k, v in exported.state_dict().items()}
    return TrainResult(step=log.step, generator_state=gen_state, last_losses=log.last, images_per_second=log.ips,
                       checkpoint=log.saved, resumed_from=run.start, history=log.history)


@dataclass
class _Run:
    """The built training state and where it starts."""

    ts: TrainingState
    ema: GeneratorEma | None
    start: int


@dataclass
class _Log:
    """What the loop carries between steps: the step, the last logged losses and throughput, the last checkpoint."""

    step: int
    t0: float
    started: float  # when train() was called: the start-up (build, resume, compile) ends at the first step
    n0: int
    ips: float = 0.0
    last: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    saved: Path | None = None


def _start(cfg: Config, env: DistEnv, ckpt_dir: Path, key: str, tracker: Tracker) -> _Run:
    """Build the nets, the EMA and the optimisers, from the latest checkpoint when one is resumed."""
    t = cfg.train
    nets = nets_for(cfg.model, t)
    kernels = kernels_for(t)
    tracker.set_tags({"nets.kernels": kernels.name})
    latest = ckpt.find_latest(ckpt_dir, key, map_location="cpu", max_step=t.steps)
    if env.is_main:
        _report_resume(latest, key, tracker)
    state = latest.state
    if state is None and t.init_from:
        _init_generator(nets.generator, Path(t.init_from), env)
    if state is not None:
        nets.generator.load_state_dict(state["generator"])
        nets.discriminator.load_state_dict(state["discriminator"])
    ema = None
    if t.ema_decay > 0:
        ema = GeneratorEma(nets.generator)  # from the (resumed or initial) weights; moved with G below
        if state is not None and "generator_ema" in state:
            ema.load_state_dict(state["generator_ema"])
    ts = build_training(nets, t, env.device, env.distributed)
    if ema is not None:
        layout = torch.channels_last if env.device.type == "cuda" and t.channels_last else torch.contiguous_format
        ema.module.to(device=env.device, memory_format=layout)
    start = 0
    if state is not None:
        ts.opt_g.load_state_dict(state["opt_g"])
        ts.opt_d.load_state_dict(state["opt_d"])
        ckpt.set_rng_state(state["rng"])
        start = int(state["step"])
        if env.is_main:
            print(f"resuming from {ckpt_dir} at step {start}")
    return _Run(ts, ema, start)


def _steps(cfg: Config, run: _Run, sampler: UnpairedSampler, env: DistEnv, work_dir: Path, key: str,
           tracker: Tracker, region_view: RegionView | None, log: _Log, stop: dict, bar, stop_after: int | None) -> None:
    """Run steps from log.step to cfg.train.steps (or stop_after of them), logging, drawing and saving on schedule."""
    t, ts, ema = cfg.train, run.ts, run.ema
    guard = LossGuard(env.device)
    vis_batch = sampler.batch(0)  # a fixed batch, so grids compare across steps
    while log.step < t.steps:
        step = log.step
        _set_learning_rates(ts, t, step)
        ctx = step_context(cfg.loss, t, step, sampler.a.size, env.device, region_view)
        losses = train_step(ts, sampler.batch(step), ctx)
        guard.update(losses, step)
        if ema is not None:
            ema.update(ts.gen, ema_decay_at(step, t.ema_decay))
        log.step = step = step + 1
        if step == run.start + 1:
            _report_startup(log, t, env, tracker)

        at_log = step % t.log_every == 0 or step == t.steps
        at_ckpt = step % t.checkpoint_every == 0 or step == t.steps
        # Alone, the signal flag is a Python bool (free); under DDP ranks agree at log steps only.
        if env.distributed:
            interrupted = any_flag(env, stop["signal"] is not None) if at_log else False
        else:
            interrupted = stop["signal"] is not None
        stopping = stop_after is not None and step - run.start >= stop_after
        if at_log or at_ckpt or interrupted or stopping:
            guard.check(env)  # one host sync: raises NonFiniteLossError (on every rank) before anything is saved
            _log_losses(guard.read(losses, env), t, ts, env, tracker, log, bar)  # every rank joins the read
        if env.is_main and (step % t.image_every == 0 or step == t.steps):
            _log_grid(ts, ema.module if ema is not None else ts.gen, vis_batch, ctx, work_dir, step, tracker)
        if at_ckpt or interrupted or stopping:
            log.saved = _save(env, ts, ckpt_dir=work_dir / "checkpoints", step=step, key=key, cfg=cfg, ema=ema)
        if bar is not None:
            bar.update(1)
        if interrupted:
            raise Interrupted(f"stopped by signal {stop['signal']} at step {step}; checkpoint {log.saved}")
        if stopping:
            break


def _report_startup(log: _Log, t: TrainConfig, env: DistEnv, tracker: Tracker) -> None:
    """Seconds from train() to the end of this process's first step (compilation included), once per process."""
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)  # once per process, not in the steady loop
    seconds = time.perf_counter() - log.started
    if log.step % t.log_every and log.step != t.steps:  # the first throughput window starts after the start-up
        log.t0, log.n0 = time.perf_counter(), log.step
    tracker.log_metrics({"perf/startup_s": seconds}, log.step)
    if env.is_main and t.compile:
        cache = ", ".join(f"{k} {v}" for k, v in cache_counters().items())
        phases = ", ".join(f"{k} {v:.1f}" for k, v in compile_phases().items())
        print(f"compiled: first step after {seconds:.1f} s (compile cache: {cache}; {phases or 'no compile timers'})",
              flush=True)


def _set_learning_rates(ts: TrainingState, t: TrainConfig, step: int) -> None:
    for g in ts.opt_g.param_groups:
        g["lr"] = lr_at(step, t.lr_g, t.lr_decay_every, t.lr_decay_g)
    for g in ts.opt_d.param_groups:
        g["lr"] = lr_at(step, t.lr_d, t.lr_decay_every, t.lr_decay_d)


def _log_losses(last: dict[str, float], t: TrainConfig, ts: TrainingState, env: DistEnv, tracker: Tracker,
                log: _Log, bar) -> None:
    """Record the losses (under DDP the mean over ranks) and the throughput since the last log."""
    step = log.step
    dt = time.perf_counter() - log.t0
    log.ips = ips = (step - log.n0) * t.batch_size / max(dt, 1e-9)
    log.t0, log.n0, log.last = time.perf_counter(), step, last
    log.history.append({"step": step, **last, "images_per_second": ips})
    tracker.log_metrics({**{f"loss/{k}": v for k, v in last.items()}, "perf/images_per_second": ips,
                         "lr/g": ts.opt_g.param_groups[0]["lr"], "lr/d": ts.opt_d.param_groups[0]["lr"]}, step)
    if bar is not None:
        bar.set_postfix({"g": f"{last.get('g/total', 0):.3f}", "d": f"{last.get('d/total', 0):.3f}", "img/s": f"{ips:.1f}"})
    elif env.is_main:  # no bar (logs of a pod or a batch job): one line per log interval
        print(f"step {step}/{t.steps}  g {last.get('g/total', 0):.3f}  d {last.get('d/total', 0):.3f}  "
              f"landmark {last.get('g/landmark', 0):.4f}  {ips:.1f} img/s", flush=True)


def _report_resume(latest: ckpt.Latest, key: str, tracker: Tracker) -> None:
    """One line per checkpoint passed over, and an MLflow tag naming them: a fallback is never silent."""
    if latest.state is not None:
        fallback = f"resuming from the older {latest.path.name}"
    else:
        fallback = "no older checkpoint: starting afresh" if latest.path is None else f"the older {latest.path.name} is not resumed"
    for path, why in latest.unreadable:
        print(f"checkpoint {path}: unreadable ({why}); {fallback}", flush=True)
    if latest.unreadable:
        skipped = "; ".join(f"{path.name}: {why[:300]}" for path, why in latest.unreadable)
        tracker.set_tags({"resume.unreadable_checkpoints": skipped[:5000],
                          "resume.fallback": latest.path.name if latest.state is not None else "none"})
    if latest.other_key is not None:
        print(f"checkpoint {latest.path}: made with other settings or data (key {latest.other_key} != {key}); "
              "starting afresh", flush=True)


def _init_generator(gen: torch.nn.Module, path: Path, env: DistEnv) -> None:
    """Start G from a saved generator (networks are resolution-free, so 128 px weights fit 256 px)."""
    from geogan.model import load_generator

    if not path.is_file():
        raise FileNotFoundError(f"train.init_from: {path}: not found")
    pretrained, meta = load_generator(path)
    if pretrained.hparams != getattr(gen, "hparams", None):
        raise ValueError(f"train.init_from: {path} has networks {pretrained.hparams}, the config builds {gen.hparams}")
    gen.load_state_dict(pretrained.state_dict())
    if env.is_main:
        print(f"generator initialised from {path} ({meta.get('attribute')}, {meta.get('resolution')} px, step {meta.get('step')})")


@torch.no_grad()
def _log_grid(ts: TrainingState, generator: torch.nn.Module, batch: Batch, ctx: StepContext, work_dir: Path,
              step: int, tracker: Tracker) -> None:
    plain = TrainingState(**{**ts.__dict__, "gen_fwd": generator})  # no DDP/compile for a side forward
    was_training = generator.training
    generator.eval()
    out = generator_forward(plain, batch, ctx)
    generator.train(was_training)
    grid = image_grid(visual_rows(batch, out))
    save_png(Path(work_dir) / "grids" / f"step-{step:08d}.png", grid)
    tracker.log_image(grid, "grids", step)


def _save(env: DistEnv, ts: TrainingState, ckpt_dir: Path, step: int, key: str, cfg: Config,
          ema: GeneratorEma | None = None) -> Path | None:
    if not params_in_sync(env, ts.gen):
        raise RuntimeError(f"step {step}: generator weights differ across ranks; not saving a checkpoint")
    if not env.is_main:
        return None
    state = {"generator": ts.gen.state_dict(), "discriminator": ts.disc.state_dict(), "opt_g": ts.opt_g.state_dict(),
             "opt_d": ts.opt_d.state_dict(), "rng": ckpt.rng_state(), "resume_key": key, "config": config_to_dict(cfg)}
    if ema is not None:
        state["generator_ema"] = ema.state_dict()
    return ckpt.save_checkpoint(ckpt_dir, step, state)


def _install_signal_handlers(stop: dict) -> dict:
    # SIGTERM is what Kubernetes sends before killing a pod: finish the step, save, leave.
    old = {}

    def handler(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. inside a KFP local runner thread)
            pass
    return old


def _restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


def _progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
