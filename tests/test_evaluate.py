"""The evaluation stages on tiny synthetic data: the judge's independence from files, the model beside the baselines, MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from geogan.data.split import read_manifest
from tests.helpers.data import make_tiny_data
from tests.helpers.params import tiny_config

ATTR = "Mustache"
CELEBA_20K = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-20k"
SMALL = {"judge.max_steps": 20, "judge.eval_every": 10, "evaluate.sources": 6, "evaluate.references": 3,
         "evaluate.fid": "off", "evaluate.bootstrap": 300, "split.val_fraction": 0.2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """train_judge, evalset and evaluate (a tiny untrained generator), as the stages run them."""
    from geogan.model import save_generator
    from tests.helpers.training import tiny_nets
    from geogan.stages import evalset, evaluate, train_judge

    root = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # MLflow's artifacts land in the tmp folder, not the checkout
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    try:
        data = make_tiny_data(root / "data", attributes=(ATTR,), identities=40)
        cfg = tiny_config(**SMALL)
        judge_summary = train_judge.run(cfg, data.prepared, root / "judge", progress=False)
        evalset.run(cfg, ATTR, data.prepared, data.landmarks, root / "evalsets" / f"{ATTR}.json")
        generator = tiny_nets(ngf=4, ndf=4, n_blocks=1, n_scales=1).generator
        meta = {"attribute": ATTR, "resolution": 64, "step": 3, "mlflow_run_id": None,
                "config": {"loss": {"refine_weight": 0.1, "refine_start_step": 0}}}
        save_generator(root / "model" / "generator.pt", generator, meta)
        report = evaluate.run(cfg, ATTR, data.prepared, data.landmarks, root / "evalsets" / f"{ATTR}.json",
                              root / "model", root / "judge", root / "metrics.json", root / "plots", progress=False)
        yield {"root": root, "data": data, "cfg": cfg, "report": report, "judge_summary": judge_summary}
    finally:
        mp.undo()


def test_the_judge_never_saw_a_face_or_person_of_an_evaluation_set(run):
    """Proved from the files alone: the manifest, the judge's trained_on.json and the evaluation set files."""
    root = run["root"]
    manifest = read_manifest(run["data"].prepared / "manifest.csv")
    seen = json.loads((root / "judge" / "trained_on.json").read_text())
    assert seen["known"] and len(seen["train"]["images"]) > len(seen["val"]["images"]) > 0
    judge_images = set(seen["train"]["images"]) | set(seen["val"]["images"])
    judge_people = set(seen["train"]["identities"]) | set(seen["val"]["identities"])
    for path in sorted((root / "evalsets").glob("*.json")):
        es = json.loads(path.read_text())
        faces = es["sources"] + es["references"]
        assert not {f["image"] for f in faces} & judge_images, path
        assert not {f["identity"] for f in faces} & judge_people, path
        assert all(manifest.images[f["row"]] == f["image"] for f in faces)
        real = [manifest.images[i] for i in es["real"]["with"] + es["real"]["without"]]
        assert not set(real) & judge_images  # nor any real face FID compares against


def test_model_and_baselines_are_scored_on_the_same_pairs(run):
    report, root = run["report"], run["root"]
    es = json.loads((root / "evalsets" / f"{ATTR}.json").read_text())
    assert report["eval_set"]["digest"] == es["digest"] and report["eval_set"]["pairs"] == 18
    assert json.loads((root / "metrics.json").read_text()) == report
    model, paste, nothing = report["model"], report["copy_paste"], report["do_nothing"]
    for figures in (model, paste, nothing):
        assert {"transfer_success_18", "judge_fp_6", "landmark_err_18", "gt_psnr_18", "instance_fidelity_18"} <= figures.keys()
        assert not any(k.startswith(("fid_", "kid_", "identity_")) for k in figures)  # FID off, synthetic faces
        for key in ("transfer_success_18", "gt_l1_region_18", "landmark_err_18"):
            assert figures[f"{key}_lo"] <= figures[key] <= figures[f"{key}_hi"]
    # Do-nothing's a* is a: the judge's verdict on it is its false-positive rate, and its mask has nowhere to be.
    assert nothing["transfer_success_18"] == nothing["judge_fp_6"] == model["judge_fp_6"]
    assert nothing["mask_in_region_0"] is None and nothing["change_outside_region_18"] == 0.0
    assert nothing["instance_fidelity_18"] == pytest.approx(1 / 3) == nothing["instance_fidelity_18_chance"]
    assert paste["mask_in_region_18"] == 1.0 and paste["landmark_err_18"] < nothing["landmark_err_18"]
    # The model's F(b) also runs alone on every real test face with the attribute, each counted once.
    n_with = len(es["real"]["with"])
    assert n_with > 3 and 0 <= model[f"removal_standalone_success_{n_with}"] <= 1
    assert not any(k.startswith("removal_standalone") for k in {**paste, **nothing})  # they need a source
    assert (root / "plots" / "transfers.png").is_file()
    assert report["judge"]["sha256"] and "auc" in report["judge"]["test"]


def test_judge_and_evaluation_are_in_mlflow(run):
    from mlflow import MlflowClient

    from geogan.judge_registry import MODEL_NAME, log_and_register_judge
    from geogan.tracking import tracking_uri

    root = run["root"]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias(MODEL_NAME, "current")
    assert version.tags["judge_sha256"] == run["report"]["judge"]["sha256"]
    assert float(version.tags[f"threshold.{ATTR}"]) == pytest.approx(run["report"]["judge"]["threshold"], rel=1e-5)
    assert client.get_run(version.run_id).info.status == "FINISHED"
    # The same file again: no new version.
    metrics = json.loads((root / "judge" / "metrics.json").read_text())
    again = log_and_register_judge(root / "judge" / "judge.pt", metrics, run["cfg"], tracking_uri(uri))
    assert again[1] == int(version.version)

    exp = client.get_experiment_by_name(f"geogan-{ATTR}")
    (evaluated,) = client.search_runs([exp.experiment_id])
    assert evaluated.info.status == "FINISHED"
    assert "eval/transfer_success_18" in evaluated.data.metrics and "eval/copy_paste/landmark_err_18" in evaluated.data.metrics
    (dataset,) = evaluated.inputs.dataset_inputs
    assert dataset.dataset.name == f"evalset-{ATTR}" and dataset.dataset.digest == run["report"]["eval_set"]["digest"][:16]
    assert evaluated.data.tags["eval.set_digest"] == run["report"]["eval_set"]["digest"]


def test_a_judge_that_saw_an_evaluated_face_is_refused(run, tmp_path, capsys):
    from geogan.metrics.judge import load_judge, save_judge
    from geogan.stages import evaluate

    root, data = run["root"], run["data"]
    judge = load_judge(root / "judge" / "judge.pt")
    es = json.loads((root / "evalsets" / f"{ATTR}.json").read_text())
    judge.trained_on["train"].append(es["sources"][0]["row"])
    save_judge(tmp_path / "judge" / "judge.pt", judge)
    params = tmp_path / "params.yaml"
    import yaml

    from tests.helpers.params import tiny_params_dict

    params.write_text(yaml.safe_dump(tiny_params_dict(**SMALL)))
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--params", str(params), "--attribute", ATTR, "--prepared", str(data.prepared),
                       "--landmarks", str(data.landmarks), "--evalset", str(root / "evalsets" / f"{ATTR}.json"),
                       "--model", "none", "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "not independent of what it scores" in err[0], err
    assert not (tmp_path / "m.json").exists()


def test_a_judge_of_your_own_is_measured_on_the_test_partition_and_its_independence_said_unchecked(
        run, tmp_path, monkeypatch, capsys):
    from geogan.metrics.judge import load_judge, save_judge
    from geogan.stages import evaluate, train_judge

    root, data = run["root"], run["data"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    trained = json.loads((root / "judge" / "metrics.json").read_text())
    # Trained by this stage on the same data elsewhere (a GPU): measured again, its record of what it saw kept.
    cfg = tiny_config(**{**SMALL, "judge.weights": str(root / "judge" / "judge.pt")})
    train_judge.run(cfg, data.prepared, tmp_path / "same", progress=False)
    assert (tmp_path / "same" / "trained_on.json").read_text() == (root / "judge" / "trained_on.json").read_text()
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())[f"{ATTR}/auc"] == trained[f"{ATTR}/auc"]
    # Trained on other data: what it saw is unknown, and evaluation says its independence is unchecked.
    other = load_judge(root / "judge" / "judge.pt")
    other.meta["data_version"] = "other data"
    save_judge(tmp_path / "other.pt", other)
    cfg = tiny_config(**{**SMALL, "judge.weights": str(tmp_path / "other.pt")})
    train_judge.run(cfg, data.prepared, tmp_path / "own", progress=False)
    assert json.loads((tmp_path / "own" / "trained_on.json").read_text()) == {"known": False}
    capsys.readouterr()
    report = evaluate.run(cfg, ATTR, data.prepared, data.landmarks, root / "evalsets" / f"{ATTR}.json", "none",
                          tmp_path / "own", tmp_path / "m.json", tmp_path / "plots", progress=False)
    assert "its independence is not checked" in capsys.readouterr().out
    assert set(report) >= {"copy_paste", "do_nothing"} and "model" not in report


def _celeba_manifest():
    """CelebA's own partition, identity and attribute files for celeba-20k, as a manifest (no images needed)."""
    from geogan.data.split import Manifest

    def table(name: str) -> dict[str, str]:
        return dict(line.split()[:2] for line in (CELEBA_20K / name).read_text().splitlines() if line.strip())

    partition, identity = table("list_eval_partition.txt"), table("identity_CelebA.txt")
    lines = (CELEBA_20K / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    images = tuple(r[0] for r in rows)
    labels = {h: np.array([int(r[1 + j]) > 0 for r in rows], np.int8) for j, h in enumerate(header)}
    parts = tuple({"0": "train", "1": "val", "2": "test"}[partition[i]] for i in images)
    return Manifest(images, tuple(identity[i] for i in images), parts, labels)


def test_on_celeba_20k_the_judges_partitions_and_the_evaluation_sets_share_no_face_or_person():
    if not (CELEBA_20K / "list_eval_partition.txt").is_file():
        pytest.skip(f"celeba-20k not present at {CELEBA_20K} (../shared/data/celeba-20k)")
    from geogan.config import load_config
    from geogan.data.evalset import check_judge_disjoint, draw_evalset
    from geogan.data.split import row_partitions

    cfg = load_config(Path(__file__).resolve().parents[1] / "params" / "celeba-128.yaml")
    manifest = _celeba_manifest()
    s, e = cfg.split, cfg.evaluate
    part = row_partitions(manifest, cfg.seed, s.test_fraction, s.val_fraction, s.use_source_partition)
    judge_rows = {p: np.flatnonzero(part == p).tolist() for p in ("train", "val")}  # what train_judge trains on
    for attribute in cfg.attributes:
        es = draw_evalset(manifest, part, np.ones(len(manifest), bool), attribute,
                          e.populations.get(attribute, ""), e.sources, e.references, cfg.seed)
        assert es["num_pairs"] >= 1000
        check_judge_disjoint(judge_rows, es, manifest)


def test_inception_features_feed_fid_and_kid_and_each_distinct_image_passes_once(tmp_path):
    """The Inception wiring, with a small feature network (the FID network itself: tests/test_fid.py)."""
    import torch.nn.functional as F

    from geogan.data.dataset import load_prepared
    from geogan.evaluation import EvalInputs, evaluate
    from geogan.metrics.baselines import do_nothing
    from geogan.metrics.inception import FeatureExtractor
    from geogan.metrics.registry import flat

    data = make_tiny_data(tmp_path, attributes=(ATTR,), identities=40)
    prepared = load_prepared(data.prepared, data.landmarks)
    split = json.loads(data.splits[ATTR].read_text())
    src, ref = np.asarray(split["test"]["A"][:4]), np.asarray(split["test"]["B"][:3])
    passed = []

    def block_colours(x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, 48)
        passed.append(len(x))
        return F.adaptive_avg_pool2d(x, 4).flatten(1)

    real_without = np.asarray(split["test"]["A"])  # holds every source; real_with holds every reference
    inputs = EvalInputs.for_pairs(prepared.images, prepared.landmarks, np.repeat(src, 3), np.tile(ref, 4), ATTR,
                                  tiny_config().regions[ATTR], real_with=np.asarray(split["test"]["B"]),
                                  real_without=real_without, inception=FeatureExtractor(
                                      block_colours, "block colours", "test", 48, torch.device("cpu")), progress=False)
    out = flat(evaluate({"do_nothing": do_nothing}, inputs, bootstrap=50, kid_subsets=5)[0]["do_nothing"])
    # Do-nothing's a* are the sources and its F(b) the references: no image beyond the real sets passes.
    assert sum(passed) == len(split["test"]["A"]) + len(split["test"]["B"])
    for name in ("fid_a2b_12", "kid_a2b_12", "fid_b2a_3", "kid_b2a_3"):  # F(b): once per reference
        assert math.isfinite(out[name]), name
    assert out["kid_a2b_12_num_real"] == len(split["test"]["B"]) and out["fid_b2a_3_num_real"] == len(real_without)
    assert out["kid_a2b_12_lo"] <= out["kid_a2b_12"] <= out["kid_a2b_12_hi"] and out["kid_a2b_12_std"] >= 0
    assert out["fid_a2b_12_lo"] is None  # FID has no interval
