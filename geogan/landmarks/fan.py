"""The `fan` backend: face-alignment's 2DFAN4 network, batched on the GPU with known face boxes.

face-alignment's stock call detects a face, then crops, runs and decodes one face at a time on the
CPU; with the face box known, the crop (`grid_sample`), the FAN forward and the heatmap decoding run
here batched as tensors on the device, and points come back in float (face-alignment truncates them).
The network class is face-alignment's own (`face_alignment.models.FAN`, BSD-3-Clause).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geogan.landmarks.base import N_POINTS, LandmarkError, check_images

FAN_WEIGHTS_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
# Names in torch.hub.get_dir()/checkpoints: face-alignment 1.5.0's state dict, then 1.3.x's TorchScript.
FAN_WEIGHTS_FILES = ("2DFAN4-11f355bf06.pth.tar", "2DFAN4-cd938726ad.zip")
CROP_SIZE = 256  # FAN input
REFERENCE_SCALE = 195.0  # face-alignment: scale = (box width + height) / 195
SCALE_FACTOR = 200.0  # ... and the crop is 200 * scale source pixels across
CENTER_Y_OFFSET = 0.12  # ... centred 12% of the box height above the box centre
# The face box of aligned faces, as fractions of (W, H, W, H): the median dlib HOG box on the
# 200 CelebA-HQ faces of ../shared/data/celebahq-200 (p10-p90 within 0.03 of it on each side).
# img_align_celeba centre-cropped to 178 frames faces alike (eyes at ~0.5 H, ~0.22 W apart).
ALIGNED_FACE_BOX = (0.24, 0.30, 0.76, 0.89)


def import_fan_class() -> type:
    """face_alignment.models.FAN, or one clear error saying how to get it."""
    try:
        from face_alignment.models import FAN
    except ImportError as e:
        raise LandmarkError(f"landmarks.backend 'fan' needs the face-alignment package (pip install face-alignment==1.5.0; "
                            f"import failed: {e}); 'landmarks.backend: dlib' works offline without it") from e
    return FAN


def find_fan_weights(fan_weights: str = "") -> Path:
    """The 2DFAN4 checkpoint: `fan_weights` if given, else face-alignment's file in the torch hub cache.

    Raises:
        LandmarkError: one line naming the file, where to put it and the offline alternative.
    """
    if fan_weights:
        path = Path(fan_weights).expanduser()
        if not path.is_file():
            raise LandmarkError(f"FAN weights not found at {path} (landmarks.fan_weights); download {FAN_WEIGHTS_URL} there, "
                                "or use 'landmarks.backend: dlib', which works offline")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in FAN_WEIGHTS_FILES:
        if (hub / name).is_file():
            return hub / name
    raise LandmarkError(f"FAN weights not found: put {FAN_WEIGHTS_FILES[0]} ({FAN_WEIGHTS_URL}) in {hub}/ or set "
                        "landmarks.fan_weights to its path; 'landmarks.backend: dlib' works offline")


def load_fan(weights: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """face-alignment's FAN with the checkpoint's weights, in eval mode on `device`.

    Accepts face-alignment 1.5.0's state dict (.pth.tar) and 1.3.x's TorchScript archive (.zip);
    the number of hourglass modules is read from the weights (2DFAN4 has 4).
    """
    fan_class = import_fan_class()
    state = _read_state_dict(Path(weights))
    n_modules = len({k.split(".")[0] for k in state if k.startswith("m") and k.split(".")[0][1:].isdigit()})
    if n_modules == 0:
        raise LandmarkError(f"{weights}: not a FAN checkpoint (no hourglass weights 'm0.*')")
    net = fan_class(n_modules)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise LandmarkError(f"{weights}: does not match face-alignment's FAN({n_modules}): {str(e).splitlines()[0]}") from e
    return net.eval().to(device)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - fall back to the TorchScript format before failing
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001
            raise LandmarkError(f"{path}: cannot read FAN weights ({first})") from first
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LandmarkError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def boxes_to_center_scale(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Face boxes (B, 4) (x0, y0, x1, y1) -> face-alignment's centre (B, 2) and scale (B,)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 2] - w / 2
    cy = boxes[:, 3] - h / 2 - h * CENTER_Y_OFFSET
    return torch.stack([cx, cy], dim=1), (w + h) / REFERENCE_SCALE


def crop_faces(images: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Batched face crops, sampling where face-alignment's `crop` + cv2 bilinear resize sample.

    Args:
        images: (B, 3, H, W) float.
        center, scale: (B, 2) and (B,) from `boxes_to_center_scale`.
    Returns:
        (B, 3, size, size), zeros outside the image.
    """
    b, _, h_img, w_img = images.shape
    side = (SCALE_FACTOR * scale)[:, None]  # (B, 1) source pixels across the crop
    # face-alignment copies the integer pixel range [trunc(c - side/2 + side/256), trunc(c + side/2))
    # and resizes it with cv2's bilinear filter (half-pixel centres): sample the same positions.
    first = torch.trunc(center - side / 2 + side / size)  # (B, 2)
    step = (torch.trunc(center + side / 2) - first) / size  # (B, 2) source pixels per output pixel
    j = torch.arange(size, device=images.device, dtype=images.dtype) + 0.5  # (S,)
    xs = first[:, 0:1] - 0.5 + j[None] * step[:, 0:1]  # (B, S) source x of each output column
    ys = first[:, 1:2] - 0.5 + j[None] * step[:, 1:2]
    gx = (2 * xs / (w_img - 1) - 1)[:, None, :].expand(b, size, size)
    gy = (2 * ys / (h_img - 1) - 1)[:, :, None].expand(b, size, size)
    grid = torch.stack([gx, gy], dim=-1)  # (B, S, S, 2), align_corners=True units
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def decode_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap peaks with face-alignment's quarter-pixel refinement, vectorised.

    Args:
        heatmaps: (B, 68, Hm, Wm) float.
    Returns:
        (points (B, 68, 2) (x, y) in heatmap units as face-alignment's `get_preds_fromhm` gives
        them, peak values (B, 68)).
    """
    b, c, hm_h, hm_w = heatmaps.shape
    flat = heatmaps.reshape(b, c, hm_h * hm_w)
    peak, idx = flat.max(dim=-1)  # first maximum on ties, as numpy's argmax
    px, py = idx % hm_w, idx // hm_w

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (y.clamp(0, hm_h - 1) * hm_w + x.clamp(0, hm_w - 1)).unsqueeze(-1)).squeeze(-1)

    dx = at(py, px + 1) - at(py, px - 1)
    dy = at(py + 1, px) - at(py - 1, px)
    inside = ((px > 0) & (px < hm_w - 1) & (py > 0) & (py < hm_h - 1)).to(heatmaps.dtype)
    x = px.to(heatmaps.dtype) + 0.5 + 0.25 * torch.sign(dx) * inside
    y = py.to(heatmaps.dtype) + 0.5 + 0.25 * torch.sign(dy) * inside
    return torch.stack([x, y], dim=-1), peak


def heatmap_to_image(points: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, hm_size: int) -> torch.Tensor:
    """Heatmap units (B, 68, 2) -> source image pixels, face-alignment's inverse transform (unrounded)."""
    side = (SCALE_FACTOR * scale)[:, None, None]
    return (points / hm_size - 0.5) * side + center[:, None, :]


class FanBackend:
    """2DFAN4 landmarks for batches of aligned faces on one device."""

    name = "fan"

    def __init__(self, net: torch.nn.Module, device: torch.device | str, batch_size: int = 32,
                 precision: str = "auto", channels_last: bool = True, flip_input: bool = False,
                 box_fraction: tuple[float, float, float, float] = ALIGNED_FACE_BOX) -> None:
        """
        Args:
            net: a FAN from `load_fan`, on `device`.
            batch_size: faces per forward pass.
            precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16" or "fp32".
            channels_last: NHWC activations on CUDA (faster convolutions with cuDNN).
            flip_input: also run the mirrored crop and add its flipped heatmaps (face-alignment's
                default test-time augmentation; twice the work).
            box_fraction: the face box used when `detect` gets no boxes, as fractions of (W, H, W, H).
        """
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.bf16 = precision == "bf16" or (precision == "auto" and cuda)
        self.channels_last = channels_last and cuda
        self.net = net.to(self.device, memory_format=torch.channels_last) if self.channels_last else net.to(self.device)
        self.batch_size = max(1, int(batch_size))
        self.flip_input = flip_input
        self.box_fraction = box_fraction
        if flip_input:
            from geogan.data.dataset import FLIP_68

            self._flip_order = torch.tensor(FLIP_68, device=self.device)

    def default_boxes(self, n: int, height: int, width: int) -> np.ndarray:
        """The fixed aligned-face box for `n` images of one size, (n, 4) pixels."""
        fx0, fy0, fx1, fy1 = self.box_fraction
        return np.tile(np.array([fx0 * width, fy0 * height, fx1 * width, fy1 * height], dtype=np.float32), (n, 1))

    def detect(self, images_uint8: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """68 landmarks per image; `boxes` (N, 4) pixels, NaN for none, default the aligned-face box."""
        images = check_images(images_uint8)
        n, h, w, _ = images.shape
        boxes = self.default_boxes(n, h, w) if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(n, 4)
        out = np.full((n, N_POINTS, 2), np.nan, dtype=np.float32)
        valid = np.flatnonzero(np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        for start in range(0, len(valid), self.batch_size):
            rows = valid[start:start + self.batch_size]
            out[rows] = self._run(images[rows], boxes[rows]).cpu().numpy()
        out[~np.isfinite(out).all(axis=(1, 2))] = np.nan
        return out

    @torch.inference_mode()
    def _run(self, images: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1], as face-alignment feeds it
        center, scale = boxes_to_center_scale(torch.from_numpy(boxes).to(self.device))
        crops = crop_faces(x, center, scale).mul_(255).round_().div_(255)  # 8-bit, as face-alignment's uint8 crop
        heatmaps = self._forward(crops)
        if self.flip_input:
            flipped = self._forward(crops.flip(-1))
            heatmaps = heatmaps + flipped[:, self._flip_order].flip(-1)
        points, _ = decode_heatmaps(heatmaps)
        return heatmap_to_image(points, center, scale, heatmaps.shape[-1])

    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out: Any = self.net(crops)
        heatmaps = out[-1] if isinstance(out, (list, tuple)) else out
        return heatmaps.float()  # decode in fp32: bf16 would make neighbouring heatmap values tie


def build_fan(fan_weights: str, device: str = "auto", batch_size: int = 32) -> FanBackend:
    """The FAN backend from a weights path ("" = torch hub cache) and a device name ("auto" = cuda if any)."""
    from geogan.training.distributed import resolve_device

    import_fan_class()  # the missing package is the first thing to report
    weights = find_fan_weights(fan_weights)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 256x256 crops: let cuDNN pick its fastest kernels
    return FanBackend(load_fan(weights, dev), dev, batch_size)
