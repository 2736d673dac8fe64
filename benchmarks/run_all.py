"""Every GPU benchmark in one go, a summary table last.

    python -m benchmarks.run_all --out-dir $OUT [--quick]

Runs, each in its own process (so one's compile caches and memory do not colour another's):
  1. bench_train.py: the training step at 128/256 px, batches 16/24/32/64, fp32 baseline vs bf16 +
     channels_last (eager), and bf16 + channels_last + torch.compile at 256 px batch 24 with the stock
     layers (every compiled-only rewrite of geogan.nets.layers off), with FLOPs and MFU against the
     bf16 peak measured in the same process, each row's time split by phase (G forward, D update,
     G update) and the compiled rows profiled (top kernels); then the optimised step: the rewrites on
     and each phase's D input, D and loss terms compiled as one graph (`--compile-losses`, runs 9, 15);
  1b. bench_convs.py: every convolution of one step timed alone, by shape and layer (256 px, batch 24);
  2. bench_epoch.py: the real `train` stage (loader, logging, checkpoints) against the bare step, both
     compiled, at 256 px batch 24 (can the loader feed the fastest step?); bench_startup.py: the compiled
     step's start-up, cold and then warm from the compile cache;
  3. bench_landmarks.py: FAN batched on the GPU vs face-alignment's stock per-image call;
  4. bench_fid.py: Inception features for 10k images;
  5. bench_ddp.py, when the machine has several GPUs: DDP step scaling from 1 GPU to all of them at
     256 px (24 pairs per GPU) and the train stage's loss curves at one global batch (issue 8).
`--quick` trims the step table to 256 px batch 24 (the reference's setting) and 128 px batch 32.
Tests never run this: it needs a GPU and prints timings, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


from benchmarks.bench_train import LEVERS

HERE = Path(__file__).resolve().parent


def _run(name: str, cmd: list[str], out_dir: Path, timeout: float) -> dict | None:
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"=== {name}: stopped after {timeout:.0f} s", flush=True)
        return None
    print(f"=== {name}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    f = out_dir / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "compile", "compile_losses", "convs", "epoch", "startup", "landmarks", "fid",
                                                              "ddp"])
    p.add_argument("--wheels", type=Path, default=HERE.parent / ".whl", help="face_alignment / pytorch_fid wheels")
    p.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = p.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    res: dict[str, dict | None] = {}
    if "train" not in args.skip:
        sizes, batches = (["256"], ["24"]) if args.quick else (["128", "256"], ["16", "24", "32", "64"])
        res["train"] = _run("train", [py, "-m", "benchmarks.bench_train", "--sizes", *sizes, "--batches", *batches,
                                      "--variants", "fp32", "bf16", "bf16_cl", "--steps", "10", "--warmup", "3",
                                      "--breakdown", "--out", str(out / "train.json")], out, args.timeout)
    if "compile" not in args.skip:
        # Compiled with the stock layers (every rewrite of geogan.nets.layers off), to show what the rewrites add.
        res["compile"] = _run("compile", [py, "-m", "benchmarks.bench_train", "--sizes", "256", "--batches", "24",
                                          "--variants", "bf16_cl", "--compile-mode", "default", "--steps", "20",
                                          "--warmup", "3", "--profile", "--breakdown", "--without", *LEVERS,
                                          "--out", str(out / "compile.json")], out, args.timeout)
    if "compile_losses" not in args.skip:
        res["compile_losses"] = _run("compile_losses", [py, "-m", "benchmarks.bench_train", "--sizes", "256", "--batches", "24",
                                                        "--variants", "bf16_cl", "--compile-mode", "default", "--compile-losses",
                                                        "--steps", "20", "--warmup", "3", "--profile", "--breakdown",
                                                        "--out", str(out / "compile_losses.json")], out, args.timeout)
    if "convs" not in args.skip:  # prints its own table; kept in convs.json
        _run("convs", [py, "-m", "benchmarks.bench_convs", "--size", "256", "--batch", "24", "--alternatives", "--out", str(out / "convs.json")],
             out, args.timeout)
    if "epoch" not in args.skip:
        res["epoch"] = _run("epoch", [py, "-m", "benchmarks.bench_epoch", "--size", "256", "--batch", "24", "--steps", "400", "--identities", "600",
                                      "--compile", "--out", str(out / "epoch.json")], out, args.timeout)
    if "startup" not in args.skip:
        res["startup"] = _run("startup", [py, "-m", "benchmarks.bench_startup", "--size", "256", "--batch", "24",
                                          "--mode", "reduce-overhead", "--cache", str(out / "compile_cache"),
                                          "--out", str(out / "startup.json")], out, args.timeout)
    if "landmarks" not in args.skip:
        res["landmarks"] = _run("landmarks", [py, "-m", "benchmarks.bench_landmarks", "--wheels", str(args.wheels),
                                              "--out", str(out / "landmarks.json")], out, args.timeout)
    if "fid" not in args.skip:
        res["fid"] = _run("fid", [py, "-m", "benchmarks.bench_fid", "--out", str(out / "fid.json")], out, args.timeout)
    gpus = _gpu_count()
    if "ddp" not in args.skip and gpus > 1:
        res["ddp"] = _run("ddp", [py, "-m", "benchmarks.bench_ddp", "--gpus", "1", str(gpus), "--out-dir", str(out / "ddp")],
                          out / "ddp", args.timeout)
    (out / "all.json").write_text(json.dumps(res, indent=2))
    print_summary(res)
    if res.get("ddp"):
        from benchmarks.bench_ddp import print_summary as print_ddp

        print_ddp(res["ddp"]["steps"], res["ddp"]["curves"])


def _gpu_count() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def print_summary(res: dict) -> None:
    print("\n" + "=" * 100)
    steps = ("train", "compile", "compile_losses")
    rows = [r for key in steps for r in ((res.get(key) or {}).get("rows") or [])]
    peak = next(((res.get(k) or {}).get("bf16_peak_tflops") for k in steps if res.get(k)), None)
    if rows:
        print(f"training step (bf16 peak measured {peak:.0f} TFLOP/s; reference 256 px b24: 39.7 pairs/s, measured on an H100)")
        width = max(len(r["variant"]) for r in rows)
        print(f"{'px':>4} {'batch':>5} {'variant':<{width}} {'ms':>7} {'pairs/s':>8} {'x ref':>6} {'MFU':>6} {'GB':>5} {'warm s':>7}")
        for r in rows:
            x_ref = f"{r['pairs_per_s'] / 39.7:.1f}" if (r["size"], r["batch"]) == (256, 24) else ""
            print(f"{r['size']:>4} {r['batch']:>5} {r['variant']:<{width}} {r['step_ms']:>7.1f} {r['pairs_per_s']:>8.1f} {x_ref:>6} "
                  f"{r['mfu'] * 100:>5.1f}% {r['peak_mem_gb']:>5.1f} {r['warmup_s']:>7.1f}")
            if r.get("phase_ms"):
                print("      " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["phase_ms"].items()))
    for r in rows:
        if r.get("profile"):
            print(f"\ntop kernels, {r['variant']} step, {r['size']} px batch {r['batch']}")
            for k in r["profile"]:
                print(f"  {k['share'] * 100:5.1f}%  {k['ms_per_step']:7.2f} ms  {k['kernel'][:90]}")
    e = res.get("epoch")
    if e:
        how = ("compiled" if e.get("compiled") else "eager") + (" + CUDA graphs" if e.get("cuda_graphs") else "")
        print(f"\nend to end ({e['data']}, batch {e['batch_per_gpu']} per GPU, {e['gpus']} GPU, {how}): train stage "
              f"{e['loop_pairs_per_s']:.1f} pairs/s, bare step {e['bare_step_pairs_per_s_one_gpu']:.1f} pairs/s per GPU "
              f"-> {e['loop_over_bare'] * 100:.0f}%")
    for r in (res.get("startup") or {}).get("rows", []):
        if "error" not in r:
            print(f"start-up {r['start']}: first step after {r['first_step_s']:.1f} s (FX graphs {r['fx_graph_hits']} hit / "
                  f"{r['fx_graph_misses']} miss)")
    lm = res.get("landmarks")
    if lm:
        print(f"\nlandmarks: {json.dumps({k: v for k, v in lm.items() if not isinstance(v, (list, dict))})}")
    fid = res.get("fid")
    if fid:
        print(f"\nFID features: {json.dumps({k: v for k, v in fid.items() if not isinstance(v, (list, dict))})}")


if __name__ == "__main__":
    main()
