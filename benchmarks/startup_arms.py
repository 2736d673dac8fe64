"""Cold starts of the compiled step under several Inductor settings or kernel levers, at once on one machine.

Cold starts on fresh machines of one kind span 244-284 s (NOTES run 38), which hides a 10% lever; and two cold
starts one after the other barely fit one 10-minute call. The arms here start together, each in its own
`benchmarks.bench_startup` process on its own empty cache, so each shares the machine's cores and GPU alike.
Each compile is mostly one Python thread, so on a 16-core host a few arms hardly slow each other; the absolute
times are then a few percent above a start alone, but the arms compare fairly. Each start's Python stack is
sampled up to its first step if asked (`--sample-arms`, `benchmarks.stack_sampler`): the table then also says where
that arm's compile went.

    python -m benchmarks.startup_arms --out $OUT/arms.json --arms base= \\
        pointwise=triton.autotune_pointwise=False "both=triton.autotune_pointwise=False reorder_for_peak_memory=False"

Writes one JSON (every arm's row and stack report) and prints a table. Each arm's steady steps and GPU time per step
(`bench_startup --kernels`) are timed after every arm has compiled, one arm at a time (`bench_startup --barrier`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAN = float("nan")

# The functions whose sampled seconds the table shows: Inductor's phases named in NOTES runs 30-38.
PHASES = {
    "trace": "torch/_dynamo/convert_frame.py:_compile",
    "aot": "torch/_functorch/aot_autograd.py:aot_module_simplified",
    "backward": "torch/_inductor/compile_fx.py:_compile_fx_main.<locals>.bw_compiler",
    "lowering": "torch/_inductor/graph.py:GraphLowering.run",
    "scheduler": "torch/_inductor/scheduler.py:Scheduler.__init__",
    "fusion": "torch/_inductor/scheduler.py:Scheduler.fuse_nodes",
    "codegen": "torch/_inductor/scheduler.py:Scheduler.codegen",
    "wrapper": "torch/_inductor/graph.py:GraphLowering.codegen",
    "autotune": "torch/_inductor/runtime/triton_heuristics.py:CachingAutotuner.benchmark_all_configs",
}


def parse_arm(text: str) -> tuple[str, list[str]]:
    """'name=key=value +lever ...' -> (name, ['key=value', '+lever', ...]); 'name=' is the default settings.

    A `+lever` turns on a kernel lever that the compiled kernels leave out (`TRIED_LEVERS`, e.g. +pad_layout);
    the other items are Inductor settings.
    """
    name, sep, settings = text.partition("=")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--arms {text!r}: expected NAME=SETTINGS, e.g. base= or pointwise=triton.autotune_pointwise=False")
    return name, settings.split()


def arm_command(name: str, settings: list[str], args: argparse.Namespace, work: Path) -> list[str]:
    """The `bench_startup` command of one arm: one cold start on the arm's own cache, its stack sampled."""
    return [sys.executable, "-m", "benchmarks.bench_startup", "--size", str(args.size), "--batch", str(args.batch),
            "--mode", args.mode, "--steps", str(args.steps), "--starts", "cold", "--timeout", str(args.timeout),
            "--cache", str(work / f"cache-{name}"), "--out", str(work / f"{name}.json"),
            "--barrier", str(work / "barrier"), "--barrier-count", str(args.arm_count), "--kernels"] \
        + (["--sample-stacks", str(work / f"stacks-{name}")] if name in args.sample_arms else []) \
        + (["--compile-losses"] if args.compile_losses else []) \
        + (["--with", *[item[1:] for item in settings if item.startswith("+")]]
           if any(item.startswith("+") for item in settings) else []) \
        + (["--inductor", *inductor] if (inductor := [item for item in settings if not item.startswith("+")]) else [])


def phase_seconds(stacks: dict) -> dict[str, float]:
    """The sampled inclusive seconds of each of `PHASES` in one stack report (0 where never sampled)."""
    inclusive = dict(stacks.get("inclusive", []))
    return {phase: float(inclusive.get(key, 0.0)) for phase, key in PHASES.items()}


def collect(name: str, settings: list[str], work: Path, returncode: int, wall_s: float) -> dict:
    """One arm's result: its start row (or its error), its stack report and phase seconds."""
    result: dict = {"arm": name, "settings": settings, "returncode": returncode, "wall_s": round(wall_s, 1)}
    out = work / f"{name}.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    result["row"] = rows[0] if rows else {"error": f"no row (exit {returncode}); log: {name}.log"}
    stacks_file = work / f"stacks-{name}" / "cold.json"
    if stacks_file.exists():
        result["stacks"] = json.loads(stacks_file.read_text())
        result["phases_s"] = phase_seconds(result["stacks"])
    return result


def loss_difference(row: dict, first: dict) -> float:
    """The largest relative difference between two starts' first-step losses (same weights, same batch)."""
    a, b = row.get("first_losses", {}), first.get("first_losses", {})
    shared = set(a) & set(b)
    if not shared:
        return NAN
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in shared)


def print_table(results: list[dict]) -> None:
    """One line per arm: the start, the step, the kernels built, the sampled phases, the losses against arm one's."""
    print(f"{'arm':<12} {'1st step s':>10} {'step ms':>8} {'GPU ms':>7} {'peak GiB':>8} {'kernels':>7} "
          + " ".join(f"{p:>9}" for p in PHASES) + f" {'loss diff':>9}   settings")
    for r in results:
        row, phases = r["row"], r.get("phases_s", {})
        if "error" in row:
            print(f"{r['arm']:<12} {row['error']}")
            continue
        print(f"{r['arm']:<12} {row['first_step_s']:>10.1f} {row['step_ms']:>8.1f} {row.get('gpu_busy_ms', NAN):>7.1f} "
              f"{row.get('peak_gib', NAN):>8.1f} {row.get('kernels_generated', 0):>7} "
              + " ".join(f"{phases.get(p, NAN):>9.1f}" for p in PHASES)
              + f" {loss_difference(row, results[0]['row']):>9.1e}   {' '.join(r['settings'])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", required=True, metavar="NAME=SETTINGS")
    p.add_argument("--sample-arms", nargs="*", default=[], metavar="NAME",
                   help="arms whose stacks are sampled (benchmarks.stack_sampler): a sampled start is slower (NOTES run "
                        "40), so compare its time only with other sampled arms")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--mode", default="default")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-compile-losses", dest="compile_losses", action="store_false")
    p.add_argument("--timeout", type=float, default=560, help="seconds each arm may take")
    p.add_argument("--out", type=Path, required=True, help="the JSON written")
    args = p.parse_args()
    arms = [parse_arm(a) for a in args.arms]
    args.arm_count = len(arms)
    if set(args.sample_arms) - {n for n, _ in arms}:
        raise SystemExit(f"--sample-arms {args.sample_arms}: not among the arms {[n for n, _ in arms]}")
    if len({n for n, _ in arms}) != len(arms):
        raise SystemExit(f"--arms: names repeat: {[n for n, _ in arms]}")
    work = Path(tempfile.mkdtemp(prefix="startup-arms-"))
    t0 = time.perf_counter()
    procs = {}
    for name, settings in arms:  # all at once: the arms share the machine alike
        log = (work / f"{name}.log").open("w")
        procs[name] = (subprocess.Popen(arm_command(name, settings, args, work), stdout=log, stderr=subprocess.STDOUT),
                       settings)
    results = []
    for name, (proc, settings) in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, args.timeout + 30 - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -9
        results.append(collect(name, settings, work, code, time.perf_counter() - t0))
        if code != 0:
            print(f"{name}: exit {code}; the log's end:\n" + (work / f"{name}.log").read_text()[-2000:], file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": args.size, "batch": args.batch, "mode": args.mode,
                                    "compile_losses": args.compile_losses, "arms": results}, indent=1))
    print(f"\n{len(arms)} cold starts at once, {args.size} px, batch {args.batch}, mode {args.mode}"
          + (", compile_losses" if args.compile_losses else "") + "; phases: sampled inclusive seconds")
    print_table(results)


if __name__ == "__main__":
    main()
