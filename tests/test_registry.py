"""Registry against a real MLflow server on loopback: register, gated promotion on each version's own figures, serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from geogan.config import PromoteConfig
from geogan.registry import (
    PromotionRefused,
    compare_versions,
    format_table,
    gate_checks,
    log_and_register,
    promote,
    version_metrics,
)
from tests.helpers.mlflow import mlflow_server
from tests.helpers.training import save_tiny_generator

GATE = PromoteConfig(min_transfer_success=0.5, max_kid_vs_copy_paste=1.0, min_identity_kept=0.8, max_landmark_error=0.5,
                     allow_worse_than_champion=False)
# Names as `evaluate` logs them: with their sample counts, the baselines under their own prefix.
GOOD = {"transfer_success_1000": 0.8, "transfer_success_1000_lo": 0.7, "transfer_success_1000_hi": 0.9,
        "kid_a2b_1000": 0.02, "copy_paste/kid_a2b_1000": 0.05, "identity_kept_1000": 0.95, "landmark_err_1000": 0.1,
        "copy_paste/transfer_success_1000": 0.4, "do_nothing/transfer_success_1000": 0.03}
BAD = {**GOOD, "transfer_success_1000": 0.2, "transfer_success_1000_lo": 0.15, "transfer_success_1000_hi": 0.25,
       "kid_a2b_1000": 0.09}
SIZE = 64


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> list[Path]:
    """Three generators with different weights."""
    folder = tmp_path_factory.mktemp("model")
    return [save_tiny_generator(folder / f"generator{i}.pt", seed=i, size=SIZE) for i in range(3)]


@pytest.fixture(scope="module")
def generator_file(generators) -> Path:
    return generators[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def _evaluated_run(uri: str, metrics: dict[str, float], experiment: str = "geogan-Mustache") -> str:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run_id = client.create_run(exp_id, run_name="Mustache-train", tags={"attribute": "Mustache"}).info.run_id
    for k, v in metrics.items():
        client.log_metric(run_id, f"eval/{k}", v)
    client.set_terminated(run_id)
    return run_id


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_register_promote_refuse_and_serve_champion(server, generators):
    generator_file = generators[0]
    import mlflow
    from mlflow import MlflowClient

    from geogan.model import load_generator, to_tensor, to_uint8, transfer
    from geogan.serving import decode_image, encode_image

    client = MlflowClient(server)
    tags = {"data_version": "0123456789abcdef", "git_commit": "deadbeef"}

    # Version 1 passes the gate and becomes champion.
    uri1, v1 = log_and_register(generator_file, "Mustache", _evaluated_run(server, GOOD), server, tags, GOOD)
    assert (uri1, v1) == ("models:/geogan-Mustache/1", 1)
    mv1 = client.get_model_version_by_alias("geogan-Mustache", "candidate")
    assert mv1.version == "1" and mv1.tags["data_version"] == "0123456789abcdef" and mv1.tags["git_commit"] == "deadbeef"
    result = promote("Mustache", GATE, server)
    assert result["promoted"] and result["version"] == 1 and result["previous_champion"] is None

    # Version 2 (other weights) fails it: refused with the failing figures, champion unchanged, nothing deleted.
    _, v2 = log_and_register(generators[1], "Mustache", _evaluated_run(server, BAD), server, tags, BAD)
    assert v2 == 2 and client.get_model_version_by_alias("geogan-Mustache", "candidate").version == "2"
    with pytest.raises(PromotionRefused) as refused:
        promote("Mustache", GATE, server)
    message = str(refused.value)
    assert "transfer_success_1000 0.2" in message and "kid_a2b_1000 0.09 (needs <= 0.05" in message
    assert "landmark_err" not in message and "identity" not in message
    assert {f["metric"] for f in refused.value.failures} == {"transfer_success_1000", "kid_a2b_1000"}
    assert client.get_model_version_by_alias("geogan-Mustache", "champion").version == "1"
    assert sorted(int(v.version) for v in client.search_model_versions("name='geogan-Mustache'")) == [1, 2]

    # The champion serves a transfer through pyfunc, equal to calling the generator directly.
    source, reference = _face(1), _face(2)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server)
    try:
        served = mlflow.pyfunc.load_model("models:/geogan-Mustache@champion")
        pairs = pd.DataFrame({"source": [encode_image(source)] * 2, "reference": [encode_image(reference)] * 2})
        out = served.predict(pairs)
        single = served.predict({"source": encode_image(source), "reference": encode_image(reference)})
    finally:
        mlflow.set_tracking_uri(previous)
    assert list(out.columns) == ["output"] and len(out) == 2 and single["output"][0] == out["output"][0]
    image = decode_image(out["output"][0])
    generator, _ = load_generator(generator_file)
    direct = transfer(generator, to_tensor(source), to_tensor(reference), 0.1).x_out
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, to_uint8(direct)[0])

    # The cross-attribute table: champion and candidate, each with its own figures (its interval, the baselines
    # beside), and a line for an attribute without a registered version.
    rows = compare_versions(server, ["Mustache", "Eyeglasses"])
    assert [(r["version"], r["aliases"], r["metrics"]["transfer_success_1000"]) for r in rows[:2]] == [
        (1, "champion", 0.8), (2, "candidate", 0.2)]
    assert rows[2] == {"attribute": "Eyeglasses"}
    table = format_table(rows).splitlines()
    assert table[0].startswith("Mustache version 1 (champion): run ") and table[1].split() == [
        "metric", "model", "copy_paste", "do_nothing"]
    candidate = table[table.index(next(line for line in table if line.startswith("Mustache version 2 (candidate)"))):]
    row = next(line for line in candidate if line.startswith("transfer_success_1000"))
    assert row.split()[1:] == ["0.2", "[0.15,", "0.25]", "0.4", "0.03"]  # the model's interval, the baselines beside
    assert table[-1] == "Eyeglasses: no registered version"


def test_resume_run_exp_and_back_each_version_gates_on_its_own_figures(server, generators):
    """The `dvc exp run -S train.steps=400` and back sequence: one training run (resumed), three registrations.

    The run holds the 400-step evaluation as its latest metrics when the 150-step weights
    come back; the registry must still gate and show the 150-step figures for them, and
    registering them again must return their existing version.
    """
    from mlflow import MlflowClient

    client = MlflowClient(server)
    name = "geogan-Smile"
    w150, w400 = generators[1], generators[2]
    m150 = {**GOOD, "transfer_success_1000": 0.3, "landmark_err_1000": 0.2, "train_steps": 150}
    m400 = {**GOOD, "transfer_success_1000": 0.9, "landmark_err_1000": 0.1, "train_steps": 400}
    run_id = _evaluated_run(server, {}, experiment="geogan-Smile")
    for metrics in (m150, m400):  # evaluate logs into the training run, which resumed training continues
        for k, v in metrics.items():
            client.log_metric(run_id, f"eval/{k}", v, step=metrics["train_steps"])
    tags = {"git_commit": "deadbeef"}

    _, first = log_and_register(w150, "Smile", run_id, server, tags, m150)
    _, exp = log_and_register(w400, "Smile", run_id, server, tags, m400)
    _, back = log_and_register(w150, "Smile", run_id, server, tags, m150)
    assert (first, exp, back) == (1, 2, 1), "the 150-step weights are registered once"
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")) == [1, 2]
    assert client.get_run(run_id).data.metrics["eval/transfer_success_1000"] == 0.9  # the run's latest: 400 steps
    candidate = client.get_model_version_by_alias(name, "candidate")
    assert candidate.version == "1" and version_metrics(candidate) == m150
    (row,) = compare_versions(server, ["Smile"])
    assert (row["version"], row["metrics"]["train_steps"], row["metrics"]["transfer_success_1000"]) == (1, 150, 0.3)
    with pytest.raises(PromotionRefused, match=r"version 1 refused: transfer_success_1000 0.3 "):
        promote("Smile", GATE, server)  # the run's 0.9 would have passed
    assert client.get_run(run_id).info.status == "FINISHED", "registration leaves the training run's status alone"

    # Evaluated again (another evaluation set, 500 pairs): the version carries that evaluation only, and says which.
    m500 = {"transfer_success_500": 0.35, "landmark_err_500": 0.2}
    on = {"eval.set_digest": "ab" * 32, "eval.judge_sha256": "cd" * 32}
    assert log_and_register(w150, "Smile", run_id, server, tags, m500, evaluated_on=on)[1] == 1
    again = client.get_model_version(name, "1")
    assert version_metrics(again) == m500 and {k: again.tags[k] for k in on} == on
    assert "evaluation set abababababab, judge cdcdcdcdcdcd" in format_table(compare_versions(server, ["Smile"]))


def test_promote_refuses_a_candidate_worse_only_than_the_champion(server, generators):
    """Every absolute check passes; only "not worse than the champion" fails, through `promote`."""
    champion_metrics = {**GOOD, "transfer_success_1000": 0.9}
    worse = {**GOOD, "transfer_success_1000": 0.6}
    log_and_register(generators[0], "Beard", None, server, {}, champion_metrics)
    assert promote("Beard", GATE, server)["promoted"]
    _, v2 = log_and_register(generators[1], "Beard", None, server, {}, worse)
    assert all(c["passed"] for c in gate_checks(worse, GATE)), "the candidate must pass every check but the champion's"
    with pytest.raises(PromotionRefused) as refused:
        promote("Beard", GATE, server)
    assert [f["check"] for f in refused.value.failures] == ["not worse than champion"]
    assert "transfer_success_1000 0.6 (needs >= 0.9, not worse than champion)" in str(refused.value)
    from mlflow import MlflowClient

    assert MlflowClient(server).get_model_version_by_alias("geogan-Beard", "champion").version == "1"
    allowed = PromoteConfig(**{**GATE.__dict__, "allow_worse_than_champion": True})
    assert promote("Beard", allowed, server)["version"] == v2 == 2


def test_promote_without_candidate_is_refused(server):
    with pytest.raises(PromotionRefused, match="no version has alias 'candidate'"):
        promote("Bald", GATE, server)


def test_gate_checks_transfer_kid_against_copy_paste_identity_and_the_champion():
    worse = {**GOOD, "transfer_success_1000": 0.6}
    checks = gate_checks(worse, GATE, champion={"transfer_success_1000": 0.8})
    assert [c["check"] for c in checks] == ["promote.min_transfer_success", "promote.max_kid_vs_copy_paste",
                                            "promote.min_identity_kept", "promote.max_landmark_error",
                                            "not worse than champion"]
    assert [c["check"] for c in checks if not c["passed"]] == ["not worse than champion"]
    allowed = gate_checks(worse, {**GATE.__dict__, "allow_worse_than_champion": True}, champion={"transfer_success_1000": 0.8})
    assert all(c["passed"] for c in allowed)
    # KID is judged against the copy-paste baseline of the same evaluation, scaled by the ratio.
    kid = {c["check"]: c for c in gate_checks({**GOOD, "kid_a2b_1000": 0.06}, GATE)}["promote.max_kid_vs_copy_paste"]
    assert not kid["passed"] and kid["threshold"] == pytest.approx(0.05)
    assert all(c["passed"] for c in gate_checks({**GOOD, "kid_a2b_1000": 0.06}, {**GATE.__dict__, "max_kid_vs_copy_paste": 1.5}))
    # What was not measured fails, naming the metric; identity is not gated at min_identity_kept 0.
    missing = gate_checks({"landmark_err_64": 0.1}, GATE)
    assert {c["metric"] for c in missing if not c["passed"]} == {"transfer_success_<n>", "kid_a2b_<n>", "identity_kept_<n>"}
    synthetic = gate_checks({k: v for k, v in GOOD.items() if not k.startswith("identity")},
                            {**GATE.__dict__, "min_identity_kept": 0.0})
    assert all(c["passed"] for c in synthetic) and "promote.min_identity_kept" not in [c["check"] for c in synthetic]
