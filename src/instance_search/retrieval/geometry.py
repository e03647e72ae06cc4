"""Boxes and window grids, in two clearly separate units.

Boxes are (x1, y1, x2, y2) in original image pixels, a point inside when x1 <= x < x2, y1 <= y < y2.

- **Cell windows** (:func:`cell_windows`): windows snapped to a grid of ``cell``-pixel cells, as
  integer cell rectangles; the window re-ranking of bags of words scores them.
- **Pixel windows** (:func:`pixel_windows`): integer-pixel boxes over the image, sized from its
  shorter side; the region method uses them as proposals when no detector is used.

Both round half-up (Python's ``round`` is half-to-even) and always include the position flush with
the right/bottom border, so windows reach every edge; both are deterministic.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import InstanceSearchError

Box = tuple[float, float, float, float]


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def positions(last: int, step: int) -> np.ndarray:
    """0, step, 2 step, ... and always ``last``."""
    return np.unique(np.append(np.arange(0, last + 1, step), last))


def box_mask(xy: np.ndarray, box: Box) -> np.ndarray:
    """Which points (n, 2) lie inside the box."""
    x1, y1, x2, y2 = box
    return (xy[:, 0] >= x1) & (xy[:, 0] < x2) & (xy[:, 1] >= y1) & (xy[:, 1] < y2)


def in_box(xy: np.ndarray, box: Box, fallback: str = "image") -> tuple[np.ndarray, bool]:
    """(indices of the points inside ``box``, whether it had to fall back).

    A box that holds no point is never a silent empty query (it would score zero everywhere): it
    falls back to every point (``fallback="image"``: sparse keypoints) or to the point nearest the
    box centre (``"nearest"``: a dense CNN map, whose cells tile the image).
    """
    inside = box_mask(xy, box)
    if inside.any() or len(xy) == 0:
        return np.flatnonzero(inside), False
    if fallback == "image":
        return np.arange(len(xy)), True
    if fallback == "nearest":
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return np.array([int(np.argmin((xy[:, 0] - cx) ** 2 + (xy[:, 1] - cy) ** 2))]), True
    raise ValueError(f"unknown fallback {fallback!r}; expected image or nearest")


# ------------------------------------------------------------------------------------ cell windows

def grid_size(width: int, height: int, cell: int) -> tuple[int, int]:
    """(gw, gh): the number of cells across and down an image."""
    if cell <= 0:
        raise InstanceSearchError(f"rerank cell must be a positive number of pixels, got {cell}")
    if width <= 0 or height <= 0:
        raise InstanceSearchError(f"image size must be positive, got {width}x{height}")
    return math.ceil(width / cell), math.ceil(height / cell)


def cell_coords(xy: np.ndarray, cell: int, gw: int, gh: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell (column, row) of each position: floor(x / cell), clipped to the grid (x == width is last)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    cx = np.clip(np.floor(xy[:, 0] / cell), 0, gw - 1).astype(np.int64)
    cy = np.clip(np.floor(xy[:, 1] / cell), 0, gh - 1).astype(np.int64)
    return cx, cy


def _check_shapes(scales: Sequence[float], aspect_ratios: Sequence[float], stride: float, key: str) -> None:
    if not scales or min(scales) <= 0:
        raise InstanceSearchError(f"{key} scales must be a non-empty list of positive numbers, got {list(scales)}")
    if not aspect_ratios or min(aspect_ratios) <= 0:
        raise InstanceSearchError(f"{key} aspect_ratios must be a non-empty list of positive numbers, "
                                  f"got {list(aspect_ratios)}")
    if stride <= 0:
        raise InstanceSearchError(f"{key} stride must be positive, got {stride}")


def cell_windows(gw: int, gh: int, scales: Sequence[float], aspect_ratios: Sequence[float],
                 stride: float) -> np.ndarray:
    """All windows of a gw x gh cell grid, int64 (W, 4) rows [cx1, cy1, cx2, cy2) (half-open, cells).

    Per scale s and aspect ratio a: height h = max(1, round(s gh)) cells, width w = max(1, round(h a)),
    both clipped to the grid; steps max(1, round(stride w)) and max(1, round(stride h)). Duplicates
    are removed and rows sorted (lexicographically), so the order is deterministic.
    """
    if gw < 1 or gh < 1:
        raise InstanceSearchError(f"window grid must have at least one cell, got {gw}x{gh}")
    _check_shapes(scales, aspect_ratios, stride, "rerank")
    blocks = []
    for s in scales:
        h = min(gh, max(1, round_half_up(s * gh)))
        for a in aspect_ratios:
            w = min(gw, max(1, round_half_up(h * a)))
            xs = positions(gw - w, max(1, round_half_up(stride * w)))
            ys = positions(gh - h, max(1, round_half_up(stride * h)))
            x, y = np.meshgrid(xs, ys)
            x, y = x.ravel(), y.ravel()
            blocks.append(np.stack([x, y, x + w, y + h], axis=1))
    return np.unique(np.concatenate(blocks).astype(np.int64), axis=0)


def cell_boxes(windows: np.ndarray, cell: int, width: int, height: int) -> np.ndarray:
    """Pixel boxes (x1, y1, x2, y2) of cell windows, float32; the last cells are cut at the image border."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    boxes = windows * cell
    boxes[:, 2] = np.minimum(boxes[:, 2], width)
    boxes[:, 3] = np.minimum(boxes[:, 3], height)
    return boxes.astype(np.float32)


# ----------------------------------------------------------------------------------- pixel windows

def pixel_windows(width: int, height: int, scales: Sequence[float] = (1.0, 0.7, 0.5, 0.35),
                  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), stride: float = 0.5,
                  limit: int | None = None) -> np.ndarray:
    """Sliding windows over a width x height image, float32 (n, 4) integer-pixel boxes.

    Row 0 is the whole image. Per scale s (largest first) and aspect ratio a (width / height): a box of
    width s m sqrt(a) and height s m / sqrt(a), m the shorter image side, clipped to the image,
    stepped by ``stride`` times its size. Duplicates are dropped keeping the first. ``limit`` keeps
    whole scales, coarsest first, while they fit (a cut scale would cover only the top of the image);
    only if the coarsest scale alone is too many is it cut.
    """
    if width < 1 or height < 1:
        raise InstanceSearchError(f"image size must be positive, got {width}x{height}")
    _check_shapes(scales, aspect_ratios, stride, "frcnn grid")
    m = min(width, height)
    boxes = np.array([[0, 0, width, height]], np.int64)
    for k, s in enumerate(sorted(scales, reverse=True)):
        blocks = [boxes]
        for a in aspect_ratios:
            bw = int(min(width, max(1, round_half_up(s * m * math.sqrt(a)))))
            bh = int(min(height, max(1, round_half_up(s * m / math.sqrt(a)))))
            xs = positions(width - bw, max(1, round_half_up(stride * bw)))
            ys = positions(height - bh, max(1, round_half_up(stride * bh)))
            x, y = (v.ravel() for v in np.meshgrid(xs, ys))
            blocks.append(np.stack([x, y, x + bw, y + bh], axis=1))
        more = np.concatenate(blocks)
        _, first = np.unique(more, axis=0, return_index=True)
        more = more[np.sort(first)]
        if limit is not None and len(more) > limit:
            if k == 0:
                boxes = more[:limit]
            break
        boxes = more
    return boxes.astype(np.float32)
