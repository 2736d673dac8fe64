"""The judge in MLflow: one run per trained judge, a pyfunc model registered as `geogan-judge` (edge module).

It imports mlflow at the top, so nothing in the library imports it; the `train_judge` stage does.
A judge whose file (sha256) the registry already holds is not registered again: its version is
returned. The newest registration carries alias `current`; every version is tagged with its
sha256, the data version it was trained on and its per-attribute thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import mlflow.pyfunc
import numpy as np

from geogan.io import file_sha256

MODEL_NAME = "geogan-judge"
JUDGE_ARTIFACT = "judge"
ALIAS = "current"


class JudgePyfunc(mlflow.pyfunc.PythonModel):
    """Base64 PNG faces in (column `image`), one probability and one verdict per attribute out."""

    def load_context(self, context: Any) -> None:
        import torch

        from geogan.metrics.judge import load_judge

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.judge = load_judge(context.artifacts[JUDGE_ARTIFACT], map_location=device)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        from geogan.metrics.judge import predict_proba
        from geogan.serving import decode_image

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise ValueError("model input lacks column 'image' (base64 PNG/JPEG faces)")
        size = self.judge.net.input_size
        images = np.stack([decode_image(s, size) for s in frame["image"]])
        probs = predict_proba(self.judge, images).numpy()
        out = {}
        for j, name in enumerate(self.judge.attributes):
            out[name] = probs[:, j].astype(np.float64)
            out[f"{name}_verdict"] = probs[:, j] >= self.judge.thresholds[name]
        return pd.DataFrame(out)


def _signature(attributes: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("double", a) for a in attributes] + [ColSpec("boolean", f"{a}_verdict") for a in attributes]
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=Schema(outputs))


def _existing_version(client: Any, sha256: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get("judge_sha256") == sha256), None)


def log_and_register_judge(judge_file: str | Path, figures: Mapping[str, float], cfg: Any,
                           tracking_uri: str) -> tuple[str, int]:
    """Log the judge (params, test figures, pyfunc model) in experiment `<prefix>-judge` and register it.

    Returns:
        (model URI `models:/geogan-judge/<version>`, version); an already registered file returns its version.
    """
    import pandas as pd
    import torch
    from mlflow import MlflowClient

    from geogan.config import config_to_dict
    from geogan.metrics.judge import load_judge
    from geogan.registry import _using_tracking_uri
    from geogan.serving import encode_image
    from geogan.tracking import open_tracker, run_ends

    judge_file = Path(judge_file)
    sha = file_sha256(judge_file)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    known = _existing_version(client, sha)
    if known is not None:
        client.set_registered_model_alias(MODEL_NAME, ALIAS, known.version)
        return f"models:/{MODEL_NAME}/{known.version}", int(known.version)
    judge = load_judge(judge_file)
    j, steps = cfg.judge, judge.meta.get("steps", cfg.judge.max_steps)
    tracker = open_tracker(
        cfg.mlflow, "judge", run_name=f"judge {'+'.join(judge.attributes)} {judge.net.input_size}px width {j.width}",
        tags={"stage": "train_judge"},
        description=f"The attribute judge of every evaluation ({', '.join(judge.attributes)}): trained on the train "
                    f"partition only (up to {steps} steps, early stopping on val), thresholds set on val; `test/*` "
                    "on the test partition. Registered as `geogan-judge`.")
    with run_ends(tracker):  # FINISHED, FAILED or KILLED, never left RUNNING
        plain = config_to_dict(cfg)
        tracker.log_params({f"judge.{k}": v for k, v in plain["judge"].items()}
                           | {f"split.{k}": plain["split"][k] for k in ("test_fraction", "val_fraction", "use_source_partition")}
                           | {"attributes": list(judge.attributes), "seed": cfg.seed})
        tracker.log_metrics({f"test/{k}": v for k, v in figures.items() if math.isfinite(v)}, step=0)
        example = np.full((judge.net.input_size, judge.net.input_size, 3), 128, np.uint8)
        with _using_tracking_uri(tracking_uri), mlflow.start_run(run_id=tracker.run_id):
            info = mlflow.pyfunc.log_model(
                name=JUDGE_ARTIFACT, python_model=JudgePyfunc(), artifacts={JUDGE_ARTIFACT: str(judge_file)},
                code_paths=[str(Path(__file__).resolve().parent)], signature=_signature(list(judge.attributes)),
                input_example=pd.DataFrame({"image": [encode_image(example)]}),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pillow", "pandas"])
            version = str(mlflow.register_model(info.model_uri, MODEL_NAME).version)
        tags = {"judge_sha256": sha, "data_version": str(judge.meta.get("data_version", "")),
                "attributes": ",".join(judge.attributes), "run_id": tracker.run_id,
                **{f"threshold.{a}": f"{t:.6g}" for a, t in judge.thresholds.items()}}
        for k, v in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, k, v)
        client.set_registered_model_alias(MODEL_NAME, ALIAS, version)
    return f"models:/{MODEL_NAME}/{version}", int(version)
