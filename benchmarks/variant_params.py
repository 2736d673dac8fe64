"""Write a params file that differs from a base file in a few dotted keys, validated by the config loader.

    python3 benchmarks/variant_params.py BASE.yaml OUT.yaml train.precision=fp32 train.seed=1 "train.d_augment=[color, cutout]"

Values are parsed as YAML (numbers, booleans, lists); the result is loaded with `geogan.config.load_config`,
so a misspelt key or a wrong type stops here with the config's own message. For GPU experiments that
compare one change against a base run with everything else equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout, not installed

from geogan.config import ConfigError, load_config  # noqa: E402


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


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    write_variant(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
