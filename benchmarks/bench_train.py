"""Benchmark the real GeoGAN training step on a GPU: images/s, FLOPs per step, MFU against the measured bf16 peak.

Runs `geogan.training.steps.train_step` (the exact step training runs) on random data
for several resolutions and batch sizes, baseline (fp32 + TF32, eager, as the reference
ran) beside optimised (bf16 autocast, channels_last, fused Adam, torch.compile), and
prints a table last. Writes JSON to --out.

    python -m benchmarks.bench_train --out $OUT/train.json
    python -m benchmarks.bench_train --params params/celeba-128.yaml --sizes 128 --batches 32 64 --flops-only  # CPU
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import (LEVERS, VARIANTS, add_with_levers, bench_config, kernel_events,
                               make_state, random_batch, recipe_config)
from geogan.config import Config
from geogan.data.dataset import Batch
from geogan.training.steps import StepContext, discriminator_phase, generator_forward, generator_phase, train_step


def bf16_peak_tflops(n: int = 8192, reps: int = 20) -> float:
    """Measured bf16 matmul rate (TFLOP/s) on random data: the MFU denominator."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def mfu(flops_per_step: float, step_s: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: the step's FLOPs per second over the measured bf16 peak."""
    return flops_per_step / step_s / (peak_tflops * 1e12)


def step_config(args: argparse.Namespace, variant: str) -> Config:
    """The config the rows time: `--params` as it is, else params.yaml with `--ngf/--ndf/--n-blocks`."""
    if args.params is not None:
        return recipe_config(args.params, variant)
    return bench_config(args.ngf, args.ndf, args.n_blocks, variant)


def count_flops(cfg: Config, size: int, batch: int, device: torch.device) -> float:
    """Model FLOPs of one full step (forward + backward of G and D), counted in fp32 eager.

    The count does not depend on the device, so a CPU can count a step that a GPU timed.
    """
    from torch.utils.flop_counter import FlopCounterMode

    state, ctx = make_state(cfg, size, device)
    b = random_batch(batch, size, device, 0)
    with FlopCounterMode(display=False) as fc:
        train_step(state, b, ctx)
    return float(fc.get_total_flops())


def time_steps(cfg: Config, size: int, batch: int, compile_mode: str | None, steps: int, warmup: int,
               compile_losses: bool = False, profile: bool = False, breakdown: bool = False,
               without: tuple[str, ...] = (), regions: bool = False, with_levers: tuple[str, ...] = ()) -> dict:
    """Time `steps` steps of `cfg`'s step after `warmup` (its first compile included in `warmup_s`); optionally
    split the time by phase and profile the same state."""
    state, ctx = make_state(cfg, size, torch.device("cuda"), compile_mode, compile_losses, without, with_levers,
                            regions=regions)
    batches = [random_batch(batch, size, torch.device("cuda"), i) for i in range(4)]  # rotate: no cache effects
    t0 = time.perf_counter()
    for i in range(warmup):
        train_step(state, batches[i % 4], ctx)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    # Before the timed steps: a call cut short by its time limit still says how long the compile took
    print(f"{size} px batch {batch}: {warmup} warm-up steps (the compile among them) took {warm_s:.1f} s", flush=True)
    torch.cuda.reset_peak_memory_stats()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for i in range(steps):
        train_step(state, batches[i % 4], ctx)
    e.record()
    e.synchronize()
    step_s = s.elapsed_time(e) / 1e3 / steps
    result = {"step_ms": step_s * 1e3, "pairs_per_s": batch / step_s, "warmup_s": warm_s,
              "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}
    if breakdown:
        result["phase_ms"] = time_phases(state, ctx, batches, steps)
    if profile:
        result["profile"], result["gpu_busy_ms"] = profile_top_kernels(state, ctx, batches[0])
    return result


def time_phases(state, ctx: StepContext, batches: list[Batch], steps: int) -> dict[str, float]:
    """Mean GPU ms of each phase of `train_step`: G's cycle forward, D's update, G's update.

    Events between the phases measure the GPU's time on each as long as the host keeps
    the queue full (the step has no host syncs), so the three add up to the step time.
    """
    names = ("generator_forward", "discriminator_phase", "generator_phase")
    totals = dict.fromkeys(names, 0.0)
    for i in range(steps):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        b = batches[i % 4]
        ev[0].record()
        out = generator_forward(state, b, ctx)
        ev[1].record()
        discriminator_phase(state, b, out, ctx)
        ev[2].record()
        generator_phase(state, b, out, ctx)
        ev[3].record()
        ev[3].synchronize()
        for k, name in enumerate(names):
            totals[name] += ev[k].elapsed_time(ev[k + 1]) / steps
    return totals


def profile_top_kernels(state, ctx: StepContext, batch: Batch, top: int = 25) -> tuple[list[dict], float]:
    """The step's most expensive CUDA kernels over 5 steps of an already warm state, and the GPU-busy ms per step.

    Busy time well below the step time would mean the GPU waits on the host (launch-bound).
    """
    rows = []
    events = kernel_events(lambda: train_step(state, batch, ctx), 5)
    total = sum(ev.device_time_total for ev in events)
    for ev in sorted(events, key=lambda ev: -ev.device_time_total)[:top]:
        rows.append({"kernel": ev.key[:160], "share": ev.device_time_total / total, "ms_per_step": ev.device_time_total / 5 / 1e3,
                     "calls_per_step": ev.count / 5})
    classes: dict[str, list[float]] = {}
    for ev in events:
        ms_calls = classes.setdefault(kernel_class(ev.key), [0.0, 0.0])
        ms_calls[0] += ev.device_time_total / 5 / 1e3
        ms_calls[1] += ev.count / 5
    rows += [{"kernel": f"[all {name}]", "share": ms / (total / 5 / 1e3), "ms_per_step": ms, "calls_per_step": calls}
             for name, (ms, calls) in sorted(classes.items(), key=lambda kv: -kv[1][0])]
    return rows, total / 5 / 1e3


def kernel_class(name: str) -> str:
    """A kernel's kind, by its name: where a profile's time goes when no single kernel dominates."""
    lowered = name.lower()
    if lowered.startswith("triton_red") or lowered.startswith("triton_per"):
        return "Triton reductions (norm statistics, their backward)"
    if lowered.startswith("triton"):
        return "Triton pointwise"
    if any(tag in lowered for tag in ("cudnn", "conv", "xmma", "cutlass", "sm90_", "sm80_", "implicit", "wgrad", "dgrad", "gemm", "nvjet")):
        return "cuDNN / CUTLASS convolutions and GEMMs"
    if "copy" in lowered or "memcpy" in lowered or "memset" in lowered or "fill" in lowered:
        return "copies and fills"
    if "adam" in lowered or "foreach" in lowered:
        return "optimiser"
    return "other"


def inductor_settings(items: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs as Inductor config settings (`torch._inductor.config`), each key checked to exist."""
    import torch._inductor.config as inductor_config

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--inductor {item!r}: expected KEY=VALUE, e.g. coordinate_descent_tuning=True")
        try:
            getattr(inductor_config, key)  # the config module raises AttributeError for an unknown key
        except AttributeError:
            raise ValueError(f"--inductor {item!r}: torch._inductor.config has no setting {key!r}") from None
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value  # a plain string, e.g. a backend name
    return settings


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, default=None,
                   help="time this params file's step as it is (e.g. params/celeba-128.yaml: local D, heatmaps); "
                        "default: params.yaml with --ngf/--ndf/--n-blocks")
    p.add_argument("--flops-only", action="store_true",
                   help="count each row's FLOPs per step and stop (no GPU needed): MFU for rates measured elsewhere")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 24, 32, 64])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16_cl"], choices=sorted(VARIANTS),
                   help="fp32 = the baseline (TF32 convs, eager); bf16 = autocast; _cl = channels_last")
    p.add_argument("--compile-mode", default="none", help="torch.compile mode for the non-fp32 variants; 'none' = eager")
    p.add_argument("--compile-regions", action="store_true",
                   help="compile each sub-network alone (regional compilation), not G's cycle and D whole")
    p.add_argument("--compile-losses", action="store_true",
                   help="compile each phase's D input, D and loss terms as one graph (not D alone)")
    p.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Inductor settings for the compiled rows, e.g. coordinate_descent_tuning=True")
    p.add_argument("--without", nargs="*", default=[], choices=LEVERS,
                   help="turn off compiled-kernel levers (geogan.nets.fast_ops), to measure each one's worth")
    add_with_levers(p)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=3)
    p.add_argument("--breakdown", action="store_true", help="also time each phase of the step")
    p.add_argument("--profile", action="store_true", help="profile the last variant's step (top kernels)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.compile_regions and args.compile_losses:
        p.error("--compile-regions and --compile-losses exclude each other: the loss terms run between the regions")
    try:
        args.inductor_settings = inductor_settings(args.inductor)
    except ValueError as err:
        p.error(str(err))
    return args


def measure_rows(args: argparse.Namespace, compile_mode: str | None, peak: float, header: dict) -> list[dict]:
    """One row per size, batch and variant that fits in memory, printed as it is measured and written to
    `--out` (under `header`) after each row, so a call cut short keeps the rows it finished."""
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            flops = count_flops(step_config(args, "fp32"), size, batch, torch.device("cuda"))
            for variant in args.variants:
                r = measure_variant(args, size, batch, variant, compile_mode, flops, peak)
                if r is None:
                    continue
                rows.append(r)
                if args.out:
                    args.out.write_text(json.dumps({**header, "rows": rows}, indent=2))
                print(json.dumps({k: v for k, v in r.items() if k != "profile"}), flush=True)
                if "profile" in r:
                    print(f"  GPU busy {r['gpu_busy_ms']:.1f} ms per step of {r['step_ms']:.1f}")
                for row in r.get("profile", []):
                    print(f"  {row['share'] * 100:5.1f}%  {row['ms_per_step']:7.2f} ms  x{row['calls_per_step']:<4.0f} {row['kernel']}")
                torch.cuda.empty_cache()
    return rows


def measure_variant(args: argparse.Namespace, size: int, batch: int, variant: str, compile_mode: str | None,
                    flops: float, peak: float) -> dict | None:
    """Time one variant at one size and batch: its row with MFU, or None when it runs out of memory."""
    mode = None if variant == "fp32" else compile_mode
    compile_losses = bool(mode) and args.compile_losses
    regions = bool(mode) and args.compile_regions
    without = tuple(args.without) if mode else ()
    with_levers = tuple(args.with_levers) if mode else ()
    name = (variant + ("+compile" if mode else "") + ("-regions" if regions else "") + ("+losses" if compile_losses else "")
            + "".join(f"-{lever}" for lever in without) + "".join(f"+{lever}" for lever in with_levers)
            + ("".join(f"+{key}" for key in args.inductor_settings) if mode else ""))
    try:
        r = time_steps(step_config(args, variant), size, batch, mode, args.steps, args.warmup,
                       compile_losses, profile=args.profile and variant == args.variants[-1],
                       breakdown=args.breakdown, without=without, regions=regions,
                       with_levers=with_levers)
    except torch.OutOfMemoryError:
        print(f"{size} px batch {batch} {name}: out of memory", flush=True)
        torch.cuda.empty_cache()
        return None
    r.update({"size": size, "batch": batch, "variant": name, "tflop_per_step": flops / 1e12,
              "mfu": mfu(flops, r["step_ms"] / 1e3, peak)})
    return r


def print_table(rows: list[dict]) -> None:
    """The results table, one line per measured row (and its phases when timed)."""
    print(f"\n{'size':>4} {'batch':>5} {'variant':<44} {'step ms':>8} {'pairs/s':>8} {'TFLOP/step':>10} {'MFU':>6} {'mem GB':>7} {'warmup s':>8}")
    for r in rows:
        print(f"{r['size']:>4} {r['batch']:>5} {r['variant']:<44} {r['step_ms']:>8.1f} {r['pairs_per_s']:>8.1f} "
              f"{r['tflop_per_step']:>10.2f} {r['mfu'] * 100:>5.1f}% {r['peak_mem_gb']:>7.1f} {r['warmup_s']:>8.1f}")
        if "phase_ms" in r:
            print("      phases: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["phase_ms"].items()))


def flop_rows(args: argparse.Namespace) -> list[dict]:
    """FLOPs per step of every size and batch, counted on the CPU."""
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            flops = count_flops(step_config(args, "fp32"), size, batch, torch.device("cpu"))
            rows.append({"size": size, "batch": batch, "tflop_per_step": flops / 1e12, "tflop_per_pair": flops / batch / 1e12})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Measure the bf16 peak, time every size, batch and variant, write JSON and print the table."""
    args = _parse_args(argv)
    config = str(args.params or f"params.yaml, ngf {args.ngf}, ndf {args.ndf}, n_blocks {args.n_blocks}")
    if args.flops_only:
        results = {"config": config, "rows": flop_rows(args)}
        print(f"\n{config}\n{'size':>4} {'batch':>5} {'TFLOP/step':>10} {'TFLOP/pair':>10}")
        for r in results["rows"]:
            print(f"{r['size']:>4} {r['batch']:>5} {r['tflop_per_step']:>10.3f} {r['tflop_per_pair']:>10.4f}")
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # the reference's fp32 ran with TF32 convolutions
        torch.backends.cudnn.allow_tf32 = True
        compile_mode = None if args.compile_mode == "none" else args.compile_mode
        peak = bf16_peak_tflops()
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  measured bf16 peak {peak:.0f} TFLOP/s", flush=True)
        import torch._inductor.config as inductor_config

        header = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "config": config,
                  "inductor": args.inductor_settings, "bf16_peak_tflops": peak}
        with inductor_config.patch(args.inductor_settings):
            results = {**header, "rows": measure_rows(args, compile_mode, peak, header)}
        print_table(results["rows"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
