"""Train the celeba-128 recipe and its ablations side by side on the GPUs of one machine, within a deadline.

Each run is the real `train` stage (torch alone) on a packed folder (`geogan pack`), with the
recipe `params/celeba-128.yaml` and a few overrides. Runs share the GPUs round-robin; at the
deadline the unfinished ones get SIGTERM, save a checkpoint and exit 143, and a later call with
the same --work resumes them. Finished runs' generators are copied to --out in float16 (half
the bytes; `load_generator` reads them back into float32).

    python -m benchmarks.celeba_runs --data .device_data/celeba128 --work .device_runs --out $OUT \\
        --deadline-s 500 [--steps NAME=STEPS ...] [--export NAME ...] [--only NAME ...] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from geogan.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "params" / "celeba-128.yaml"

# The celebahq-200 recipe's choices on this data: no local D, no mask prior, no region-sparing cutout, RGB flow, no EMA.
BASELINE = {"model.local_ndf": 0, "loss.lambda_mask_region": 0.0, "train.cutout_spares_region": False,
            "model.flow_inputs": "rgb", "train.ema_decay": 0.0, "loss.lambda_local_cls": 1.0}
# The ablation's weights for its fixes ("all" runs: the recipe before the retuning below)
ABLATION_WEIGHTS = {"loss.lambda_mask_region": 2.0, "loss.lambda_local_cls": 1.0}
FIXES = {
    "local_d": {"model.local_ndf": 64},
    "mask_prior": {"loss.lambda_mask_region": 2.0},
    "spare_cutout": {"train.cutout_spares_region": True},
    "flow_landmarks": {"model.flow_inputs": "rgb+landmarks"},
}

# Retuning after the ablation: a stronger region prior, then a stronger local has-attribute signal (docs/results.md);
# region10-cls3 is the recipe's setting now
REGION10_CLS3 = {"loss.lambda_mask_region": 10.0, "loss.lambda_local_cls": 3.0}
TUNING = {
    "Mustache": {
        "region5": {"loss.lambda_mask_region": 5.0, "loss.lambda_local_cls": 1.0},
        "region5-cls3": {"loss.lambda_mask_region": 5.0, "loss.lambda_local_cls": 3.0},
        "region10-cls3": REGION10_CLS3,
    },
    "Eyeglasses": {"region10-cls3": REGION10_CLS3},
}
# --compile: the compiled step, CUDA graphs and the loss terms in the graphs (1.54x on this recipe; NOTES runs 26, 28)
COMPILED = {"train.compile": True, "train.compile_cuda_graphs": True, "train.compile_losses": True}


def run_table() -> dict[str, dict]:
    """name -> {attribute, split, overrides}: per attribute the baseline, each fix alone, and all fixes (2 seeds)."""
    runs: dict[str, dict] = {}
    for attr in ("Eyeglasses", "Mustache"):
        everyone = "Mustache-everyone.json" if attr == "Mustache" else f"{attr}.json"
        runs[f"{attr}-baseline"] = {"attribute": attr, "split": everyone, "overrides": BASELINE}
        if attr == "Mustache":  # populations change only the Mustache domains
            runs[f"{attr}-domains"] = {"attribute": attr, "split": f"{attr}.json", "overrides": BASELINE}
        for fix, extra in FIXES.items():
            runs[f"{attr}-{fix}"] = {"attribute": attr, "split": everyone, "overrides": {**BASELINE, **extra}}
        for seed in (0, 1):
            runs[f"{attr}-all-s{seed}"] = {"attribute": attr, "split": f"{attr}.json",
                                           "overrides": {**ABLATION_WEIGHTS, "train.seed": seed}}
    for attr, settings in TUNING.items():
        for name, extra in settings.items():
            for seed in (0, 1):
                runs[f"{attr}-{name}-s{seed}"] = {"attribute": attr, "split": f"{attr}.json",
                                                  "overrides": {**extra, "train.seed": seed}}
    return runs


def write_params(path: Path, overrides: dict) -> None:
    """The recipe with `overrides` (dotted keys of the full config) set, its `extends` made absolute."""
    params = yaml.safe_load(RECIPE.read_text())
    if "extends" in params:
        params["extends"] = str((RECIPE.parent / params["extends"]).resolve())
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    load_config(path)  # an override naming no key of the config stops here, naming it


def launch(name: str, spec: dict, data: Path, work: Path, gpu: int, steps: int | None, compiled: bool = False,
           ) -> subprocess.Popen:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {**spec["overrides"], **(COMPILED if compiled else {})}
    if steps is not None:
        overrides["train.steps"] = steps
    write_params(folder / "params.yaml", overrides)
    cmd = [sys.executable, "-m", "geogan.stages.train", "--params", str(folder / "params.yaml"),
           "--attribute", spec["attribute"], "--prepared", str(data / "prepared"), "--landmarks", str(data / "landmarks"),
           "--split", str(data / "splits" / spec["split"]), "--out", str(folder / "model"), "--work", str(folder / "run"),
           "--no-progress"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    log = open(folder / "log.txt", "a")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def export_half(src: Path, dst: Path) -> None:
    """A generator file with float16 weights (transport only)."""
    blob = torch.load(src, map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    torch.save(blob, dst)


def export_raw(folder: Path, dst: Path) -> None:
    """The trained (not averaged) generator of the newest checkpoint, float16, with the EMA file's meta."""
    ckpts = sorted((folder / "run" / "checkpoints").glob("ckpt-*.pt"))
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    blob = torch.load(folder / "model" / "generator.pt", map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state["generator"].items()}
    blob["meta"] = {**blob["meta"], "weights": "raw (not EMA)", "step": int(state["step"])}
    torch.save(blob, dst)


def summary_of(folder: Path) -> dict:
    ckpts = sorted((folder / "run" / "checkpoints").glob("ckpt-*.pt"))
    lines = (folder / "log.txt").read_text().splitlines() if (folder / "log.txt").is_file() else []
    steps = [ln for ln in lines if ln.startswith("step ")]
    return {"checkpoint_step": int(ckpts[-1].stem.split("-")[1]) if ckpts else 0,
            "finished": (folder / "model" / "generator.pt").is_file(), "last_log": steps[-1] if steps else "",
            "tail": lines[-3:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--deadline-s", type=float, required=True, help="SIGTERM unfinished runs after this many seconds")
    p.add_argument("--steps", nargs="*", default=[], help="NAME=STEPS overrides of train.steps")
    p.add_argument("--only", nargs="*", default=None, help="run only these names")
    p.add_argument("--export", nargs="*", default=[], help="names whose finished generators go to --out")
    p.add_argument("--export-raw", nargs="*", default=[], help="names whose raw (non-EMA) generator goes to --out too")
    p.add_argument("--compile", action="store_true",
                   help="train.compile with CUDA graphs and the loss terms compiled (cache in each run's folder)")
    args = p.parse_args()
    runs = run_table()
    names = [n for n in runs if args.only is None or n in args.only]
    steps = {k: int(v) for k, v in (s.split("=") for s in args.steps)}
    gpus = max(1, torch.cuda.device_count())
    t0 = time.monotonic()
    procs = {}
    for i, name in enumerate(names):
        if (args.work / name / "model" / "generator.pt").is_file() and name not in steps:
            continue  # finished in an earlier call
        procs[name] = launch(name, runs[name], args.data, args.work, i % gpus, steps.get(name), args.compile)
    print(f"launched {len(procs)} runs on {gpus} GPUs: {sorted(procs)}", flush=True)
    while procs and time.monotonic() - t0 < args.deadline_s:
        time.sleep(5)
        for name in [n for n, pr in procs.items() if pr.poll() is not None]:
            print(f"{time.monotonic() - t0:6.0f}s {name} exited {procs.pop(name).returncode}", flush=True)
    for pr in procs.values():
        os.killpg(pr.pid, signal.SIGTERM)  # the stage saves a checkpoint and exits 143
    for name, pr in procs.items():
        try:
            pr.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(pr.pid, signal.SIGKILL)
        print(f"{name} stopped at the deadline: exit {pr.returncode}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {name: summary_of(args.work / name) for name in names}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name in args.export:
        if summary[name]["finished"]:
            export_half(args.work / name / "model" / "generator.pt", args.out / f"{name}.pt")
    for name in args.export_raw:
        if summary[name]["finished"]:
            export_raw(args.work / name, args.out / f"{name}-raw.pt")
    for name, s in summary.items():
        print(f"{name:28s} step {s['checkpoint_step']:6d}  finished {s['finished']}  {s['last_log']}")


if __name__ == "__main__":
    main()
