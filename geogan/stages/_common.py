"""What every stage CLI shares: --params parsing, config loading, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from geogan.config import Config, ConfigError, check_attribute, load_config
from geogan.signals import EXIT_CODE as SIGTERM_EXIT
from geogan.signals import Stopped, stop_on_sigterm
from geogan.tracking import TrackingServerError


class StageError(RuntimeError):
    """A failure with a message meant for the user, printed as one line."""


def prog_name() -> str:
    """The command as typed: `geogan <cmd>` (the CLI sets argv[0]) or `python -m geogan.stages.<name>`."""
    argv0 = Path(sys.argv[0])
    return f"python -m geogan.stages.{argv0.stem}" if argv0.suffix == ".py" else argv0.name


def parser(description: str, attribute: bool = False) -> argparse.ArgumentParser:
    """An argparse parser with --params (and --attribute where the stage runs per attribute)."""
    p = argparse.ArgumentParser(prog=prog_name(), description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    if attribute:
        p.add_argument("--attribute", required=True, help="attribute name, one of params.yaml's attributes")
    return p


def add_data_paths(p: argparse.ArgumentParser, split: bool = True, model: bool = False) -> None:
    """The input folders every per-attribute stage reads, with the defaults dvc.yaml uses.

    --prepared, --landmarks; --split (default data/splits/<attribute>.json) and --model
    (default models/<attribute>) are None when not given: the stage fills in the attribute.
    """
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--landmarks", type=Path, default=Path("data/landmarks"))
    if split:
        p.add_argument("--split", type=Path, default=None, help="default: data/splits/<attribute>.json")
    if model:
        p.add_argument("--model", type=Path, default=None, help="default: models/<attribute>")


def load(args: argparse.Namespace) -> Config:
    """Load the config and check --attribute against it."""
    cfg = load_config(args.params)
    if getattr(args, "attribute", None) is not None:
        check_attribute(cfg, args.attribute)
    return cfg


def run_main(name: str, body: Callable[[], Any]) -> int:
    """Run a stage body; known failures become one line on stderr and exit code 2.

    SIGTERM (and Ctrl-C) stop the body with an exception, so MLflow runs end KILLED, and
    the stage exits 143 (130) with one line.
    """
    try:
        with stop_on_sigterm():
            summary = body()
    except (ConfigError, StageError, TrackingServerError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"geogan {name}: error: {msg}", file=sys.stderr)
        if "GEOGAN_DEBUG" in os.environ:
            traceback.print_exc()
        return 2
    except Stopped as e:
        print(f"geogan {name}: {e}", file=sys.stderr)
        return SIGTERM_EXIT
    except KeyboardInterrupt:
        print(f"geogan {name}: interrupted", file=sys.stderr)
        return 130
    if summary is not None:
        print(f"geogan {name}: " + json.dumps(summary, sort_keys=True, default=str))
    return 0


def exit_with(code: int) -> None:
    if code:
        sys.exit(code)


