"""Stage `evaluate`: a generator and the two baselines on the attribute's fixed evaluation set, judged by the judge.

    geogan evaluate --params params/celeba-128.yaml --attribute Mustache --model path/to/generator.pt

Writes metrics/<attr>.json, plots/<attr>/ and the same into the model's MLflow run, with the evaluation
set as the run's input dataset; `--model none` scores the baselines alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geogan.config import Config
from geogan.io import atomic_path, atomic_write_json, file_sha256
from geogan.stages._common import StageError, exit_with, load, parser, run_main
from geogan.tracking import checked_tracking_uri, mlflow_installed, run_ends
from geogan.training.distributed import resolve_device


def run(cfg: Config, attribute: str, prepared: Path = Path("data/prepared"), landmarks: Path = Path("data/landmarks"),
        evalset: Path | None = None, model: str | Path | None = None, judge: Path = Path("models/judge"),
        out: Path | None = None, plots: Path | None = None, progress: bool = True) -> dict:
    """Score the model (unless `model` is "none") and the baselines; returns the metrics document.

    The document (`out`, DVC metrics) holds each method's figures with 95% intervals and sample counts,
    the evaluation set's digest and the judge's identity; `plots` gets a results figure and the training
    curves. Paths left None default to data/evalsets/<attr>.json, models/<attr>, metrics/<attr>.json
    and plots/<attr>.
    """
    from geogan import evaluation as ev
    from geogan.data.dataset import load_prepared
    from geogan.data.evalset import pair_rows, read_evalset
    from geogan.data.split import read_manifest
    from geogan.metrics.report import evaluation_report
    from geogan.visualize import image_grid, save_png

    evalset_file = Path(evalset or f"data/evalsets/{attribute}.json")
    out, plots = Path(out or f"metrics/{attribute}.json"), Path(plots or f"plots/{attribute}")
    model = str(model if model is not None else f"models/{attribute}")
    e, region, device = cfg.evaluate, cfg.regions[attribute], resolve_device(cfg.evaluate.device)
    if mlflow_installed():
        checked_tracking_uri(cfg.mlflow.tracking_uri)  # before any work
    manifest = read_manifest(Path(prepared) / "manifest.csv")
    data = load_prepared(prepared, landmarks)
    es = read_evalset(evalset_file, manifest)
    judge_file = Path(judge) / "judge.pt"
    judge_obj = _judge(judge_file, es, manifest, data.resolution, device)
    src_rows, ref_rows, _, _ = pair_rows(es)
    inputs = ev.EvalInputs.for_pairs(
        data.images, data.landmarks, src_rows, ref_rows, attribute, region,
        real_with=np.asarray(es["real"]["with"], np.int64), real_without=np.asarray(es["real"]["without"], np.int64),
        judge=judge_obj, inception=_inception(e, device), faces=_synthetic_faces(prepared),
        embedder=_embedder(e.identity, real_faces=not (Path(prepared) / "synthetic.json").is_file()),
        batch_size=e.batch_size, device=device, progress=progress)
    methods, meta = _methods(cfg, attribute, model, device)
    results, grids = ev.evaluate(methods, inputs, e.bootstrap, e.kid_subsets, cfg.seed)
    report = evaluation_report(attribute, es, evalset_file, judge_obj, file_sha256(judge_file), inputs.inception,
                               results, int(meta.get("step", 0)))
    if "generator_file" in meta:  # binds these figures to the weights: `register` refuses them for other weights
        report["generator_sha256"] = file_sha256(meta["generator_file"])
    with atomic_path(plots) as tmp:
        tmp.mkdir()
        folder = Path(model).parent if Path(model).is_file() else Path(model)
        atomic_write_json(tmp / "train_losses.json", ev.history_for_plots(folder / "train_history.json"))
        save_png(tmp / "transfers.png", image_grid(ev.results_grid_rows(grids)))
    atomic_write_json(out, report)
    if progress:
        from geogan.metrics.report import comparison_table

        print(f"{attribute}: {es['num_pairs']} pairs ({len(es['sources'])} sources x {len(es['references'])} references), "
              f"evaluation set {es['digest'][:12]}\n" + comparison_table({m: report[m] for m in methods}))
    if meta:
        _log_to_mlflow(cfg, attribute, meta, report, plots, evalset_file, es)
    return report


def _methods(cfg: Config, attribute: str, model: str, device) -> tuple[dict[str, Any], dict]:
    """The generator (unless "none") and the two baselines, and the generator's meta."""
    from geogan.metrics.baselines import copy_paste, do_nothing

    region, feather = cfg.regions[attribute], cfg.evaluate.copy_paste_feather
    methods: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if model != "none":
        methods["model"], meta = _generator(model, device)
    methods["copy_paste"] = lambda a, b, la, lb: copy_paste(a, b, la, lb, region.points, region.margin, feather)
    methods["do_nothing"] = do_nothing
    return methods, meta


def _judge(judge_file: Path, evalset: dict, manifest, resolution: int, device) -> Any:
    """The judge, refused when it saw a face or a person of the evaluation set."""
    from geogan.data.evalset import check_judge_disjoint
    from geogan.metrics.judge import load_judge

    judge = load_judge(judge_file, map_location=device)
    judge.index(evalset["attribute"])
    if judge.net.input_size != resolution:
        raise StageError(f"{judge_file}: the judge takes {judge.net.input_size} px images, the data are {resolution} px")
    if judge.trained_on:
        check_judge_disjoint(judge.trained_on, evalset, manifest)
    else:
        print(f"note: {judge_file} does not say what it trained on (supplied judge): its independence is not checked")
    return judge


def _generator(model: str, device) -> tuple[Any, dict]:
    from geogan.evaluation import generator_method
    from geogan.model import inference_refine_weight, load_generator
    from geogan.stages.transfer import resolve_generator_file

    file = resolve_generator_file(model)
    generator, meta = load_generator(file, map_location=device)
    # The model's own training config, not today's params; its file, for the digest that binds the figures.
    return generator_method(generator, inference_refine_weight(meta)), {**meta, "generator_file": str(file)}


def _inception(e, device) -> Any:
    from geogan.metrics.inception import load_inception

    if e.fid == "off":
        return None
    extractor = load_inception(e.inception_weights, device=device)
    if extractor is None and e.fid == "require":
        raise StageError("evaluate.fid is 'require' but the FID Inception weights are missing (see the line above)")
    return extractor


def _embedder(mode: str, real_faces: bool) -> Any:
    """dlib's face embedder; `auto` uses it on real faces when dlib is installed."""
    from geogan.metrics.identity import FaceEmbedder, IdentityModelMissing

    if mode == "off" or (mode == "auto" and not real_faces):
        return None
    try:
        return FaceEmbedder()
    except IdentityModelMissing as err:
        if mode == "require":
            raise StageError(f"evaluate.identity is 'require' but {err}") from err
        print(f"note: identity metric skipped: {err}")
        return None


def _synthetic_faces(prepared: Path) -> list | None:
    from geogan.data.synthetic import load_synthetic

    file = Path(prepared) / "synthetic.json"
    return load_synthetic(file)[0] if file.is_file() else None


def _log_to_mlflow(cfg: Config, attribute: str, meta: dict, report: dict, plots: Path, evalset_file: Path,
                   evalset: dict) -> None:
    """Into the training run (a history; the registry keeps each version's own figures), else a run of its own:
    the figures (eval/<key>, eval/<baseline>/<key>), the figure, and the evaluation set as the run's input."""
    if not mlflow_installed():
        print("MLflow is not installed: metrics only in the metrics file")
        return
    from geogan.metrics.registry import tracking_metrics
    from geogan.tracking import log_evaluation_input, open_tracker

    # A run of its own only when the training run is unknown to this store (trained elsewhere).
    tracker = open_tracker(cfg.mlflow, attribute, run_id=meta.get("mlflow_run_id"),
                           run_name=f"{attribute} evaluate {meta.get('step', 0)}-step generator",
                           description=f"Evaluation of a {attribute} generator trained elsewhere "
                                       f"({meta.get('step', 0)} steps; its training run is not in this store).")
    with run_ends(tracker):  # ends only a run it started
        tracker.log_metrics({f"eval/{k}": v for k, v in tracking_metrics(report).items()}, step=int(meta.get("step", 0)))
        tracker.set_tags({"eval.set_digest": evalset["digest"], "eval.judge_sha256": report["judge"]["sha256"]})
        log_evaluation_input(tracker, evalset_file, evalset)
        for f in sorted(plots.iterdir()):
            tracker.log_artifact(f, "evaluation")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--landmarks", type=Path, default=Path("data/landmarks"))
    p.add_argument("--evalset", type=Path, default=None, help="default: data/evalsets/<attribute>.json")
    p.add_argument("--model", default=None, help="a folder, a generator.pt, a models:/ URI, or 'none' "
                                                 "(baselines only); default: models/<attribute>")
    p.add_argument("--judge", type=Path, default=Path("models/judge"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None)
    args = p.parse_args(argv)
    exit_with(run_main("evaluate", lambda: _summary(run(load(args), args.attribute, args.prepared, args.landmarks,
                                                        args.evalset, args.model, args.judge, args.out, args.plots))))


def _summary(report: dict) -> dict:
    """The headline figures of each method, for the stage's one-line summary."""
    from geogan.metrics.registry import find

    out = {}
    for method in ("model", "copy_paste", "do_nothing"):
        if method in report:
            hits = [find(report[method], k) for k in ("transfer_success", "judge_fp", "kid_a2b", "landmark_err", "gt_psnr")]
            out[method] = {k: round(v, 4) for k, v in filter(None, hits) if v is not None}
    return out


if __name__ == "__main__":
    main()
