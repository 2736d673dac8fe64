"""Checkpoints that lose nothing: plain state_dicts + optimisers + step + RNG + config, written atomically.

A checkpoint is written to a temp file and renamed, so a crash at any moment leaves the
previous checkpoint intact. Only the newest `keep` checkpoints are kept. A checkpoint is
resumed only if its `resume_key` (a hash of everything that changes the run's meaning:
model, losses, data, split) matches the current run; otherwise training starts afresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geogan.io import atomic_write_bytes

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def resume_key(parts: dict[str, Any]) -> str:
    """A stable hash of JSON-able run identity (config sections, data fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """All RNG states a training process touches."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain lists, so checkpoints load with weights_only=True (no pickled objects).
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as folder/ckpt-<step>.pt atomically and prune older ones.

    Args:
        folder: the checkpoint folder (created if needed).
        step: number of completed optimisation steps (the name sorts by it).
        state: plain tensors/dicts only (no pickled classes).
        keep: how many of the newest checkpoints to keep.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({**state, "step": step}, buf)
    path = folder / f"ckpt-{step:08d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in the folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


@dataclass(frozen=True)
class Latest:
    """What `find_latest` found: the state to resume (or None) and the newer files it had to pass over."""

    state: dict[str, Any] | None  # the newest readable checkpoint, if it was made under the run's resume key
    path: Path | None  # the newest readable checkpoint's file
    unreadable: tuple[tuple[Path, str], ...] = ()  # newer checkpoints that failed to load, newest first, with why
    other_key: str | None = None  # the newest readable checkpoint was made under this other key: start afresh


def find_latest(folder: str | Path, key: str, map_location: Any = "cpu", max_step: int | None = None) -> Latest:
    """The newest readable checkpoint, and every newer one that could not be read.

    A checkpoint that fails to load (a disk fault, a file cut short by a crash outside
    `save_checkpoint`, a foreign file) is passed over and the next older one tried; the
    caller reports each one passed over (`Latest.unreadable`), so a fallback is never silent.
    A readable checkpoint made under another resume key ends the search: the run starts afresh.
    Checkpoints past `max_step` are passed over: a run asked for fewer steps than were trained
    (params set back after an experiment) must not return the longer run's weights.
    """
    unreadable: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(folder)):
        if max_step is not None and int(_NAME.match(path.name).group(1)) > max_step:
            continue
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is passed over (and reported), never fatal
            unreadable.append((path, " ".join(f"{type(e).__name__}: {e}".split())))  # one line
            continue
        if state.get("resume_key") != key:
            return Latest(None, path, tuple(unreadable), other_key=str(state.get("resume_key")))
        return Latest(state, path, tuple(unreadable))
    return Latest(None, None, tuple(unreadable))


def load_latest(folder: str | Path, key: str, map_location: Any = "cpu",
                max_step: int | None = None) -> dict[str, Any] | None:
    """The state of `find_latest` (None when there is nothing to resume); reports nothing itself."""
    return find_latest(folder, key, map_location, max_step).state
