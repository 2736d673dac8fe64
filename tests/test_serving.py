"""`mlflow models serve` of a registered generator, over HTTP on loopback: a transfer, and a bad image answered 400."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

from tests.helpers.mlflow import mlflow_server, model_server  # noqa: E402

SIZE = 64


def _generator(path: Path) -> Path:
    """A tiny real generator (ngf 4, one block), saved as the train stage saves it."""
    from geogan.model import save_generator
    from tests.helpers.training import tiny_nets

    generator = tiny_nets(seed=0, ngf=4, ndf=4, n_blocks=1, n_scales=1).generator
    meta = {"attribute": "Mustache", "resolution": SIZE, "step": 4,
            "config": {"loss": {"refine_weight": 0.1, "refine_start_step": 0}, "model": {"flow_inputs": "rgb"}}}
    return save_generator(path, generator, meta)


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_champion_transfers_a_pair_and_answers_a_bad_image_with_400(tmp_path):
    from mlflow import MlflowClient

    from geogan.model import load_generator, to_tensor, to_uint8, transfer
    from geogan.registry import artifact_store_uri, log_and_register
    from geogan.serving import decode_image, encode_image

    generator_file = _generator(tmp_path / "generator.pt")
    rng = np.random.default_rng(0)
    source, reference = (rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2))
    with mlflow_server(tmp_path / "mlflow") as tracking:
        _, version = log_and_register(generator_file, "Mustache", None, tracking, {}, {})
        MlflowClient(tracking).set_registered_model_alias("geogan-Mustache", "champion", str(version))
        # KServe's storageUri: the champion's model folder in the artefact store the server writes to.
        stored = artifact_store_uri("Mustache", "champion", tracking, "s3://bucket/artifacts")
        local = tmp_path / "mlflow" / "artifacts" / stored.removeprefix("s3://bucket/artifacts/")
        assert stored.startswith("s3://bucket/artifacts/") and (local / "MLmodel").is_file(), stored
        with model_server("models:/geogan-Mustache@champion", tracking, tmp_path / "serve.log") as url:
            pair = {"dataframe_split": {"columns": ["source", "reference"],
                                        "data": [[encode_image(source), encode_image(reference)]]},
                    "params": {"return_parts": True}}
            status, answer = _post(url, pair)
            bad = {"dataframe_records": [{"source": encode_image(source), "reference": "bm90IGFuIGltYWdl"}]}
            bad_status, bad_answer = _post(url, bad)

    assert status == 200, answer
    (row,) = answer["predictions"]
    assert set(row) == {"output", "warped", "mask"}
    generator, _ = load_generator(generator_file)
    direct = transfer(generator, to_tensor(source), to_tensor(reference), 0.1)
    np.testing.assert_array_equal(decode_image(row["output"]), to_uint8(direct.x_out)[0])
    np.testing.assert_array_equal(decode_image(row["warped"]), to_uint8(direct.x_warp)[0])
    assert bad_status == 400 and bad_answer["error_code"] == "INVALID_PARAMETER_VALUE", bad_answer
    assert "row 0 column 'reference': not a PNG or JPEG image" in bad_answer["message"], bad_answer
