"""A numpy scanline rasteriser on packed-RGB canvases: polygon fill, box-filter downsampling, compositing."""

from __future__ import annotations

import math

import numpy as np

from geogan.data.synthetic.face import Color


def raster(poly: np.ndarray, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """Pixels whose centres lie inside a polygon (non-zero winding), on its bounding box.

    Returns:
        (row0, col0, inside) with inside a (h, w) bool array, or None when nothing is covered.
    """
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    r0, r1 = max(math.ceil(lo[1]), 0), min(math.floor(hi[1]), height - 1)
    c0, c1 = max(math.ceil(lo[0]), 0), min(math.floor(hi[0]), width - 1)
    if r1 < r0 or c1 < c0:
        return None
    h, w = r1 - r0 + 1, c1 - c0 + 1
    x, y = poly[:, 0], poly[:, 1]
    nxt = np.concatenate([poly[1:], poly[:1]])
    dx, dy = nxt[:, 0] - x, nxt[:, 1] - y
    # Edge e crosses row r when min(y) <= r < max(y) (half-open: each crossing counted once).
    first = np.maximum(np.ceil(np.minimum(y, nxt[:, 1])), r0).astype(np.int64)
    last = np.minimum(np.ceil(np.maximum(y, nxt[:, 1])) - 1, r1).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    total = int(count.sum())
    if total == 0:
        return None
    edge = np.repeat(np.arange(len(poly)), count)
    row = np.repeat(first, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    xc = x[edge] + (row - y[edge]) * (dx[edge] / dy[edge])
    order = np.lexsort((xc, row))  # crossings by row, then left to right
    ri, xc = row[order] - r0, xc[order]
    winding = np.cumsum(np.where(dy[edge[order]] > 0, 1, -1))  # each row sums to 0
    col = np.clip(np.floor(xc).astype(np.int64) + 1 - c0, 0, w)  # first centre right of the crossing
    span = np.flatnonzero(winding[:-1] != 0)  # inside between crossing i and i+1 (same row)
    span = span[col[span + 1] > col[span]]
    if span.size == 0:
        return None
    span_row = ri[span]
    slot = np.arange(span.size) - np.searchsorted(span_row, span_row)  # index of the span in its row
    starts = np.zeros((h, int(slot.max()) + 1), np.int64)
    ends = np.zeros_like(starts)
    starts[span_row, slot], ends[span_row, slot] = col[span], col[span + 1]
    cols = np.arange(w)
    inside = (cols >= starts[:, :1]) & (cols < ends[:, :1])
    for j in range(1, starts.shape[1]):
        inside |= (cols >= starts[:, j : j + 1]) & (cols < ends[:, j : j + 1])
    return r0, c0, inside


def pack(color: Color) -> np.uint32:
    """One RGB colour as the uint32 whose bytes (in memory order) are R, G, B, 0."""
    return np.array([*color, 0], np.uint8).view(np.uint32)[0]


def unpack(plane: np.ndarray) -> np.ndarray:
    """(H, W) packed uint32 -> (H, W, 4) uint8 view (R, G, B, 0)."""
    return plane.view(np.uint8).reshape(*plane.shape, 4)


def fill(plane: np.ndarray, poly: np.ndarray, value, alpha: np.ndarray | None = None, a: int = 255) -> None:
    """Fill a canvas-space polygon with `value` (and `a` into `alpha` when given), in place.

    `plane` is 2-D (packed colours or coverage): one masked copy per polygon is what keeps
    rendering fast.
    """
    box = raster(poly, plane.shape[0], plane.shape[1])
    if box is None:
        return
    r0, c0, inside = box
    region = (slice(r0, r0 + inside.shape[0]), slice(c0, c0 + inside.shape[1]))
    np.copyto(plane[region], value, where=inside, casting="unsafe")
    if alpha is not None:
        np.copyto(alpha[region], a, where=inside, casting="unsafe")


def downsample(canvas: np.ndarray, k: int) -> np.ndarray:
    """Box filter (H, W, C) uint8 by k, rounding half up, in integers (so bytes are exact)."""
    s, c = canvas.shape[0] // k, canvas.shape[2]
    rows = canvas.reshape(s, k, -1).astype(np.uint16)  # k*k*255 fits: k <= 4
    acc = rows[:, 0]
    for i in range(1, k):  # explicit adds: several times faster than .sum over small axes
        acc = acc + rows[:, i]
    cols = acc.reshape(s, s, k, c)
    acc = cols[:, :, 0]
    for i in range(1, k):
        acc = acc + cols[:, :, i]
    return ((acc + (k * k) // 2) // (k * k)).astype(np.uint8)


def composite(base: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> None:
    """base = base*(1-a) + layer*a in integers, in place (uint8 (H, W, C)); alpha-0 pixels keep their bytes."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # only the layer's bounding box
    a = alpha[box][..., None].astype(np.uint32)
    mixed = (base[box].astype(np.uint32) * (255 - a) + layer[box].astype(np.uint32) * a + 127) // 255
    base[box] = mixed.astype(np.uint8)

