"""Write a params file that differs from a base file in a few dotted keys, validated by the config loader.

    python -m benchmarks.variant_params BASE.yaml OUT.yaml train.precision=fp32 train.seed=1 "train.d_augment=[color, cutout]"

Values are parsed as YAML (numbers, booleans, lists); the result is loaded with `geogan.config.load_config`,
so a misspelt key or a wrong type stops here with the config's own message. For GPU experiments that
compare one change against a base run with everything else equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from geogan.config import Config, ConfigError, load_config

GPU_BASE = Path(__file__).resolve().parents[1] / "params" / "synthetic128-gpu.yaml"


def write_variant(base: Path, out: Path, assignments: list[str]) -> None:
    overrides = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"variant_params: expected key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    try:
        cfg = load_config(base, overrides)
    except ConfigError as e:
        raise SystemExit(f"variant_params: {e}") from e
    from geogan.config import config_to_dict

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {base} with {' '.join(assignments)}\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def prepare_synthetic(work: Path, assignments: list[str]) -> tuple[Path, Config, Path]:
    """Params = the GPU base file with `assignments`; render the synthetic faces and run the data stages.

    Returns the params file, its config and the first attribute's split, ready for the `train` stage
    (inputs in `work/prepared` and `work/landmarks`), for the benchmarks that run training for real.
    """
    from geogan.stages import ingest, landmarks, split

    params = work / "params.yaml"
    write_variant(GPU_BASE, params, assignments)
    cfg = load_config(params)
    split_file = work / "splits" / f"{cfg.attributes[0]}.json"
    ingest.run(cfg, work / "prepared", progress=False)
    landmarks.run(cfg, work / "prepared", work / "landmarks", progress=False)
    split.run(cfg, cfg.attributes[0], work / "prepared", work / "landmarks", split_file)
    return params, cfg, split_file


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    write_variant(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
