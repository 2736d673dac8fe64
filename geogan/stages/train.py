"""Stage `train`: GeoGAN for one attribute; resumable; rank 0 logs to MLflow and writes models/<attr>.

Runs alone (`python -m geogan.stages.train ...`) or under `torchrun --nproc-per-node N`
with the same arguments.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Sequence

from geogan.config import Config, config_to_dict, flatten
from geogan.data.dataset import load_prepared
from geogan.data.split import split_fingerprint
from geogan.io import atomic_path, atomic_write_json, read_json
from geogan.model import save_generator
from geogan.stages._common import StageError, add_data_paths, exit_with, load, parser, run_main
from geogan.tracking import NullTracker, checked_tracking_uri, mlflow_installed, run_ends
from geogan.training import checkpoint as ckpt
from geogan.training.build import training_sampler
from geogan.training.distributed import init_from_env, shutdown
from geogan.training.loop import NonFiniteLossError, train

# Train settings that do not change what is learnt: a checkpoint made under other values resumes.
_NOT_IN_RESUME_KEY = {"steps", "log_every", "image_every", "checkpoint_every", "device", "compile", "compile_cuda_graphs",
                     "compile_losses", "compile_cache", "grad_sync", "cudnn_benchmark"}


def run(cfg: Config, attribute: str, prepared: Path = Path("data/prepared"), landmarks: Path = Path("data/landmarks"),
        split: Path | None = None, out: Path | None = None, work: Path | None = None, progress: bool = True) -> dict:
    """Train, then write out/generator.pt and out/meta.json (rank 0). Returns a summary."""
    split = Path(split or f"data/splits/{attribute}.json")
    out = Path(out or f"models/{attribute}")
    work = Path(work or f"runs/{attribute}")
    if mlflow_installed():
        checked_tracking_uri(cfg.mlflow.tracking_uri)  # a server that does not answer stops us before any work
    env = init_from_env(cfg.train.device)
    try:
        data = load_prepared(prepared, landmarks)
        split_dict = read_json(split)
        train_a, train_b = split_dict["train"]["A"], split_dict["train"]["B"]
        if not train_a or not train_b:
            raise StageError(f"{split}: the training partition has an empty domain (A={len(train_a)}, B={len(train_b)})")
        sampler = training_sampler(data, split_dict, cfg.train, env.device, env.rank, env.world_size)
        data_version = split_fingerprint(split)
        key = ckpt.resume_key({
            "model": config_to_dict(cfg)["model"], "loss": config_to_dict(cfg)["loss"],
            "train": {k: v for k, v in config_to_dict(cfg)["train"].items() if k not in _NOT_IN_RESUME_KEY},
            "split": data_version, "landmarks": _md5(Path(landmarks) / "landmarks.npy"),
            "manifest": _md5(Path(prepared) / "manifest.csv"), "world_size": env.world_size,
        })
        tracker = _open_tracker(cfg, attribute, work, key, data_version) if env.is_main else NullTracker()
        with run_ends(tracker):  # FINISHED, FAILED or KILLED, whatever happens below
            if env.is_main and tracker.run_id is not None:
                _record_run(cfg, attribute, tracker, work, key, Path(prepared), split)
            try:
                result = train(cfg, sampler, env, work, key, tracker=tracker, progress=progress,
                               region=cfg.regions.get(attribute))
            except NonFiniteLossError as e:
                raise StageError(str(e)) from e
            if env.is_main:
                _write_model(cfg, attribute, out, work, result, tracker, data.resolution, data_version, key)
        return {"attribute": attribute, "steps": result.step, "resumed_from": result.resumed_from,
                "images_per_second": round(result.images_per_second, 2), "out": str(out), **result.last_losses}
    finally:
        shutdown(env)


def _write_model(cfg: Config, attribute: str, out: Path, work: Path, result, tracker, resolution: int,
                 data_version: str, key: str) -> None:
    """models/<attr>: generator.pt, meta.json, train_history.json, written at once; the last grid to MLflow."""
    meta = {"attribute": attribute, "resolution": resolution, "step": result.step,
            "mlflow_run_id": getattr(tracker, "run_id", None), "data_version": data_version,
            "resume_key": key, "config": config_to_dict(cfg)}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_generator(tmp / "generator.pt", _generator_from_state(cfg, result.generator_state), meta)
        atomic_write_json(tmp / "meta.json", meta)
        atomic_write_json(tmp / "train_history.json", result.history)
    grids = sorted((work / "grids").glob("*.png"))
    if grids:
        tracker.log_artifact(grids[-1], "grids")


def _generator_from_state(cfg: Config, state: dict):
    from geogan.nets import build_nets

    gen = build_nets(cfg.model).generator
    gen.load_state_dict(state)
    return gen


def _open_tracker(cfg: Config, attribute: str, work: Path, key: str, data_version: str):
    """Continue the MLflow run of the checkpoint being resumed, else start one (NullTracker without MLflow)."""
    if not mlflow_installed():
        print("MLflow is not installed: training without tracking (metrics still go to models/<attr>/train_history.json)")
        return NullTracker()
    from geogan.tracking import open_tracker

    run_file = work / "mlflow_run.json"
    previous = read_json(run_file) if run_file.is_file() else {}
    run_id = previous.get("run_id") if previous.get("resume_key") == key else None
    tracker = open_tracker(cfg.mlflow, attribute, run_id=run_id, run_name=run_name(cfg, attribute), claim=True,
                           tags={"stage": "train", "data_version": data_version, "git_commit": git_commit()},
                           description=run_description(cfg, attribute, data_version))
    tracker.start_system_metrics()
    return tracker


def run_name(cfg: Config, attribute: str) -> str:
    """What the run list shows: the attribute, what ran, and what sets runs of it apart."""
    t, m = cfg.train, cfg.model
    return f"{attribute} train {t.steps} steps seed {t.seed} {cfg.data.resolution}px ngf{m.ngf}"


def run_description(cfg: Config, attribute: str, data_version: str) -> str:
    """The run page's description (Markdown): what was trained on what, and where to look."""
    t, m = cfg.train, cfg.model
    return (f"GeoGAN transfer of **{attribute}**, trained {t.steps} steps (batch {t.batch_size}, seed {t.seed}) "
            f"on `{cfg.data.source}` at {cfg.data.resolution} px, split {data_version[:12]}; "
            f"ngf {m.ngf}, ndf {m.ndf}, flow inputs {m.flow_inputs}.\n\n"
            "Metrics: `loss/*` and `perf/*` while training, `eval/*` after the evaluate stage. "
            "Images: labelled transfer grids under `grids`, one per `train.image_every` steps (the step slider); "
            "artifacts: the last grid in `grids/`, the evaluation's "
            "grid and loss history in `evaluation/`; the registered generator is this run's logged model.")


def _record_run(cfg: Config, attribute: str, tracker, work: Path, key: str, prepared: Path, split: Path) -> None:
    """Params and input datasets of a new run; the run id beside the checkpoints, so a resumed training continues it."""
    if not getattr(tracker, "resumed", True):
        tracker.log_params({**flatten(cfg), "attribute": attribute})
        _log_inputs(tracker, attribute, prepared, split)
    atomic_write_json(work / "mlflow_run.json", {"run_id": tracker.run_id, "resume_key": key})


def _log_inputs(tracker, attribute: str, prepared: Path, split: Path) -> None:
    """The prepared data (digest of its images and manifest) and the split (md5 of its file) as training inputs."""
    from geogan.data.split import read_manifest
    from geogan.stages.train_judge import data_version
    from geogan.tracking import log_dataset

    manifest = read_manifest(Path(prepared) / "manifest.csv")
    rows = [{"image": image, "identity": identity} for image, identity in zip(manifest.images, manifest.identities)]
    log_dataset(tracker, rows, prepared, "prepared", data_version(prepared), "training")
    split_rows = [{"partition": part, "domain": domain, "index": int(i)}
                  for part, domains in read_json(split).items() if isinstance(domains, dict)
                  for domain, indices in domains.items() if isinstance(indices, list) for i in indices]
    log_dataset(tracker, split_rows, split, f"split-{attribute}", split_fingerprint(split), "training")


def git_commit(where: Path = Path(__file__).resolve().parent) -> str:
    """The commit of the code that runs (the checkout holding `where`, with '-dirty' if it has changes); outside
    git (an image), the commit it was built from (GEOGAN_GIT_COMMIT, the Dockerfile's GIT_COMMIT), else 'unknown'."""
    git = ["git", "-C", str(where)]
    try:
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("GEOGAN_GIT_COMMIT") or "unknown"


def _md5(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, attribute=True)
    add_data_paths(p)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    # SIGTERM: a checkpoint is saved, the MLflow run ends KILLED, exit 143; nothing is lost.
    exit_with(run_main("train", lambda: run(load(args), args.attribute, args.prepared, args.landmarks, args.split,
                                            args.out, args.work, progress=not args.no_progress)))


if __name__ == "__main__":
    main()
