"""Start-up of a compiled training step: seconds from a new process to its first finished step, cold and warm.

Each start is its own process (as a restarted or resumed pod is) that builds the training state
as training does (`benchmarks.common.make_state`), compiles it and runs one step. `cold` starts
on an empty cache folder; `warm` starts again on the folder the cold start filled, which is what
`train.compile_cache` gives a resumed run (`<run>/compile_cache`, on the PVC on a cluster). Each
start then times steady steps, so a start that compiled differently shows it. `parallel` starts on an
empty cache too, but first compiles each of the step's graphs (`COMPILED_PARTS`) in its own process at
once, the other graphs eager, then starts warm on what they wrote: its time is the slowest part's process
plus that warm start (benchmarks/NOTES.md run 35).

    python -m benchmarks.bench_startup --size 256 --batch 24 --cache /tmp/cc --out $OUT/startup.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

BORN = time.perf_counter()  # the child's clock starts at its first import

from benchmarks.common import add_with_levers  # noqa: E402
from benchmarks.stack_sampler import StackSampler  # noqa: E402
from geogan.training.build import COMPILED_PARTS  # noqa: E402 (after BORN: a child's imports count)


class _BypassReasons(logging.Handler):
    """Why AOTAutograd would not cache a graph (its INFO log line): a bypassed graph is traced again every start."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Bypassing"):
            self.reasons.append(" ".join(message.split())[:300])


def child(args: argparse.Namespace) -> None:
    """One start: build, compile, first step, then steady steps; prints one JSON line."""
    import torch
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    import torch._inductor.metrics as inductor_metrics

    from benchmarks.common import bench_config, make_state, random_batch
    from geogan.training.compile_cache import cache_counters, compile_phases
    from geogan.training.steps import train_step

    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    if args.cudnn_benchmark_limit is not None:  # how many of cuDNN's candidate algorithms its search times (0: all)
        torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    if args.inductor:  # part of the cache key: a warm start must name the same settings as its cold one
        from benchmarks.bench_train import inductor_settings

        for key, value in inductor_settings(args.inductor).items():
            setattr(inductor_config, key, value)
    bypasses = _BypassReasons()
    aot_cache_log = logging.getLogger("torch._functorch._aot_autograd.autograd_cache")
    aot_cache_log.setLevel(logging.INFO)
    aot_cache_log.addHandler(bypasses)
    device = torch.device("cuda")
    profiler = cProfile.Profile() if args.profile_to else None
    if profiler:
        profiler.enable()
    sampler = StackSampler() if args.sample_to else None
    if sampler:
        sampler.start()
    imported = time.perf_counter() - BORN
    torch.manual_seed(0)  # the same weights in every start: their first losses compare across settings
    state, ctx = make_state(bench_config(variant="bf16_cl"), args.size, device, args.mode,
                            compile_losses=args.compile_losses, regions=args.regions, parts=args.parts,
                            blocks=args.blocks, with_levers=args.with_levers)
    if args.no_custom_function_cache:  # make_state allowed it; the graphs compile at the first step, after this
        functorch_config.autograd_cache_allow_custom_autograd_functions = False
    batches = [random_batch(args.batch, args.size, device, i) for i in range(4)]
    first_losses = train_step(state, batches[0], ctx)
    torch.cuda.synchronize()
    first = time.perf_counter() - BORN
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile_to)
    if sampler:
        Path(args.sample_to).write_text(json.dumps(sampler.stop(), indent=1))
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    gpu_lock = measure_alone(Path(args.barrier), args.barrier_count) if args.barrier else None
    for i in range(3 if args.steps else 0):  # cudagraph trees record on the first calls, cuDNN picks its algorithms
        train_step(state, batches[i % 4], ctx)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        train_step(state, batches[i % 4], ctx)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / args.steps if args.steps else float("nan")
    kernels = {}
    if args.kernels:  # GPU time of the same steady step: did a slower start's GPU do more work, or wait on the host?
        from benchmarks.bench_train import profile_top_kernels

        rows, busy_ms = profile_top_kernels(state, ctx, batches[0], top=0)
        kernels = {"gpu_busy_ms": busy_ms, "kernel_classes": {r["kernel"]: [round(r["ms_per_step"], 2), r["calls_per_step"]]
                                                              for r in rows}}
    host = {}
    if args.host_profile:  # the wall step against the GPU time: does the host wait on the GPU, or launch too slowly?
        from benchmarks.common import host_profile

        host = host_profile(lambda: train_step(state, batches[0], ctx), 3, args.host_profile)
    if gpu_lock:
        gpu_lock.close()  # the next arm measures
    from torch._dynamo.utils import compilation_time_metrics, counters

    # Every compile timer of half a second or more: where a start's time went, past the named phases.
    timers = {k: round(sum(v), 2) for k, v in compilation_time_metrics.items() if sum(v) >= 0.5}
    # Each graph's own share (one entry per compiled frame, per backward graph): what compiling them apart could save.
    per_graph = {name: [round(v, 2) for v in compilation_time_metrics[key]] for name, key in
                 (("forward_s", "_compile.compile_inner"), ("backward_s", "compile_fx.<locals>.bw_compiler"))
                 if key in compilation_time_metrics}
    # How many kernels Inductor generated (a warm start loads them, generating none), on how many compile workers,
    # for how many Dynamo graphs (a recompiled graph counts again).
    compiler = {"kernels_generated": inductor_metrics.generated_kernel_count,
                "compile_threads": inductor_config.compile_threads, "dynamo_graphs": counters["stats"]["unique_graphs"]}
    print(json.dumps({"imported_s": imported, "first_step_s": first, "step_ms": step_s * 1e3, "peak_gib": peak_gib,
                      "first_losses": {k: float(v) for k, v in first_losses.items()}, **compiler,
                      "pairs_per_s": args.batch / step_s, **cache_counters(), **compile_phases(), **kernels, **host,
                      "aot_bypass_reasons": bypasses.reasons, "per_graph": per_graph, "timers": timers}), flush=True)


def measure_alone(barrier: Path, count: int, wait_s: float = 300.0) -> IO:
    """Wait until `count` starts beside this one have compiled (or `wait_s`), then hold the GPU's lock file.

    `benchmarks.startup_arms` runs cold starts at once; their steady steps and kernel profile are timed one start at
    a time after all have compiled, so no start's figures are taken beside another's compile. Returns the lock's
    open file: closing it lets the next start measure.
    """
    import fcntl

    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"compiled-{os.getpid()}").touch()
    deadline = time.perf_counter() + wait_s
    while sum(1 for _ in barrier.glob("compiled-*")) < count and time.perf_counter() < deadline:
        time.sleep(1.0)
    lock = (barrier / "gpu.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _child_command(args: argparse.Namespace, label: str, parts: list[str], steps: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bench_startup", "--child", "--size", str(args.size), "--batch",
            str(args.batch), "--mode", args.mode, "--steps", str(steps), "--parts", *parts] \
        + (["--regions"] if args.regions else []) \
        + (["--compile-losses"] if args.compile_losses else []) \
        + (["--blocks"] if args.blocks else []) \
        + (["--with", *args.with_levers] if args.with_levers else []) \
        + (["--no-cudnn-benchmark"] if args.no_cudnn_benchmark else []) \
        + (["--cudnn-benchmark-limit", str(args.cudnn_benchmark_limit)] if args.cudnn_benchmark_limit is not None
           else []) \
        + (["--no-custom-function-cache"] if args.no_custom_function_cache else []) \
        + (["--kernels"] if args.kernels and steps else []) \
        + (["--host-profile", str(args.host_trace / f"{label}.json")] if args.host_trace and steps else []) \
        + (["--inductor", *args.inductor] if args.inductor else []) \
        + (["--profile-to", str(args.profile / f"{label}.pstats")] if args.profile else []) \
        + (["--sample-to", str(args.sample_stacks / f"{label}.json")] if args.sample_stacks else []) \
        + (["--barrier", str(args.barrier), "--barrier-count", str(args.barrier_count)] if args.barrier else [])


def _row(label: str, proc: subprocess.CompletedProcess, wall: float, entries: int) -> dict:
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"start": label, "error": f"exit {proc.returncode}", "cache_entries_before": entries}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"start": label, "cache_entries_before": entries, "process_s": wall, **row}


def start(args: argparse.Namespace, label: str) -> dict:
    """Run one start in a new process with the cache folder as Inductor's; wall time from spawn."""
    if label in ("cold", "parallel"):
        shutil.rmtree(args.cache, ignore_errors=True)
    entries = sum(1 for _ in args.cache.rglob("*")) if args.cache.exists() else 0
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(args.cache.resolve())}
    env.pop("TRITON_CACHE_DIR", None)  # Triton's cache then lives under Inductor's
    precompile, t0 = {}, time.perf_counter()
    if label == "parallel":  # one process per graph, all at once, into the one cache folder
        def run_part(part: str) -> tuple[subprocess.CompletedProcess, float]:  # a thread each: pipes drain at once
            proc = subprocess.run(_child_command(args, f"part-{part}", [part], steps=0), check=False, env=env,
                                  capture_output=True, text=True, timeout=args.timeout)
            return proc, time.perf_counter() - t0

        with ThreadPoolExecutor(len(COMPILED_PARTS)) as pool:
            finished = dict(zip(COMPILED_PARTS, pool.map(run_part, COMPILED_PARTS)))
        for part, (proc, done_s) in finished.items():
            done = _row(part, proc, done_s, 0)
            if "error" in done:
                return {"start": label, "error": f"{part}: {done['error']}", "cache_entries_before": entries}
            precompile[part] = {k: done.get(k) for k in ("process_s", "first_step_s", "trace_s", "backend_s",
                                                         "backward_s", "fx_graph_misses", "aot_autograd_misses")}
        precompile_s = time.perf_counter() - t0
        entries = sum(1 for _ in args.cache.rglob("*"))
    proc = subprocess.run(_child_command(args, label, list(COMPILED_PARTS), args.steps), check=False, env=env,
                          capture_output=True, text=True, timeout=args.timeout)
    row = _row(label, proc, time.perf_counter() - t0, entries)
    if precompile and "error" not in row:  # the whole start: the parts' processes, then the warm process
        row.update(parts=precompile, precompile_s=precompile_s, warm_first_step_s=row["first_step_s"],
                   first_step_s=precompile_s + row["first_step_s"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--mode", default="default", help="torch.compile mode: default or reduce-overhead (CUDA graphs)")
    p.add_argument("--regions", action="store_true",
                   help="compile each sub-network alone (regional compilation), not G's cycle and D whole")
    p.add_argument("--compile-losses", action="store_true",
                   help="compile each phase's D input, D and loss terms as one graph (train.compile_losses)")
    add_with_levers(p)
    p.add_argument("--blocks", action="store_true",
                   help="compile G's transfer and removal once each, not G's whole cycle "
                        "(build.CompiledBlocks; NOTES run 38)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="cuDNN picks algorithms by heuristics, no timing at the first step (train.cudnn_benchmark: false)")
    p.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                   help="torch.backends.cudnn.benchmark_limit: candidate algorithms the search times (torch's default "
                        "10; 0 = all of them)")
    p.add_argument("--no-custom-function-cache", action="store_true",
                   help="AOTAutograd's default: bypass its cache for graphs with a custom autograd.Function (G's)")
    p.add_argument("--kernels", action="store_true",
                   help="after the steady steps, the GPU time of one step by kernel class (profiler)")
    p.add_argument("--host-trace", type=Path, default=None,
                   help="a folder: after the steady steps, profile 3 steps on the host and the GPU, write each start's "
                        "Chrome trace there and report the host calls that wait on the GPU")
    p.add_argument("--host-profile", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Inductor settings for every start, e.g. combo_kernels=True (as bench_train --inductor)")
    p.add_argument("--profile", type=Path, default=None,
                   help="a folder: cProfile each start up to its first step into <folder>/<start>.pstats (slows Python)")
    p.add_argument("--profile-to", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sample-stacks", type=Path, default=None,
                   help="a folder: sample each start's Python stacks up to its first step (benchmarks.stack_sampler) "
                        "into <folder>/<start>.json; a sampled start is slower (NOTES run 40): compare it only with "
                        "another")
    p.add_argument("--sample-to", default=None, help=argparse.SUPPRESS)
    p.add_argument("--barrier", type=Path, default=None,
                   help="a folder shared by starts run at once (benchmarks.startup_arms): after its first step each "
                        "start waits for --barrier-count of them, then times its steps holding a lock there, alone")
    p.add_argument("--barrier-count", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--starts", nargs="+", default=["cold", "warm"], choices=["cold", "warm", "parallel"])
    p.add_argument("--parts", nargs="+", default=list(COMPILED_PARTS), choices=COMPILED_PARTS, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cache", type=Path, default=Path("/tmp/geogan-bench-compile-cache"))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    for folder in (args.profile, args.host_trace, args.sample_stacks):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in args.starts:
        rows.append(start(args, label))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:  # after every start: a call cut short keeps the starts it finished
            args.out.write_text(json.dumps({"size": args.size, "batch": args.batch, "mode": args.mode,
                                            "compile_losses": args.compile_losses, "blocks": args.blocks,
                                            "cudnn_benchmark": not args.no_cudnn_benchmark, "regions": args.regions,
                                            "cudnn_benchmark_limit": args.cudnn_benchmark_limit,
                                            "custom_function_cache": not args.no_custom_function_cache,
                                            "inductor": args.inductor,
                                            "rows": rows}, indent=2))
    print(f"\n{args.size} px, batch {args.batch}, mode {args.mode}" + (", regions" if args.regions else "")
          + (", compile_losses" if args.compile_losses else "") + (", blocks" if args.blocks else "")
          + "".join(f", {item}" for item in args.inductor))
    print(f"{'start':<6} {'cache files':>11} {'to 1st step s':>13} {'imports s':>9} {'FX hit/miss':>11} "
          f"{'AOT hit/miss/bypass':>19} {'trace s':>7} {'backend s':>9} {'bw s':>6} {'step ms':>8} {'GPU busy ms':>11} "
          f"{'pairs/s':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['start']:<6} {r['cache_entries_before']:>11} {r['error']}")
            continue
        print(f"{r['start']:<6} {r['cache_entries_before']:>11} {r['first_step_s']:>13.1f} {r['imported_s']:>9.1f} "
              f"{r['fx_graph_hits']:>5}/{r['fx_graph_misses']:<5} "
              f"{r['aot_autograd_hits']:>7}/{r['aot_autograd_misses']}/{r.get('aot_autograd_bypasses', 0):<7} "
              f"{r.get('trace_s', float('nan')):>7.1f} {r.get('backend_s', float('nan')):>9.1f} "
              f"{r.get('backward_s', 0.0):>6.1f} "
              f"{r['step_ms']:>8.1f} {r.get('gpu_busy_ms', float('nan')):>11.1f} {r['pairs_per_s']:>8.1f}")
    for r in rows:
        for part, p in r.get("parts", {}).items():
            phases = ", ".join(f"{k} {p.get(f'{k}_s') or 0:.1f}" for k in ("trace", "backend", "backward"))
            print(f"{r['start']}: {part} compiled alone: done {p['process_s']:.1f} s after the spawn, first step "
                  f"{p['first_step_s']:.1f} s ({phases}); then the warm start {r['warm_first_step_s']:.1f} s")
        for reason in r.get("aot_bypass_reasons", []):
            print(f"{r['start']}: AOTAutograd cache bypassed: {reason}")
    if any("error" in r for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
