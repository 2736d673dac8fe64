"""Stage `train_classifier`: the multi-label attribute classifier that judges transfers (once per dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.data.split import read_manifest, resolve_attribute, test_mask
from geogan.io import atomic_path, atomic_write_json
from geogan.stages._common import exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri, mlflow_installed, run_ends
from geogan.training.distributed import resolve_device


def run(cfg: Config, prepared: Path = Path("data/prepared"), out: Path = Path("models/classifier"), progress: bool = True) -> dict:
    """Train on the prepared images' labels; write out/classifier.pt and out/metrics.json."""
    from geogan.metrics.classifier import save_classifier, train_classifier

    if mlflow_installed():
        checked_tracking_uri(cfg.mlflow.tracking_uri)  # before any work
    manifest = read_manifest(Path(prepared) / "manifest.csv")
    columns = [resolve_attribute(manifest, a) for a in cfg.attributes]
    labels = np.stack([manifest.labels[c] for c in columns], axis=1).astype(np.float32)  # (N, A)
    held_out = test_mask(manifest, cfg.seed, cfg.split.test_fraction, cfg.split.use_source_partition)
    images = np.load(Path(prepared) / "images.npy", mmap_mode="r")
    c = cfg.classifier
    model, metrics = train_classifier(np.asarray(images), labels, np.flatnonzero(~held_out), np.flatnonzero(held_out),
                                      steps=c.steps, batch_size=c.batch_size, lr=c.lr, device=resolve_device(c.device),
                                      seed=cfg.seed, weights=c.weights, progress=progress,
                                      attributes=list(cfg.attributes))
    meta = {"attributes": list(cfg.attributes), "metrics": metrics, "train_images": int((~held_out).sum()),
            "test_images": int(held_out.sum()), "resolution": int(images.shape[1])}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_classifier(tmp / "classifier.pt", model, list(cfg.attributes), meta)
        atomic_write_json(tmp / "metrics.json", metrics)
    _log(cfg, metrics)
    return metrics


def _log(cfg: Config, metrics: dict) -> None:
    if not mlflow_installed():
        return
    from geogan.tracking import open_tracker

    c = cfg.classifier
    tracker = open_tracker(cfg.mlflow, "classifier", run_name=f"judge classifier {c.steps} steps seed {cfg.seed}",
                           tags={"stage": "train_classifier"},
                           description=f"The attribute classifier that judges transfers ({', '.join(cfg.attributes)}): "
                                       f"{c.steps} steps, batch {c.batch_size}, on the prepared images' train partition; "
                                       "`test/*` on the held-out partition.")
    with run_ends(tracker):
        tracker.log_metrics({f"test/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                            step=cfg.classifier.steps)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, default=Path("models/classifier"))
    args = p.parse_args(argv)
    exit_with(run_main("train_classifier", lambda: run(load(args), args.prepared, args.out)))


if __name__ == "__main__":
    main()
