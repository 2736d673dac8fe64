"""The inference API: transfer, remove, save/load a generator, and image conversions."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geogan.io import atomic_write_bytes
from geogan.nets import Generator, TransferOutputs

FORMAT = "geogan-generator/1"


def _plain(obj: Any) -> Any:
    # JSON fallback for values that commonly end up in meta dicts.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"save_generator: meta value of type {type(obj).__name__} is not JSON-serialisable")


def _eval_no_grad(generator: Generator, fn, *args):
    # Eval mode for the call only: the training loop may pass its live generator.
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            return fn(*args)
    finally:
        generator.train(was_training)


def transfer(generator: Generator, x_a: torch.Tensor, x_b: torch.Tensor, refine_weight: float,
             heat_a: torch.Tensor | None = None, heat_b: torch.Tensor | None = None) -> TransferOutputs:
    """Put b's instance of the attribute on a (no gradients, eval mode).

    Args:
        generator: a trained Generator (on the device of the images).
        x_a: (B, 3, H, W) sources without the attribute, in [-1, 1].
        x_b: (B, 3, H, W) references with it.
        refine_weight: w of the refinement residual (the trained value; 0 disables it).
        heat_a, heat_b: landmark heatmaps when the generator was built with flow_inputs rgb+landmarks.
    Returns:
        TransferOutputs (flow_ab, x_warp, mask, x_blend, x_out), all in a's frame.
    """
    return _eval_no_grad(generator, generator.transfer, x_a, x_b, float(refine_weight), heat_a, heat_b)


def remove(generator: Generator, x_b: torch.Tensor, mask: torch.Tensor | None = None,
           heat_b: torch.Tensor | None = None) -> torch.Tensor:
    """Remove the attribute from faces that have it: F(x_b, mask) (no gradients, eval mode).

    Without a mask, the mask net is asked where the attribute is by transferring b onto
    itself (G(b, b)); in training F saw blend masks carried into b's frame, which this
    resembles. Pass the mask of a transfer when there is one.

    Args:
        generator: a trained Generator.
        x_b: (B, 3, H, W) in [-1, 1].
        mask: optional (B, 1, H, W) attribute region in [0, 1].
        heat_b: b's landmark heatmaps, for a generator whose flow takes them (flow_inputs rgb+landmarks)
            and no mask given.
    Returns:
        (B, 3, H, W) in [-1, 1].
    """
    if mask is None:
        # The mask net's verdict on b transferred onto itself (an identity-like warp): the
        # attribute region in b's own frame, the kind of mask F saw in training.
        mask = _eval_no_grad(generator, generator.transfer, x_b, x_b, 0.0, heat_b, heat_b).mask
    return _eval_no_grad(generator, generator.remove, x_b, mask)


def inference_refine_weight(meta: dict[str, Any]) -> float:
    """The refinement weight a saved generator was trained with at its last step (0 before refinement started)."""
    loss = meta.get("config", {}).get("loss", {})
    weight = float(loss.get("refine_weight", 0.0))
    return weight if int(meta.get("step", 0)) >= int(loss.get("refine_start_step", 0)) else 0.0


def save_generator(path: str | os.PathLike, generator: Generator, meta: dict[str, Any]) -> Path:
    """Write the generator's plain state_dict and metadata atomically (torch.save format).

    The network's hyper-parameters are stored under meta["net"], so `load_generator`
    rebuilds it without a config. `meta` must be JSON-serialisable (numpy scalars and
    paths are converted); it is stored as plain data, loadable with weights_only=True.

    Args:
        path: the output file (e.g. models/<attr>/generator.pt).
        generator: the network (not wrapped in DDP or torch.compile).
        meta: what to keep beside the weights (attribute, resolution, step, config, ...).
    Returns:
        The path written.
    """
    if not isinstance(generator, Generator):
        raise TypeError(f"save_generator: expected a Generator, got {type(generator).__name__} "
                        "(unwrap DDP / torch.compile first: .module / ._orig_mod)")
    plain_meta = json.loads(json.dumps({**meta, "net": generator.hparams}, default=_plain))
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "state_dict": state, "meta": plain_meta}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Generator, dict[str, Any]]:
    """Rebuild a Generator from a file written by `save_generator`.

    Args:
        path: the generator file.
        map_location: where the weights go.
    Returns:
        (generator in eval mode, meta) where meta["net"] holds its hyper-parameters.
    Raises:
        FileNotFoundError, ValueError: naming the file when it is missing or not a generator.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: generator file not found")
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # any unpickling failure means "not our file"
        raise ValueError(f"{p}: cannot read the generator file ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{p}: not a GeoGAN generator file (expected format {FORMAT!r})")
    meta = blob["meta"]
    try:
        generator = Generator(**meta["net"])
        generator.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{p}: weights do not match the stored network description ({e})") from e
    return generator.to(map_location).eval(), meta


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"to_tensor: expected uint8 images, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"to_tensor: expected (H, W, 3) or (N, H, W, 3), got {arr.shape}")
    if not arr.flags.writeable:  # a PIL image's array: torch would warn on every call (the data is copied below anyway)
        arr = arr.copy()
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) or (C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded and clipped."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"to_uint8: expected (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    y = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()
