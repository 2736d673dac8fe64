"""Score several trained generators and the two baselines on one attribute's evaluation set, on the same pairs.

The companion of `celeba_runs.py`: the generators a GPU launch brought back are scored in one process,
so the judge, Inception and face embedder measure every method on the same pairs, and the real-image
features and the bootstrap replicates are computed once. Prints one row per method and writes
the figures (each with its 95% interval and sample count) to a JSON file.

    python -m benchmarks.celeba_eval --params params/celeba-128.yaml --attribute Eyeglasses \\
        --prepared data/prepared --landmarks data/landmarks --evalset data/evalsets/Eyeglasses.json \\
        --judge models/judge --models all=runs/Eyeglasses-all.pt baseline=runs/Eyeglasses-baseline.pt \\
        --sources 50 --references 5 --fid off --identity off --out results/Eyeglasses.json

`--sources S --references R` score the first S sources with the first R references of the set (the
set's draw order), for a cheaper look at many models; the intervals widen accordingly.
`--model-frame-landmarks L --model-size N` score generators trained on another framing (a celebahq-200 model
on CelebA's sets): each face goes into their frame and back (`geogan.metrics.reframe`), beside
`do_nothing_reframed`, the floor of that round trip.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

COLUMNS = ("transfer_success", "removal_success", "removal_standalone_success", "judge_fp", "kid_a2b", "fid_a2b", "mask_in_region",
           "change_outside_region", "mask_area", "identity_kept", "instance_fidelity", "landmark_err")


def main() -> None:
    args = _parse()
    import torch

    from geogan import evaluation as ev
    from geogan.config import load_config
    from geogan.data.dataset import load_prepared
    from geogan.data.evalset import pair_rows, read_evalset
    from geogan.data.split import read_manifest
    from geogan.io import file_sha256
    from geogan.metrics.registry import flat
    from geogan.stages import evaluate as stage

    torch.set_num_threads(args.threads)
    cfg = load_config(args.params)
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, fid=args.fid, identity=args.identity))
    manifest = read_manifest(args.prepared / "manifest.csv")
    data = load_prepared(args.prepared, args.landmarks)
    es = read_evalset(args.evalset, manifest)
    device = torch.device("cpu")
    judge_file = args.judge / "judge.pt"
    judge = stage._judge(judge_file, es, manifest, data.resolution, device)
    src_rows, ref_rows, src_pos, ref_pos = pair_rows(es)
    keep = (np.asarray(src_pos) < args.sources) & (np.asarray(ref_pos) < args.references)
    inputs = ev.EvalInputs.for_pairs(
        data.images, data.landmarks, np.asarray(src_rows)[keep], np.asarray(ref_rows)[keep], args.attribute,
        cfg.regions[args.attribute], real_with=np.asarray(es["real"]["with"], np.int64),
        real_without=np.asarray(es["real"]["without"], np.int64), judge=judge,
        inception=stage._inception(cfg.evaluate, device), embedder=stage._embedder(args.identity, real_faces=True),
        batch_size=cfg.evaluate.batch_size, device=device, progress=True)
    methods, steps = {}, {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        methods[name], meta = stage._generator(path, device)
        steps[name] = int(meta.get("step", 0))
    baselines, _ = stage._methods(cfg, args.attribute, "none", device)
    if args.model_frame_landmarks is not None:  # generators of another framing (e.g. CelebA-HQ squares at 256 px)
        from geogan.metrics.baselines import do_nothing
        from geogan.metrics.reframe import frame_template, reframed

        template = frame_template(np.load(args.model_frame_landmarks), args.model_size)
        methods = {name: reframed(m, template, args.model_size) for name, m in methods.items()}
        baselines["do_nothing_reframed"] = reframed(do_nothing, template, args.model_size)  # the round trip's floor
    methods.update(baselines)
    results, seconds = {}, {}
    for name, method in methods.items():  # one method at a time: the timing is each method's own
        t0 = time.perf_counter()
        est, _ = ev.evaluate({name: method}, inputs, cfg.evaluate.bootstrap, cfg.evaluate.kid_subsets, cfg.seed)
        results[name], seconds[name] = flat(est[name]), round(time.perf_counter() - t0, 1)
        print(f"{name}: {seconds[name]} s", flush=True)
    doc = {"attribute": args.attribute, "pairs": int(keep.sum()), "sources": args.sources, "references": args.references,
           "eval_set": {"file": str(args.evalset), "digest": es["digest"], "population": es["population"] or "everyone"},
           "judge_sha256": file_sha256(judge_file), "fid": args.fid, "identity": args.identity,
           "steps": steps, "seconds_cpu": seconds, "methods": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(markdown_table(doc))


def markdown_table(doc: dict) -> str:
    """One row per method, one column per headline figure: value [95% interval]."""
    from geogan.metrics.registry import find

    shown = [c for c in COLUMNS if any(find(m, c) for m in doc["methods"].values())]
    lines = ["| method | steps | " + " | ".join(shown) + " |", "|---" * (len(shown) + 2) + "|"]
    for name, figures in doc["methods"].items():
        cells = []
        for col in shown:
            hit = find(figures, col)
            if hit is None or hit[1] is None:
                cells.append("-")
                continue
            key, value = hit
            lo, hi = figures.get(f"{key}_lo"), figures.get(f"{key}_hi")
            ok = lo is not None and hi is not None and np.isfinite([lo, hi]).all()
            cells.append(f"{value:.3g} [{lo:.3g}, {hi:.3g}]" if ok else f"{value:.3g}")
        lines.append(f"| {name} | {doc['steps'].get(name, '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--attribute", required=True)
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--landmarks", type=Path, required=True)
    p.add_argument("--evalset", type=Path, required=True)
    p.add_argument("--judge", type=Path, required=True, help="the train_judge stage's folder (judge.pt)")
    p.add_argument("--models", nargs="+", required=True, help="name=generator.pt ...")
    p.add_argument("--sources", type=int, default=10**9)
    p.add_argument("--references", type=int, default=10**9)
    p.add_argument("--fid", choices=("auto", "require", "off"), default="auto")
    p.add_argument("--identity", choices=("auto", "require", "off"), default="auto")
    p.add_argument("--model-frame-landmarks", type=Path, default=None,
                   help="landmarks.npy of the generators' own training faces, when they frame faces otherwise")
    p.add_argument("--model-size", type=int, default=256, help="the generators' image size (with --model-frame-landmarks)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


if __name__ == "__main__":
    main()
