"""Stage `evaluate`: metrics/<attr>.json (DVC metrics), plots/<attr>/ (DVC plots) and the same in the MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geogan.config import Config
from geogan.data.dataset import load_prepared
from geogan.io import atomic_path, atomic_write_json, file_sha256, read_json
from geogan.stages._common import StageError, add_data_paths, exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri, mlflow_installed, run_ends
from geogan.training.distributed import resolve_device


def run(cfg: Config, attribute: str, prepared: Path = Path("data/prepared"), landmarks: Path = Path("data/landmarks"),
        split: Path | None = None, model: Path | None = None, classifier: Path = Path("models/classifier"),
        out: Path | None = None, plots: Path | None = None) -> dict:
    """Evaluate models/<attr> on the attribute's test pairs; returns the metrics dict."""
    from geogan import evaluation as ev
    from geogan.model import inference_refine_weight, load_generator
    from geogan.visualize import image_grid, save_png

    split = Path(split or f"data/splits/{attribute}.json")
    model = Path(model or f"models/{attribute}")
    out = Path(out or f"metrics/{attribute}.json")
    plots = Path(plots or f"plots/{attribute}")
    e = cfg.evaluate
    device = resolve_device(e.device)
    if mlflow_installed():
        checked_tracking_uri(cfg.mlflow.tracking_uri)  # before any work

    data = load_prepared(prepared, landmarks)
    split_dict = read_json(split)
    generator, meta = load_generator(model / "generator.pt")
    pairs = ev.test_pairs(split_dict["test"]["A"], split_dict["test"]["B"], e.num_images, cfg.seed)
    refine_w = inference_refine_weight(meta)  # the model's own training config, not today's params
    t = ev.run_transfers(generator, np.asarray(data.images), data.landmarks, pairs, e.batch_size, device, refine_w)

    # The generator's digest binds these figures to its weights: `register` refuses them for other weights.
    metrics: dict[str, float | str] = {"num_pairs": len(pairs.idx_a), "train_steps": int(meta.get("step", 0)),
                                       "generator_sha256": file_sha256(model / "generator.pt")}
    metrics.update(ev.geometry_metrics(t))
    synthetic_file = Path(prepared) / "synthetic.json"
    if synthetic_file.is_file():
        from geogan.data.synthetic import face_from_dict

        faces = [face_from_dict(d) for d in read_json(synthetic_file)["faces"]]
        metrics.update(ev.synthetic_ground_truth(t, faces, pairs, attribute, data.resolution))
    metrics.update(_identity(cfg.evaluate.identity, t, real_faces=not synthetic_file.is_file()))
    metrics.update(_judge_and_fid(cfg, attribute, classifier, data, split_dict, t, device))

    history = ev.history_for_plots(model / "train_history.json")
    grid = image_grid(ev.results_grid_rows(t))
    with atomic_path(plots) as tmp:
        tmp.mkdir()
        atomic_write_json(tmp / "train_losses.json", history)
        save_png(tmp / "transfers.png", grid)
    atomic_write_json(out, metrics)
    _log_to_mlflow(cfg, attribute, meta, metrics, plots)
    return metrics


def _identity(mode: str, t: dict, real_faces: bool) -> dict:
    """dlib face-embedding distance source vs output; `auto` runs it on real faces when dlib is installed."""
    from geogan.evaluation import identity_metrics_of
    from geogan.metrics.identity import FaceEmbedder, IdentityModelMissing

    if mode == "off" or (mode == "auto" and not real_faces):
        return {}
    try:
        embedder = FaceEmbedder()
    except IdentityModelMissing as e:
        if mode == "require":
            raise StageError(f"evaluate.identity is 'require' but {e}") from e
        print(f"note: identity metric skipped: {e}")
        return {}
    return identity_metrics_of(t, embedder)


def _judge_and_fid(cfg: Config, attribute: str, classifier_dir: Path, data, split_dict: dict, t: dict, device) -> dict:
    """Transfer success by the attribute classifier, and FID (or the clearly named fid_clf fallback)."""
    from geogan.evaluation import judge_metrics
    from geogan.metrics.classifier import load_classifier, penultimate_features, predict_proba
    from geogan.metrics.fid import compute_fid_metrics, load_inception
    from geogan.model import to_tensor

    e = cfg.evaluate
    out: dict = {}
    clf_file = Path(classifier_dir) / "classifier.pt"
    clf = None
    if clf_file.is_file():
        clf, clf_meta = load_classifier(clf_file, map_location=device)
        names = [n.lower() for n in clf_meta["attributes"]]
        if attribute.lower() not in names:
            raise StageError(f"{clf_file}: classifier was trained on {clf_meta['attributes']}, not '{attribute}'")
        idx = names.index(attribute.lower())
        out.update(judge_metrics(t, lambda x: predict_proba(clf, x.to(device)), idx, e.batch_size))
        acc = clf_meta.get("metrics", {}).get(f"acc/{clf_meta['attributes'][idx]}")
        if acc is not None:
            out["judge_accuracy"] = float(acc)
    else:
        print(f"note: {clf_file} not found; transfer_success is not computed")

    if e.fid == "off":
        return out
    real = to_tensor(np.asarray(data.images)[split_dict["test"]["B"]])
    extractor = load_inception(e.inception_weights, device=device)
    if extractor is None and e.fid == "require":
        raise StageError("evaluate.fid is 'require' but the FID Inception weights are missing (see the line above)")
    fallback = (lambda x: penultimate_features(clf, x.to(device))) if (clf is not None and e.fid_fallback_classifier) else None
    out.update(compute_fid_metrics(real, t["x_out"], extractor=extractor, fallback_extractor=fallback,
                                   allow_fallback=e.fid_fallback_classifier, require=e.fid == "require",
                                   batch_size=e.batch_size, device=device))
    return out


def _log_to_mlflow(cfg: Config, attribute: str, meta: dict, metrics: dict, plots: Path) -> None:
    """Into the training run (a history; the registry keeps each version's own figures), else a run of its own."""
    if not mlflow_installed():
        print("MLflow is not installed: metrics only in the metrics file")
        return
    from geogan.tracking import open_tracker

    # A run of its own only when the training run is unknown to this store (trained elsewhere).
    tracker = open_tracker(cfg.mlflow, attribute, run_id=meta.get("mlflow_run_id"),
                           run_name=f"{attribute} evaluate {meta.get('step', 0)}-step generator",
                           description=f"Evaluation of a {attribute} generator trained elsewhere "
                                       f"({meta.get('step', 0)} steps; its training run is not in this store).")
    with run_ends(tracker):  # ends only a run it started
        numeric = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        tracker.log_metrics(numeric, step=int(meta.get("step", 0)))
        for f in sorted(plots.iterdir()):
            tracker.log_artifact(f, "evaluation")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    add_data_paths(p, model=True)
    p.add_argument("--classifier", type=Path, default=Path("models/classifier"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None)
    args = p.parse_args(argv)
    exit_with(run_main("evaluate", lambda: run(load(args), args.attribute, args.prepared, args.landmarks, args.split,
                                               args.model, args.classifier, args.out, args.plots)))


if __name__ == "__main__":
    main()
