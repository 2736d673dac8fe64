"""Stage `train_judge`: the attribute classifier that judges every evaluation, trained once per data version.

Trains on the train partition, stops early and sets thresholds on val, reports AUC, balanced accuracy and
recalls on test; or, with `judge.weights`, measures the user's own judge on the same test partition (what it
saw is known only for a judge this stage trained). Writes out/judge.pt, out/metrics.json (the test report) and
out/trained_on.json (the images and people it trained and was selected on), then registers it in MLflow as
`geogan-judge` when MLflow is installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.data.split import read_manifest, resolve_attribute, row_partitions
from geogan.io import atomic_path, atomic_write_json
from geogan.stages._common import StageError, exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri, mlflow_installed
from geogan.training.distributed import resolve_device


def run(cfg: Config, prepared: Path = Path("data/prepared"), out: Path = Path("models/judge"),
        progress: bool = True) -> dict:
    """Train (or measure the user's) judge; write out/; register it. Returns the test report."""
    from geogan.metrics.judge import Judge, load_judge, save_judge

    if mlflow_installed():
        checked_tracking_uri(cfg.mlflow.tracking_uri)  # before any work
    manifest = read_manifest(Path(prepared) / "manifest.csv")
    columns = [resolve_attribute(manifest, a) for a in cfg.attributes]
    labels = np.stack([manifest.labels[c] for c in columns], axis=1).astype(np.float32)  # (N, A)
    s = cfg.split
    part = row_partitions(manifest, cfg.seed, s.test_fraction, s.val_fraction, s.use_source_partition)
    rows = {p: np.flatnonzero(part == p) for p in ("train", "val", "test")}
    confusions = {a: {c: manifest.labels[resolve_attribute(manifest, c, "the manifest (judge.confusions)")]
                      for c in cols} for a, cols in cfg.judge.confusions.items()}
    images = np.load(Path(prepared) / "images.npy", mmap_mode="r")
    version = data_version(prepared)
    if cfg.judge.weights:
        judge = load_judge(cfg.judge.weights)
        figures = _measure(judge, images, labels, rows["test"], list(cfg.attributes), confusions)
        # A judge this stage trained elsewhere (e.g. on a GPU) on the same data keeps its record of what it saw.
        seen = judge.trained_on if judge.meta.get("data_version") == version else {}
        judge = Judge(judge.net, judge.attributes, judge.thresholds, seen, {**judge.meta, "supplied": cfg.judge.weights})
    else:
        judge, figures = _fit(cfg, np.asarray(images), labels, rows, confusions, progress)
    judge.meta.update({"data_version": version, "resolution": int(images.shape[1]),
                       "columns": columns, "test": figures})
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_judge(tmp / "judge.pt", judge)
        atomic_write_json(tmp / "metrics.json", figures)
        atomic_write_json(tmp / "trained_on.json", _trained_on(manifest, judge.trained_on))
    _register(cfg, Path(out), figures)
    return {k: round(v, 4) for k, v in figures.items() if k.endswith(("/auc", "/bacc", "/recall", "/specificity"))}


def _fit(cfg: Config, images: np.ndarray, labels: np.ndarray, rows: dict, confusions: dict, progress: bool):
    from geogan.metrics.judge_fit import fit_judge

    j = cfg.judge
    if images.shape[1] % 32:
        raise StageError(f"the judge needs a resolution divisible by 32, the prepared images are {images.shape[1]} px")
    try:
        return fit_judge(images, labels, rows, list(cfg.attributes), width=j.width, max_steps=j.max_steps,
                         eval_every=j.eval_every, patience=j.patience, batch_size=j.batch_size, lr=j.lr,
                         weight_decay=j.weight_decay, device=resolve_device(j.device), seed=cfg.seed,
                         confusions=confusions, progress=progress)
    except ValueError as e:
        raise StageError(str(e)) from e


def _measure(judge, images: np.ndarray, labels: np.ndarray, test: np.ndarray, attributes: list[str],
             confusions: dict) -> dict:
    """The test report of a supplied judge, on this dataset's test partition."""
    from geogan.metrics.judge import predict_proba
    from geogan.metrics.judge_fit import report

    if judge.net.input_size != images.shape[1]:
        raise StageError(f"judge.weights: the judge takes {judge.net.input_size} px images, the data are {images.shape[1]} px")
    cols = [judge.index(a) for a in attributes]
    probs = predict_proba(judge, images[test]).numpy()[:, cols]
    thresholds = {a: judge.threshold(a) for a in attributes}
    cells = {a: {c: np.asarray(v)[test] for c, v in d.items()} for a, d in confusions.items()}
    return report(probs, labels[test], attributes, thresholds, cells)


def data_version(prepared: Path) -> str:
    """sha256 (16 hex digits) of the prepared images and manifest: the judge is trained once per value."""
    h = hashlib.sha256()
    for name in ("manifest.csv", "images.npy"):
        with open(Path(prepared) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _trained_on(manifest, trained_on: dict) -> dict:
    """The images and people the judge saw, by name: what the disjointness test reads."""
    if not trained_on:
        return {"known": False}
    out: dict = {"known": True}
    for part, idx in trained_on.items():
        out[part] = {"images": [manifest.images[i] for i in idx], "identities": sorted({manifest.identities[i] for i in idx} - {""})}
    return out


def _register(cfg: Config, out: Path, figures: dict) -> None:
    if not mlflow_installed():
        print(f"MLflow is not installed: the judge is in {out} only")
        return
    from geogan.judge_registry import log_and_register_judge

    uri, version = log_and_register_judge(out / "judge.pt", figures, cfg, checked_tracking_uri(cfg.mlflow.tracking_uri))
    print(f"judge registered: {uri} (version {version})")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, default=Path("models/judge"))
    args = p.parse_args(argv)
    exit_with(run_main("train_judge", lambda: run(load(args), args.prepared, args.out)))


if __name__ == "__main__":
    main()
