"""Registry against a real MLflow server on loopback: register, gated promotion, serve the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("mlflow")

from geogan.config import PromoteConfig
from geogan.registry import (
    PromotionRefused,
    compare_runs,
    format_table,
    gate_checks,
    log_and_register,
    promote,
)
from tests.mlflow_server import mlflow_server

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
def generator_file(tmp_path_factory) -> Path:
    """A tiny real generator (ngf 4, one block) saved as the train stage saves it."""
    from geogan.model import save_generator
    from geogan.nets import build_nets

    path = tmp_path_factory.mktemp("model") / "generator.pt"
    torch.manual_seed(0)
    generator = build_nets(ngf=4, ndf=4, n_blocks=1, n_scales=1).generator
    meta = {"attribute": "Mustache", "resolution": SIZE, "step": 4,
            "config": {"loss": {"refine_weight": 0.1, "refine_start_step": 0}, "model": {"flow_inputs": "rgb"}}}
    save_generator(path, generator, meta)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def _evaluated_run(uri: str, metrics: dict[str, float]) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("geogan-Mustache")
    exp_id = exp.experiment_id if exp else client.create_experiment("geogan-Mustache")
    run_id = client.create_run(exp_id, run_name="Mustache-train", tags={"attribute": "Mustache"}).info.run_id
    for k, v in metrics.items():
        client.log_metric(run_id, f"eval/{k}", v)
    client.set_terminated(run_id)
    return run_id


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_register_promote_refuse_and_serve_champion(server, generator_file):
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

    # Version 2 fails it: refused with the failing figures, champion unchanged, nothing deleted.
    _, v2 = log_and_register(generator_file, "Mustache", _evaluated_run(server, BAD), server, tags, BAD)
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

    # The cross-attribute table: latest evaluated run, aliases, a row for an attribute without runs.
    rows = compare_runs(server, "geogan", ["Mustache", "Eyeglasses"])
    assert rows[0]["metrics"]["transfer_success_1000"] == pytest.approx(0.2)
    assert rows[0]["champion"] == 1 and rows[0]["candidate"] == 2
    assert rows[1] == {"attribute": "Eyeglasses", "metrics": {}, "tags": {}, "champion": None, "candidate": None}
    table = format_table(rows).splitlines()
    assert table[0].startswith("Mustache: run ") and "champion 1, candidate 2" in table[0]
    assert table[1].split() == ["metric", "model", "copy_paste", "do_nothing"]
    row = next(line for line in table if line.startswith("transfer_success_1000"))
    assert row.split()[1:] == ["0.2", "[0.15,", "0.25]", "0.4", "0.03"]  # the model's interval, the baselines beside
    assert "Eyeglasses: run -" in table[-2] and table[-1] == "(no evaluation yet)"


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
