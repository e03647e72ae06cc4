"""Window re-ranking: score each database image by its best sliding window over its assignment map.

An *assignment map* is an image's local features with positions: ``xy`` (n, 2) pixels (x, y),
``words`` (n,) visual words, and the image ``width, height``. It is the same for SIFT keypoints and
for the cells of a CNN feature map, so this module serves every BoW method.

Windows snap to a grid of ``cell``-pixel cells. A window's vector is v = h * idf, h the word counts
of the features in its cells; it is compared with the (already weighted) query q by the cosine or
the weighted cosine of :mod:`.similarity` (the same formulas, computed here from window sums):
q.v / (|q| |v|), and q.v / (|q| sqrt(alpha |v|^2 + (1 - alpha) sum_{i in supp q} v_i^2)). An image
scores the maximum over its windows (:mod:`.geometry` makes the cell windows).

How it is fast. The dot q.v is linear in the features, so it is one weighted integral image over
the cells (4 look-ups per window, all windows at once). |v|^2 = sum_u idf_u^2 h_u^2 is not linear,
but h_u^2 counts the *pairs* of u's features in the window: pairs within one cell are linear again
(an integral image), and a pair of two cells lies in a window of size (w, h) exactly for a
rectangle of window positions; so every such pair adds its weight to a rectangle of a difference
array per window size, and two cumulative sums give the value of every window of that size.
Cost: O(pairs x window sizes) instead of O(windows x words present). Words found in very many
cells (bursts: sky, facades) would make many pairs; those few words get their own integral
histograms (O(windows) each). Each image is prepared once per ``rerank`` call for all the queries
that retrieved it (image-major loop), which is the cache across queries.

All sums are float64. Zero results are detected from exact integer counts, never from a rounded
float, so an empty window scores exactly 0 as in the formulas.

``score_windows_recount`` is the plain re-counting implementation, kept as the test oracle.

Queries are a pair ``(q_idx, q_val)`` of arrays (word indices, values) or a one-row
``scipy.sparse`` matrix; ``query_arrays`` turns either into sorted unique indices and non-zero
values. Weights (idf, query values) are assumed non-negative, as in tf / tf-idf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError
from . import similarity as sim
from .geometry import cell_boxes, cell_coords, cell_windows, grid_size
from .ranking import by_image, check_first_stage, pick_best, reorder

# A word found in e cells makes e (e - 1) / 2 pairs, each visited once per window size; the word gets
# its own integral histogram (cost ~ number of windows) when pairs x sizes > _HEAVY_FACTOR x windows.
# Any value gives the same scores; 0.5 is the fastest on SIFT-like maps (docs/settings.md).
_HEAVY_FACTOR = 0.5


def query_arrays(query) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of a query given as a one-row sparse matrix or an (indices, values) pair.

    Indices come back sorted and unique (duplicates summed, as scipy does), zeros dropped.
    """
    if sp.issparse(query):
        row = sp.csr_matrix(query)
        if row.shape[0] != 1:
            raise InstanceSearchError(f"a query must be one sparse row, got shape {row.shape}")
        idx, val = row.indices, row.data
    else:
        idx, val = query
    idx = np.asarray(idx, dtype=np.int64).ravel()
    val = np.asarray(val, dtype=np.float64).ravel()
    if idx.shape != val.shape:
        raise InstanceSearchError(f"query indices and values differ in length ({idx.size} vs {val.size})")
    uniq, inv = np.unique(idx, return_inverse=True)
    val = np.bincount(inv.ravel(), val, minlength=uniq.size)
    keep = val != 0
    return uniq[keep], val[keep]


def _check_map(xy, words, idf) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    words = np.asarray(words, dtype=np.int64).ravel()
    if len(xy) != len(words):
        raise InstanceSearchError(f"assignment map has {len(xy)} positions but {len(words)} words")
    if words.size and (words.min() < 0 or words.max() >= len(idf)):
        raise InstanceSearchError(f"assignment map has words outside [0, {len(idf)}): check the codebook size")
    return xy, words


def _check_query(query: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(query[0]) and (query[0][0] < 0 or query[0][-1] >= k):
        raise InstanceSearchError(f"query has words outside [0, {k}): check the codebook size")
    return query


def _check_windows(windows, gw: int, gh: int) -> np.ndarray:
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    x1, y1, x2, y2 = windows.T
    if np.any((x1 < 0) | (y1 < 0) | (x2 > gw) | (y2 > gh) | (x2 <= x1) | (y2 <= y1)):
        raise InstanceSearchError(f"windows must be non-empty and inside the {gw}x{gh} cell grid")
    return windows


# ------------------------------------------------------------------------------------------------
# Oracle


def score_windows_recount(xy, words, width, height, q_idx, q_val, idf, *, windows, cell,
                          similarity="cosine", alpha=0.8) -> np.ndarray:
    """Test oracle: per window, recount its features and apply the formulas on dense K-vectors.

    Slow on purpose (a Python loop over windows); ``score_windows`` must agree with it.
    """
    sim.check(similarity, alpha)
    idf = np.asarray(idf, dtype=np.float64)
    xy, words = _check_map(xy, words, idf)
    gw, gh = grid_size(width, height, cell)
    windows = _check_windows(windows, gw, gh)
    cx, cy = cell_coords(xy, cell, gw, gh)
    q_idx, q_val = _check_query(query_arrays((q_idx, q_val)), len(idf))
    q = np.zeros(len(idf))
    q[q_idx] = q_val
    w = np.where(q != 0, 1.0, alpha) if similarity == "weighted_cosine" else np.ones(len(idf))
    scores = np.zeros(len(windows))
    for i, (x1, y1, x2, y2) in enumerate(windows):
        inside = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
        v = np.bincount(words[inside], minlength=len(idf)) * idf
        den = math.sqrt(w @ (q * q)) * math.sqrt(w @ (v * v))
        scores[i] = (w @ (q * v)) / den if den > 0 else 0.0
    return scores


# ------------------------------------------------------------------------------------------------
# Fast scoring

# Queries scored together against one image share its preparation; chunks bound the memory of the
# per-query difference arrays (sizes x chunk x cells floats).
_QUERY_CHUNK = 32

# Elements per temporary array in the pair sums: small blocks stay in cache and need no fresh
# memory pages (page faults dominated on virtual machines with big temporaries).
_BLOCK = 8192

# Window grids kept by ``rerank`` (one per image size in cells; datasets have few).
_GRID_CACHE = 64


@dataclass(frozen=True)
class _Grid:
    """Windows of one cell grid, grouped by size (the pair sums work per window size)."""

    windows: np.ndarray  # (W, 4) cells
    gw: int
    gh: int
    size_w: np.ndarray  # (S,) widths of the distinct window sizes
    size_h: np.ndarray  # (S,) heights
    size_of: np.ndarray  # (W,) size index of each window
    corners: np.ndarray  # (4, W) flat indices in a (gh + 1, gw + 1) plane: (y2, x2), (y1, x2), (y2, x1), (y1, x1)

    @classmethod
    def of(cls, windows: np.ndarray, gw: int, gh: int) -> "_Grid":
        key = (windows[:, 2] - windows[:, 0]) * (gh + 1) + (windows[:, 3] - windows[:, 1])
        keys, size_of = np.unique(key, return_inverse=True)
        x1, y1, x2, y2 = windows.T
        corners = np.stack([y2 * (gw + 1) + x2, y1 * (gw + 1) + x2, y2 * (gw + 1) + x1, y1 * (gw + 1) + x1])
        return cls(windows, gw, gh, (keys // (gh + 1)).astype(np.int32), (keys % (gh + 1)).astype(np.int32),
                   size_of.ravel(), corners)


def _cumsum2(a: np.ndarray) -> np.ndarray:
    """Prefix sums over the last two axes of a (planes, h, w) array, in place (no fresh memory)."""
    np.cumsum(a, axis=1, out=a)
    return np.cumsum(a, axis=2, out=a)


def _box_sums(grid: _Grid, x, y, weight, column, n_columns) -> np.ndarray:
    """(n_columns, W): per window, the sum of ``weight`` of the points (cell x, y) inside it, per column.

    One integral image per column (with a leading row and column of zeros), 4 look-ups per window.
    """
    gw, gh = grid.gw, grid.gh
    cells = np.bincount((column * (gh + 1) + y + 1) * (gw + 1) + x + 1, weight,
                        minlength=n_columns * (gh + 1) * (gw + 1))
    # bincount returns integers when it gets no point at all
    integral = _cumsum2(cells.astype(np.float64, copy=False).reshape(n_columns, gh + 1, gw + 1))
    integral = integral.reshape(n_columns, -1)
    c22, c12, c21, c11 = grid.corners
    # np.take: faster than fancy indexing here
    out = np.take(integral, c22, axis=1)
    out -= np.take(integral, c12, axis=1)
    out -= np.take(integral, c21, axis=1)
    out += np.take(integral, c11, axis=1)
    return out


def _pair_sums(grid: _Grid, lo_x, hi_x, lo_y, hi_y, weight, column, n_columns) -> np.ndarray:
    """(n_columns, W): per window, the sum of ``weight`` of the items whose cell box
    [lo_x, hi_x] x [lo_y, hi_y] (inclusive) lies inside it, per column.

    A w x h window at (x, y) holds the box iff hi_x - w + 1 <= x <= lo_x (and the same in y): a
    rectangle of positions. For every window size at once, each item adds its weight to that
    rectangle of a difference array (4 corners); two cumulative sums give every position's total.
    """
    gw, gh, n_sizes = grid.gw, grid.gh, len(grid.size_w)
    diff = np.zeros((n_sizes, n_columns, gh + 1, gw + 1))
    flat = diff.reshape(-1)
    w, h = grid.size_w[:, None], grid.size_h[:, None]
    plane = (np.arange(n_sizes, dtype=np.int32)[:, None] * n_columns) * ((gh + 1) * (gw + 1))
    # Start corners: (max(hi - size + 1, 0)); end corners: lo + 1, never clipped to the last valid
    # position, as positions beyond it are never read. Broadcast over (sizes, a block of items):
    # elementwise work beats gathering the fitting items, and blocks keep the temporaries small.
    # An item that does not fit a size gets weight 0 (its corners stay inside the array anyway).
    step = max(1, _BLOCK // n_sizes)
    for i in range(0, len(weight), step):
        lx, hx, ly, hy = (a[i:i + step].astype(np.int32) for a in (lo_x, hi_x, lo_y, hi_y))
        wt = ((hx - lx < w) & (hy - ly < h)) * weight[i:i + step]
        col = plane + column[i:i + step].astype(np.int32) * ((gh + 1) * (gw + 1))
        x0, x1 = np.maximum(hx + 1 - w, 0), lx + 1
        r0 = col + np.maximum(hy + 1 - h, 0) * (gw + 1)
        r1 = col + (ly + 1) * (gw + 1)
        wt = wt.ravel()  # np.add.at is only fast with 1-d indices
        np.add.at(flat, (r0 + x0).ravel(), wt)
        np.add.at(flat, (r1 + x1).ravel(), wt)
        np.negative(wt, out=wt)
        np.add.at(flat, (r0 + x1).ravel(), wt)
        np.add.at(flat, (r1 + x0).ravel(), wt)
    _cumsum2(diff.reshape(n_sizes * n_columns, gh + 1, gw + 1))
    plane_of = grid.size_of * n_columns + np.arange(n_columns)[:, None]
    return np.take(flat, plane_of * ((gh + 1) * (gw + 1)) + grid.corners[3])


def _pairs_after(end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with i < j < end[i]: each entry with every later entry of its word."""
    i_all = np.arange(len(end))
    n_after = end - i_all - 1
    first = np.repeat(i_all, n_after)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(n_after) - n_after, n_after)
    return first, first + 1 + offset


def _score_queries(xy, words, queries, idf, grid: _Grid, *, cell, similarity, alpha) -> np.ndarray:
    """(len(queries), W) window scores of one image for several queries; the image is prepared once.

    ``queries`` are (indices, values) from ``query_arrays``.
    """
    m, n_windows = len(queries), len(grid.windows)
    scores = np.zeros((m, n_windows))
    if m == 0 or len(words) == 0:
        return scores
    gw, gh = grid.gw, grid.gh
    cx, cy = cell_coords(xy, cell, gw, gh)

    # Entries: distinct (word, cell) with their feature count k, sorted by word, then cell.
    key, count = np.unique((words * gh + cy) * gw + cx, return_counts=True)
    ent_word, ent_cell = np.divmod(key, gh * gw)
    ent_y, ent_x = (a.astype(np.int32) for a in np.divmod(ent_cell, gw))
    count = count.astype(np.float64)
    first = np.flatnonzero(np.diff(ent_word, prepend=-1))  # each word's first entry
    image_words, cells_per_word = ent_word[first], np.diff(first, append=len(ent_word))
    ent_u = np.repeat(np.arange(len(first)), cells_per_word)  # entry -> index into image_words
    word_end = np.repeat(first + cells_per_word, cells_per_word)  # entry -> end of its word's entries
    idf_u = idf[image_words]
    idf2_e = idf_u[ent_u] ** 2
    squares = idf2_e * count * count

    # |v|^2 = sum over words u of idf_u^2 (sum of k over u's entries in the window)^2
    #       = sum over entries of idf^2 k^2 (linear: an integral image)
    #       + sum over pairs of distinct entries of one word of 2 idf^2 k k' (the pair sums).
    # Bursty words, with many pairs, get their own integral histograms (exact integer counts).
    heavy = cells_per_word * (cells_per_word - 1) / 2 * len(grid.size_w) > _HEAVY_FACTOR * n_windows
    heavy_u = np.flatnonzero(heavy)
    light = ~heavy[ent_u]
    a, b = _pairs_after(np.where(light, word_end, np.arange(1, len(ent_u) + 1)))
    pair_u = ent_u[a]
    pair_w = 2 * idf2_e[a] * count[a] * count[b]
    lo_x, hi_x = np.minimum(ent_x[a], ent_x[b]), np.maximum(ent_x[a], ent_x[b])
    lo_y, hi_y = np.minimum(ent_y[a], ent_y[b]), np.maximum(ent_y[a], ent_y[b])
    n_heavy = len(heavy_u)
    col = np.where(light, n_heavy, np.searchsorted(heavy_u, ent_u))
    sums = _box_sums(grid, ent_x, ent_y, np.where(light, squares, count), col, n_heavy + 1)
    hist2 = sums[:n_heavy] ** 2  # (heavy words, W)
    v2 = sums[n_heavy] + idf_u[heavy_u] ** 2 @ hist2
    v2 += _pair_sums(grid, lo_x, hi_x, lo_y, hi_y, pair_w, np.zeros(len(a), np.int32), 1)[0]

    weighted = similarity == "weighted_cosine"
    for c0 in range(0, m, _QUERY_CHUNK):
        chunk = queries[c0:c0 + _QUERY_CHUNK]
        mc = len(chunk)
        # The chunk's queries restricted to this image's words: (mc, U).
        q_u = np.zeros((mc, len(image_words)))
        q_norm = np.zeros(mc)
        for j, (q_idx, q_val) in enumerate(chunk):
            if len(q_idx):
                pos = np.minimum(np.searchsorted(q_idx, image_words), len(q_idx) - 1)
                hit = q_idx[pos] == image_words
                q_u[j, hit] = q_val[pos[hit]]
            q_norm[j] = math.sqrt(q_val @ q_val)
        # Columns: dot products; how many entries contribute (an exact integer: the test for zero);
        # for weighted cosine, the entry part of sum_{u in supp q} v_u^2 (light words).
        contrib = q_u[:, ent_u] * (idf_u[ent_u] * count)
        qj, qe = np.nonzero(contrib)
        items = [(qe, contrib[qj, qe], qj), (qe, np.ones(len(qe)), qj + mc)]  # (entry, weight, column)
        if weighted:
            lq = light[qe]
            items.append((qe[lq], squares[qe[lq]], qj[lq] + 2 * mc))
        e, wt, col = (np.concatenate(v) for v in zip(*items))
        sums = _box_sums(grid, ent_x[e], ent_y[e], wt, col, len(items) * mc)
        dot, n_contrib = sums[:mc], sums[mc:2 * mc]
        den2 = np.broadcast_to(v2, (mc, n_windows))
        if weighted:
            # sum_{u in supp q} v_u^2: entries (above), pairs and bursty words of the query's words.
            in_q = q_u != 0
            pj, pp = np.nonzero(in_q[:, pair_u])
            v2q = sums[2 * mc:] + _pair_sums(grid, lo_x[pp], hi_x[pp], lo_y[pp], hi_y[pp], pair_w[pp],
                                             pj.astype(np.int32), mc)
            v2q += (in_q[:, heavy_u] * idf_u[heavy_u] ** 2) @ hist2
            den2 = alpha * den2 + (1 - alpha) * v2q
        # Where an entry contributes, den2 >= its idf^2 > 0 (up to rounding), so the division is safe.
        den = q_norm[:, None] * np.sqrt(np.maximum(den2, 0))
        np.divide(dot, den, out=scores[c0:c0 + mc], where=(n_contrib > 0.5) & (den > 0))
    return scores


def score_windows(xy, words, width, height, q_idx, q_val, idf, *, windows, cell, similarity="cosine",
                  alpha=0.8) -> np.ndarray:
    """Similarity (float64, (W,)) between the query and each window (cells, as from ``window_grid``)."""
    sim.check(similarity, alpha)
    idf = np.asarray(idf, dtype=np.float64)
    xy, words = _check_map(xy, words, idf)
    gw, gh = grid_size(width, height, cell)
    windows = _check_windows(windows, gw, gh)
    query = _check_query(query_arrays((q_idx, q_val)), len(idf))
    return _score_queries(xy, words, [query], idf, _Grid.of(windows, gw, gh), cell=cell, similarity=similarity,
                          alpha=alpha)[0]


def best_window(xy, words, width, height, q_idx, q_val, idf, *, cell, scales, aspect_ratios, stride,
                similarity="cosine", alpha=0.8) -> tuple[float, np.ndarray]:
    """(score, pixel box float32 (4,)) of the image's best window; box all NaN if it has no feature."""
    gw, gh = grid_size(width, height, cell)
    windows = cell_windows(gw, gh, scales, aspect_ratios, stride)
    scores = score_windows(xy, words, width, height, q_idx, q_val, idf, windows=windows, cell=cell,
                           similarity=similarity, alpha=alpha)
    if len(words) == 0:
        return 0.0, np.full(4, np.nan, np.float32)
    k = int(pick_best(scores)[0])
    return float(scores[k]), cell_boxes(windows[k], cell, width, height)[0]


def rerank(first_ranks, first_scores, queries, get_map: Callable[[int], tuple], idf, *, top, cell, scales,
           aspect_ratios, stride, similarity="cosine", alpha=0.8,
           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-score each query's first ``top`` results by their best window; returns (ranks, scores, boxes).

    first_ranks, first_scores: (nq, N) first-stage database indices and scores, best first.
    queries: a sparse matrix (nq, K) or a sequence of (indices, values), already weighted.
    get_map(i) -> (xy, words, width, height) of database image i; called once per distinct image.
    progress(done, total), if given, is called after each image.

    The first T = min(top, N) results are sorted by window score, descending and stable (ties keep
    the first-stage order); the others follow in first-stage order. Scores: the window scores for
    the first T; the others keep their first-stage differences but are shifted so that the best of
    them scores (lowest window score - 1): scores never increase along a ranking whose first-stage
    scores did not, and any score below the re-ranked ones marks a result that was not re-ranked.
    boxes: float32 (nq, T, 4) pixel boxes (x1, y1, x2, y2) of the best windows in the new order;
    NaN for images without features.
    """
    sim.check(similarity, alpha)
    idf = np.asarray(idf, dtype=np.float64)
    if sp.issparse(queries):
        queries = sp.csr_matrix(queries)
        queries = [query_arrays(queries[j]) for j in range(queries.shape[0])]
    else:
        queries = [query_arrays(q) for q in queries]
    queries = [_check_query(q, len(idf)) for q in queries]
    first_ranks, first_scores = check_first_stage(first_ranks, first_scores, top, len(queries))
    nq, n = first_ranks.shape
    t = min(top, n)
    cand = first_ranks[:, :t]
    window_score = np.zeros((nq, t))
    boxes = np.full((nq, t, 4), np.nan, np.float32)

    # Image-major: each image is prepared once and scored for every query that retrieved it.
    groups = by_image(cand)
    grids: dict[tuple[int, int], _Grid] = {}  # the windows of each grid size met in this call (bounded)
    for k, (image, qi, ri) in enumerate(groups):
        xy, words, width, height = get_map(image)
        xy, words = _check_map(xy, words, idf)
        gw, gh = grid_size(width, height, cell)
        if (gw, gh) not in grids:
            if len(grids) >= _GRID_CACHE:
                grids.clear()
            grids[gw, gh] = _Grid.of(cell_windows(gw, gh, scales, aspect_ratios, stride), gw, gh)
        grid = grids[gw, gh]
        scores = _score_queries(xy, words, [queries[j] for j in qi], idf, grid, cell=cell, similarity=similarity,
                                alpha=alpha)
        if len(words):
            picks = pick_best(scores)
            window_score[qi, ri] = scores[np.arange(len(qi)), picks]
            boxes[qi, ri] = cell_boxes(grid.windows[picks], cell, width, height)
        if progress is not None:
            progress(k + 1, len(groups))

    return reorder(first_ranks, first_scores, window_score, boxes)
