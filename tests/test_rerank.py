"""Sliding-window re-ranking: window grids, cell mapping, fast scores against the re-counting
oracle, a planted object, and the ordering contract of ``rerank``."""

import numpy as np
import pytest
import scipy.sparse as sp

from instance_search.retrieval import geometry as geo
from instance_search.retrieval import windows as rr
from instance_search.retrieval.similarity import SIMILARITIES
from instance_search.errors import InstanceSearchError

DEFAULT = dict(scales=[0.2, 0.3, 0.45, 0.65, 0.85, 1.0], aspect_ratios=[0.5, 1.0, 2.0], stride=0.25)


def _rows(windows):
    return [tuple(int(v) for v in w) for w in windows]


# ------------------------------------------------------------------------------------------------
# Window grid and cells


def test_window_grid_single_cell():
    assert _rows(geo.cell_windows(1, 1, **DEFAULT)) == [(0, 0, 1, 1)]


def test_window_grid_hand_case():
    # h = 2, w = 2, steps 1: three positions along x, one along y.
    assert _rows(geo.cell_windows(4, 2, [1.0], [1.0], 0.5)) == [(0, 0, 2, 2), (1, 0, 3, 2), (2, 0, 4, 2)]


def test_window_grid_includes_the_border_position():
    # h = 1, w = 2, step 2: x = 0, 2 and the last position 3 (flush with the right border).
    assert _rows(geo.cell_windows(5, 1, [1.0], [2.0], 1.0)) == [(0, 0, 2, 1), (2, 0, 4, 1), (3, 0, 5, 1)]
    # Same in y: h = 2 (round(0.4 * 5)), w = 1, step 2: y = 0, 2 and 3.
    assert _rows(geo.cell_windows(1, 5, [0.4], [0.5], 1.0)) == [(0, 0, 1, 2), (0, 2, 1, 4), (0, 3, 1, 5)]


def test_window_grid_dedupes_and_sorts():
    # Aspect ratio 5 clips to the grid width: the same window as ratio 1; scales repeat.
    assert _rows(geo.cell_windows(2, 2, [1.0, 1.0], [1.0, 5.0], 0.25)) == [(0, 0, 2, 2)]
    windows = geo.cell_windows(40, 30, **DEFAULT)
    assert np.array_equal(windows, np.unique(windows, axis=0))
    assert windows.dtype == np.int64 and windows.shape[1] == 4
    x1, y1, x2, y2 = windows.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 40).all() and (y2 <= 30).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    # Every size reaches the right and bottom borders.
    for w, h in {(a, b) for a, b in zip(x2 - x1, y2 - y1)}:
        same = (x2 - x1 == w) & (y2 - y1 == h)
        assert x2[same].max() == 40 and y2[same].max() == 30


def test_window_grid_rounds_half_up():
    # 0.5 * 5 = 2.5 cells -> 3 (Python's round() would give 2).
    assert _rows(geo.cell_windows(1, 5, [0.5], [0.1], 1.0)) == [(0, 0, 1, 3), (0, 2, 1, 5)]


@pytest.mark.parametrize("kwargs", [dict(stride=0), dict(scales=[]), dict(scales=[0.0]), dict(aspect_ratios=[-1.0])])
def test_window_grid_rejects_bad_parameters(kwargs):
    with pytest.raises(InstanceSearchError):
        geo.cell_windows(4, 4, **{**DEFAULT, **kwargs})


def test_cell_coords_at_borders():
    gw, gh = geo.grid_size(100, 50, 16)
    assert (gw, gh) == (7, 4)
    xy = np.array([[0, 0], [16 - 1e-3, 16 - 1e-3], [16, 16], [100, 50], [99.9, 49.9], [-1, -1]], np.float32)
    cx, cy = geo.cell_coords(xy, 16, gw, gh)
    assert cx.tolist() == [0, 0, 1, 6, 6, 0]
    assert cy.tolist() == [0, 0, 1, 3, 3, 0]


def test_grid_smaller_than_one_cell():
    assert geo.grid_size(5, 3, 16) == (1, 1)
    assert geo.cell_boxes([[0, 0, 1, 1]], 16, 5, 3).tolist() == [[0, 0, 5, 3]]


# ------------------------------------------------------------------------------------------------
# Fast scores against the oracle


def _random_case(rng, *, tfidf):
    k = int(rng.integers(1, 80))
    n = int(rng.choice([0, 1, 5, int(rng.integers(0, 400))]))
    cell = int(rng.choice([1, 7, 16, 32]))
    width, height = int(rng.integers(1, 330)), int(rng.integers(1, 250))
    xy = rng.uniform(0, [width, height], (n, 2)).astype(np.float32)
    if n and rng.random() < 0.5:  # bursts: one word over many cells (the per-word histogram path)
        words = np.where(rng.random(n) < 0.4, 0, rng.integers(0, k, n)).astype(np.int32)
    else:
        words = rng.integers(0, k, n).astype(np.int32)
    idf = rng.uniform(0.1, 4.0, k).astype(np.float32) if tfidf else np.ones(k, np.float32)
    # Queries hold words both present in and absent from the image.
    n_q = int(rng.integers(0, k + 1))
    q_idx = np.sort(rng.choice(k, n_q, replace=False))
    q_val = rng.integers(1, 5, n_q) * idf[q_idx]
    return xy, words, width, height, q_idx, q_val, idf, cell


@pytest.mark.parametrize("heavy_factor", [None, 0.0, 1e30], ids=["auto", "all-histograms", "all-pairs"])
@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("tfidf", [False, True], ids=["tf", "tfidf"])
def test_fast_scores_equal_the_oracle(similarity, tfidf, heavy_factor, monkeypatch):
    if heavy_factor is not None:
        monkeypatch.setattr(rr, "_HEAVY_FACTOR", heavy_factor)
    rng = np.random.default_rng([7, tfidf, SIMILARITIES.index(similarity)])
    for _ in range(40):
        xy, words, width, height, q_idx, q_val, idf, cell = _random_case(rng, tfidf=tfidf)
        gw, gh = geo.grid_size(width, height, cell)
        windows = geo.cell_windows(gw, gh, [0.15, 0.5, 1.0], [0.5, 1.0, 2.0], 0.25)
        alpha = float(rng.choice([0.0, 0.3, 0.8, 1.0]))
        kw = dict(windows=windows, cell=cell, similarity=similarity, alpha=alpha)
        fast = rr.score_windows(xy, words, width, height, q_idx, q_val, idf, **kw)
        slow = rr.score_windows_recount(xy, words, width, height, q_idx, q_val, idf, **kw)
        assert fast.shape == (len(windows),)
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
        assert np.array_equal(fast == 0, slow == 0)  # zero exactly where the formulas give zero


def test_fast_scores_on_default_windows_and_empty_cases():
    rng = np.random.default_rng(3)
    idf = rng.uniform(0.5, 3, 50)
    xy = rng.uniform(0, [640, 480], (700, 2))
    words = rng.integers(0, 50, 700)
    windows = geo.cell_windows(40, 30, **DEFAULT)
    for q_idx, q_val in [(np.arange(0, 50, 3), np.ones(17)), ([], []), ([60 - 11], [2.0])]:
        for similarity in SIMILARITIES:
            kw = dict(windows=windows, cell=16, similarity=similarity, alpha=0.8)
            fast = rr.score_windows(xy, words, 640, 480, q_idx, q_val, idf, **kw)
            slow = rr.score_windows_recount(xy, words, 640, 480, q_idx, q_val, idf, **kw)
            np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
    empty = rr.score_windows(np.zeros((0, 2)), [], 640, 480, [1], [1.0], idf, windows=windows, cell=16)
    assert not empty.any()


def test_whole_image_window_equals_dense_formulas():
    rng = np.random.default_rng(5)
    k, alpha = 30, 0.8
    idf = rng.uniform(0.2, 3, k)
    xy = rng.uniform(0, [200, 100], (150, 2))
    words = rng.integers(0, k, 150)
    q = rng.integers(0, 4, k) * (rng.random(k) < 0.4) * idf
    v = np.bincount(words, minlength=k) * idf
    w = np.where(q != 0, 1.0, alpha)
    dense_weighted = (w * q * v).sum() / (np.sqrt((w * q * q).sum()) * np.sqrt((w * v * v).sum()))
    dense_cosine = q @ v / (np.linalg.norm(q) * np.linalg.norm(v))
    whole = [[0, 0, *geo.grid_size(200, 100, 16)]]
    q_idx = np.flatnonzero(q)
    for similarity, expected in [("weighted_cosine", dense_weighted), ("cosine", dense_cosine)]:
        got = rr.score_windows(xy, words, 200, 100, q_idx, q[q_idx], idf, windows=whole, cell=16,
                               similarity=similarity, alpha=alpha)
        assert got[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("heavy_factor", [0.0, 1e30], ids=["histograms", "pairs"])
def test_weighted_cosine_window_scores_by_hand(heavy_factor, monkeypatch):
    monkeypatch.setattr(rr, "_HEAVY_FACTOR", heavy_factor)  # both ways of counting |v|^2
    # 3 words with idf (1, 2, 0.5); a 32 x 32 image in 16-px cells: a 2 x 2 grid. Features:
    #   word 0 in cell (0, 0) and in cell (1, 1); word 1 in cell (1, 0); word 2 in cells (0, 1) and (1, 1).
    # Query (already weighted): q = (1, 2, 0), so w = (1, 1, alpha) with alpha = 0.2.
    idf = np.array([1.0, 2.0, 0.5])
    xy = np.array([[4, 4], [20, 20], [20, 4], [4, 20], [20, 20]], np.float32)
    words = np.array([0, 0, 1, 2, 2])
    windows = [[0, 0, 2, 2], [1, 0, 2, 2], [0, 1, 1, 2]]
    # whole image: h = (2, 1, 2), v = h * idf = (2, 2, 1)
    #   sum w q v = 1*1*2 + 1*2*2 + 0.2*0*1 = 6; sum w q^2 = 1 + 4 = 5; sum w v^2 = 4 + 4 + 0.2*1 = 8.2
    #   score = 6 / sqrt(5 * 8.2) = 6 / sqrt(41)
    # right column, cells (1, 0) and (1, 1): h = (1, 1, 1), v = (1, 2, 0.5)
    #   sum w q v = 1 + 4 = 5; sum w v^2 = 1 + 4 + 0.2 * 0.25 = 5.05; score = 5 / sqrt(5 * 5.05) = 5 / sqrt(25.25)
    # cell (0, 1): only word 2, absent from the query: score 0
    got = rr.score_windows(xy, words, 32, 32, [0, 1], [1.0, 2.0], idf, windows=windows, cell=16,
                           similarity="weighted_cosine", alpha=0.2)
    np.testing.assert_allclose(got, [6 / np.sqrt(41), 5 / np.sqrt(25.25), 0.0], rtol=1e-12)
    assert got[2] == 0
    # plain cosine of the same windows: 6 / sqrt(5 * 9) and 5 / sqrt(5 * 5.25)
    cos = rr.score_windows(xy, words, 32, 32, [0, 1], [1.0, 2.0], idf, windows=windows, cell=16, similarity="cosine")
    np.testing.assert_allclose(cos, [6 / np.sqrt(45), 5 / np.sqrt(26.25), 0.0], rtol=1e-12)
    # the slow oracle agrees with the hand values too
    slow = rr.score_windows_recount(xy, words, 32, 32, [0, 1], [1.0, 2.0], idf, windows=windows, cell=16,
                                    similarity="weighted_cosine", alpha=0.2)
    np.testing.assert_allclose(slow, [6 / np.sqrt(41), 5 / np.sqrt(25.25), 0.0], rtol=1e-12)


def test_several_queries_at_once_equal_one_at_a_time(monkeypatch):
    monkeypatch.setattr(rr, "_QUERY_CHUNK", 2)  # several chunks
    rng = np.random.default_rng(11)
    k = 40
    idf = rng.uniform(0.5, 2, k)
    xy, words = rng.uniform(0, [300, 200], (400, 2)), rng.integers(0, k, 400)
    grid = rr._Grid.of(geo.cell_windows(*geo.grid_size(300, 200, 16), **DEFAULT), *geo.grid_size(300, 200, 16))
    queries = [rr.query_arrays((rng.choice(k, 8, replace=False), rng.uniform(0.5, 2, 8))) for _ in range(5)]
    for similarity in SIMILARITIES:
        together = rr._score_queries(xy, words, queries, idf, grid, cell=16, similarity=similarity, alpha=0.8)
        for j, (q_idx, q_val) in enumerate(queries):
            alone = rr.score_windows_recount(xy, words, 300, 200, q_idx, q_val, idf, windows=grid.windows, cell=16,
                                             similarity=similarity, alpha=0.8)
            np.testing.assert_allclose(together[j], alone, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# A planted object


def _planted(width, height, corner):
    """Background words 20..39 everywhere but a 3x3-cell corner holding words 0..8, one per cell."""
    rng = np.random.default_rng(2)
    gw, gh = geo.grid_size(width, height, 16)
    x0, y0 = (0, 0) if corner == "top-left" else (gw - 3, gh - 3)
    bg = rng.uniform(0, [width, height], (600, 2))
    cx, cy = geo.cell_coords(bg, 16, gw, gh)
    bg = bg[~((cx >= x0) & (cx < x0 + 3) & (cy >= y0) & (cy < y0 + 3))]
    obj = np.array([[(x0 + i % 3) * 16 + 5, (y0 + i // 3) * 16 + 5] for i in range(9)], float)
    xy = np.concatenate([bg, obj])
    words = np.concatenate([rng.integers(20, 40, len(bg)), np.arange(9)])
    return xy, words, (x0, y0)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_planted_object_is_found(corner, similarity):
    width, height = 330, 250  # 21 x 16 cells, the last ones cut by the border
    xy, words, (x0, y0) = _planted(width, height, corner)
    idf = np.ones(40)
    score, box = rr.best_window(xy, words, width, height, np.arange(9), np.ones(9), idf, cell=16,
                                scales=[3 / 16, 0.5, 1.0], aspect_ratios=[1.0], stride=0.25, similarity=similarity)
    assert score == pytest.approx(1.0)
    expected = [x0 * 16, y0 * 16, min((x0 + 3) * 16, width), min((y0 + 3) * 16, height)]
    assert box.dtype == np.float32 and box.tolist() == expected


def test_best_window_without_features():
    score, box = rr.best_window(np.zeros((0, 2)), [], 50, 40, [0], [1.0], np.ones(3), cell=16, **DEFAULT)
    assert score == 0.0 and np.isnan(box).all()


def test_best_window_ties_go_to_the_first_window():
    # One feature: every window holding it scores 1; the first such window in order wins.
    xy, words = np.array([[40.0, 40.0]]), np.array([0])
    windows = geo.cell_windows(*geo.grid_size(160, 160, 16), **DEFAULT)
    scores = rr.score_windows(xy, words, 160, 160, [0], [1.0], np.ones(1), windows=windows, cell=16)
    first = windows[np.flatnonzero(np.isclose(scores, 1.0))[0]]
    _, box = rr.best_window(xy, words, 160, 160, [0], [1.0], np.ones(1), cell=16, **DEFAULT)
    assert box.tolist() == geo.cell_boxes(first, 16, 160, 160)[0].tolist()


# ------------------------------------------------------------------------------------------------
# rerank


def _database(rng, n, k):
    maps = []
    for i in range(n):
        m = int(rng.integers(20, 200))
        maps.append((rng.uniform(0, [160, 120], (m, 2)), rng.integers(0, k, m), 160, 120))
    maps[3] = (np.zeros((0, 2)), np.zeros(0, np.int64), 160, 120)  # an image without features
    maps[5] = maps[1]  # identical images: a tie
    maps[8] = maps[1]
    return maps


def test_rerank_ordering_contract():
    rng = np.random.default_rng(4)
    k, n, top = 25, 12, 8
    idf = rng.uniform(0.5, 2, k)
    maps = _database(rng, n, k)
    queries = [rr.query_arrays((rng.choice(k, 6, replace=False), rng.uniform(0.5, 2, 6))) for _ in range(3)]
    queries.append(rr.query_arrays((np.array([1]), np.array([0.0]))))  # an empty query: all ties
    first_ranks = np.stack([rng.permutation(n) for _ in queries])
    first_ranks[0] = [8, 2, 5, 3, 1, 0, 4, 6, 7, 9, 10, 11]  # the three identical images in the top
    first_scores = np.sort(rng.uniform(0, 1, first_ranks.shape), axis=1)[:, ::-1]
    calls = []

    def get_map(i):
        calls.append(i)
        return maps[i]

    params = dict(top=top, cell=16, similarity="weighted_cosine", alpha=0.8, **DEFAULT)
    ranks, scores, boxes = rr.rerank(first_ranks, first_scores, queries, get_map, idf, **params)
    assert sorted(calls) == sorted(set(first_ranks[:, :top].ravel()))  # each image read once
    assert ranks.shape == scores.shape == first_ranks.shape and boxes.shape == (len(queries), top, 4)
    assert boxes.dtype == np.float32
    for j, (q_idx, q_val) in enumerate(queries):
        assert sorted(ranks[j, :top]) == sorted(first_ranks[j, :top])
        assert np.array_equal(ranks[j, top:], first_ranks[j, top:])  # the rest in first-stage order
        assert (np.diff(scores[j]) <= 0).all()  # scores never increase along the ranking
        assert scores[j, top:].max() < scores[j, :top].min()
        np.testing.assert_allclose(np.diff(scores[j, top:]), np.diff(first_scores[j, top:]))
        for r, image in enumerate(ranks[j, :top]):
            s, box = rr.best_window(*maps[image], q_idx, q_val, idf, cell=16, similarity="weighted_cosine",
                                    alpha=0.8, **DEFAULT)
            assert scores[j, r] == pytest.approx(s, abs=1e-9)
            np.testing.assert_array_equal(boxes[j, r], box)  # NaN where the image has no feature
        # Stable: equal scores keep their first-stage order.
        first_pos = {im: p for p, im in enumerate(first_ranks[j])}
        for a, b in zip(ranks[j, :top - 1], ranks[j, 1:top]):
            if scores[j, list(ranks[j]).index(a)] == scores[j, list(ranks[j]).index(b)]:
                assert first_pos[a] < first_pos[b]
    tied = [im for im in ranks[0, :top] if im in (1, 5, 8)]
    assert tied == [8, 5, 1]  # identical images: first-stage order
    assert np.array_equal(ranks[3], first_ranks[3])  # an empty query changes nothing
    assert np.isnan(boxes[0, list(ranks[0, :top]).index(3)]).all()


def test_rerank_accepts_a_sparse_query_matrix_and_short_lists():
    rng = np.random.default_rng(9)
    k, n = 20, 5
    idf = np.ones(k)
    maps = _database(rng, 10, k)[:n]
    q = sp.csr_matrix(rng.integers(0, 3, (2, k)) * (rng.random((2, k)) < 0.5), dtype=np.float32)
    first_ranks = np.stack([rng.permutation(n) for _ in range(2)])
    first_scores = np.tile(np.linspace(1, 0, n), (2, 1))
    params = dict(top=100, cell=16, **DEFAULT)  # top beyond the list: everything is re-ranked
    a = rr.rerank(first_ranks, first_scores, q, maps.__getitem__, idf, **params)
    b = rr.rerank(first_ranks, first_scores, [(q[j].indices, q[j].data) for j in range(2)], maps.__getitem__, idf,
                  **params)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[2].shape == (2, n, 4)


def test_rerank_rejects_mismatched_inputs():
    with pytest.raises(InstanceSearchError):
        rr.rerank(np.zeros((2, 3), int), np.zeros((2, 3)), [([0], [1.0])], lambda i: None, np.ones(2), top=2,
                  cell=16, **DEFAULT)
    with pytest.raises(InstanceSearchError):
        rr.rerank(np.zeros((1, 3), int), np.zeros((1, 3)), [([0], [1.0])], lambda i: None, np.ones(2), top=2,
                  cell=16, similarity="euclid", **DEFAULT)


# ------------------------------------------------------------------------------------------------
# Inputs


def test_query_arrays_normalises():
    idx, val = rr.query_arrays(([5, 1, 5, 3], [1.0, 2.0, 0.5, 0.0]))
    assert idx.tolist() == [1, 5] and val.tolist() == [2.0, 1.5]
    row = sp.csr_matrix(([2.0, 1.5], ([0, 0], [1, 5])), shape=(1, 8))
    idx2, val2 = rr.query_arrays(row)
    assert idx2.tolist() == [1, 5] and val2.tolist() == [2.0, 1.5]
    with pytest.raises(InstanceSearchError):
        rr.query_arrays(sp.csr_matrix(np.ones((2, 3))))


def test_bad_maps_are_clear_errors():
    windows = [[0, 0, 1, 1]]
    with pytest.raises(InstanceSearchError, match="words outside"):
        rr.score_windows([[1, 1]], [7], 10, 10, [0], [1.0], np.ones(3), windows=windows, cell=16)
    with pytest.raises(InstanceSearchError, match="positions"):
        rr.score_windows([[1, 1], [2, 2]], [0], 10, 10, [0], [1.0], np.ones(3), windows=windows, cell=16)
    with pytest.raises(InstanceSearchError, match="query has words outside"):
        rr.score_windows([[1, 1]], [0], 10, 10, [3], [1.0], np.ones(3), windows=windows, cell=16)
    with pytest.raises(InstanceSearchError, match="inside"):
        rr.score_windows([[1, 1]], [0], 10, 10, [0], [1.0], np.ones(3), windows=[[0, 0, 2, 1]], cell=16)
    with pytest.raises(InstanceSearchError, match="weight_absent"):
        rr.score_windows([[1, 1]], [0], 10, 10, [0], [1.0], np.ones(3), windows=windows, cell=16,
                         similarity="weighted_cosine", alpha=-1)
