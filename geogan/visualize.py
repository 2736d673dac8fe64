"""Pictures a person can judge: image grids of what the model does, and flow fields as colour."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from geogan.io import atomic_path


def flow_to_rgb(flow: torch.Tensor, max_norm: float | None = None) -> torch.Tensor:
    """Colour-wheel picture of a flow: hue = direction, saturation = magnitude.

    Args:
        flow: (B, 2, H, W) in grid units.
        max_norm: magnitude shown fully saturated (default: the batch's largest).
    Returns:
        (B, 3, H, W) in [-1, 1], like the images it is shown beside.
    """
    flow = flow.detach().float()
    mag = flow.norm(dim=1)  # (B, H, W)
    scale = max_norm if max_norm is not None else float(mag.max().clamp_min(1e-6))
    hue = (torch.atan2(flow[:, 1], flow[:, 0]) / (2 * math.pi)) % 1.0
    sat = (mag / scale).clamp(0, 1)
    # HSV (value 1) -> RGB, vectorised.
    k = torch.stack([(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6], dim=1)
    rgb = 1 - sat.unsqueeze(1) * (k.clamp(0, 1).minimum(4 - k).clamp(0, 1))
    return rgb * 2 - 1


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], max_columns: int = 8, label_width: int = 72) -> np.ndarray:
    """Stack named rows of images into one labelled grid.

    Args:
        rows: (name, (B, C, H, W) tensor in [-1, 1]); C = 1 (masks) or 3.
        max_columns: at most this many samples per row.
    Returns:
        (H_total, W_total, 3) uint8.
    """
    tiles = []
    for name, x in rows:
        x = x.detach().float()[:max_columns].cpu()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        row = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        line = np.concatenate(list(row), axis=1)
        label = Image.new("RGB", (label_width, line.shape[0]), (255, 255, 255))
        ImageDraw.Draw(label).text((4, line.shape[0] // 2 - 6), name, fill=(0, 0, 0))
        tiles.append(np.concatenate([np.asarray(label), line], axis=1))
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    return np.concatenate(tiles, axis=0)


def cross_grid_rows(t: dict[str, torch.Tensor], n_sources: int, n_references: int, cell: int = 128,
                    ) -> list[tuple[str, torch.Tensor]]:
    """Rows for a sources x references figure from `geogan.evaluation.run_pairs` on every source x reference.

    Layout: the references b and their removals F(b) on top; then for every source a, the row
    [a, a* with each reference], and under it the warped references b' and the masks m.
    Cells are resized to `cell` pixels so the figure stays small.
    """
    import torch.nn.functional as F

    def shrink(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return F.interpolate(x, size=(cell, cell), mode="area") if x.shape[-1] != cell else x

    def grid_of(key: str) -> torch.Tensor:  # (S, R, C, H, W)
        x = shrink(t[key])
        return x.view(n_sources, n_references, *x.shape[1:])

    blank = torch.ones(1, 3, cell, cell)
    out, warp, mask = grid_of("x_out"), grid_of("x_warp"), grid_of("mask").expand(-1, -1, 3, -1, -1) * 2 - 1
    rows = [("reference b", torch.cat([blank, grid_of("x_b")[0]])),
            ("removal F(b)", torch.cat([blank, grid_of("x_removed")[0]]))]
    sources = grid_of("x_a")[:, 0]
    for i in range(n_sources):
        rows.append((f"a{i + 1} -> a*", torch.cat([sources[i:i + 1], out[i]])))
        rows.append(("warped b'", torch.cat([blank, warp[i]])))
        rows.append(("mask m", torch.cat([blank, mask[i]])))
    return rows


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 HWC image as PNG atomically."""
    return save_image(path, image, fmt="PNG")


def save_image(path: str | Path, image: np.ndarray, fmt: str | None = None, jpeg_quality: int = 88) -> Path:
    """Write a uint8 HWC image atomically; the format follows the suffix (.jpg/.jpeg: JPEG, else PNG) unless given."""
    fmt = fmt or ("JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt, **({"quality": jpeg_quality} if fmt == "JPEG" else {}))
    return Path(path)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """Return a copy of a uint8 HWC image with (68, 2) pixel landmarks drawn as dots."""
    img = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(img)
    for x, y in landmarks:
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=color)
    return np.asarray(img)


def contact_sheet(sources: Sequence[np.ndarray], references: Sequence[np.ndarray],
                  results: dict[tuple[int, int], np.ndarray], cell: int = 96) -> np.ndarray:
    """A sources x references sheet: references along the top, sources down the left, a* where they meet.

    Args:
        sources, references: uint8 (H, W, 3) images (any size; resized to `cell`).
        results: (source index, reference index) -> uint8 (H, W, 3) transfer; a missing pair stays grey.
        cell: the side of every square tile in pixels.
    Returns:
        ((len(sources) + 1) * cell, (len(references) + 1) * cell, 3) uint8.
    """
    def tile(image: np.ndarray) -> np.ndarray:
        im = Image.fromarray(image)
        return np.asarray(im if im.size == (cell, cell) else im.resize((cell, cell), Image.Resampling.LANCZOS))

    sheet = np.full(((len(sources) + 1) * cell, (len(references) + 1) * cell, 3), 200, np.uint8)
    sheet[:cell, :cell] = 255
    for j, image in enumerate(references):
        sheet[:cell, (j + 1) * cell:(j + 2) * cell] = tile(image)
    for i, image in enumerate(sources):
        sheet[(i + 1) * cell:(i + 2) * cell, :cell] = tile(image)
    for (i, j), image in results.items():
        sheet[(i + 1) * cell:(i + 2) * cell, (j + 1) * cell:(j + 2) * cell] = tile(image)
    return sheet
