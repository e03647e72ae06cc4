"""GeM pooling against hand computation, the multi-scale descriptor against the plain formula on a real
photo, the box crop, and the gem method's queries (alpha-QE, diffusion) through the engine."""

from pathlib import Path

import numpy as np
import pytest
from conftest import require_weights

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.features import gem
from instance_search.methods.base import Queries
from instance_search.methods.descriptors import GlobalDatabase
from instance_search.retrieval.linalg import l2

UKBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "ukbench-500" / "jpg"


def test_gem_pooling_by_hand():
    m = np.array([[1.0, 2.0], [3.0, 4.0]])[:, :, None]       # one channel over 2 x 2 cells
    assert gem.gem(m, 1.0)[0] == pytest.approx(2.5)            # p = 1: the mean
    assert gem.gem(m, 2.0)[0] == pytest.approx(np.sqrt(7.5))   # (1 + 4 + 9 + 16) / 4 = 7.5
    assert gem.gem(m, 3.0)[0] == pytest.approx(25.0 ** (1 / 3))  # (1 + 8 + 27 + 64) / 4 = 25
    assert gem.gem(m, 200.0)[0] == pytest.approx(4.0, rel=0.01)  # large p: the max
    negative = np.array([[-5.0, 0.0], [0.0, 8.0]])[:, :, None]   # clamped at eps before the power
    assert gem.gem(negative, 3.0)[0] == pytest.approx((512 / 4) ** (1 / 3), rel=1e-6)
    with pytest.raises(InstanceSearchError, match="gem.extract.p"):
        gem.gem(m, 0)


def test_crop_clips_to_the_image_and_keeps_a_pixel():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert gem.crop(img, None) is img
    assert gem.crop(img, (2.4, 1.0, 5.2, 4.0)).shape == (3, 4, 3)     # floor / ceil: x 2..6, y 1..4
    assert gem.crop(img, (-10, -10, 100, 100)).shape == img.shape
    assert gem.crop(img, (7.9, 5.9, 7.9, 5.9)).shape == (1, 1, 3)


def test_multiscale_descriptor_is_the_formula_on_the_network_maps():
    """describe() (torch, in DataLoader order) = sum over scales of L2(gem(map)) then L2, computed here
    from Extractor.maps and the numpy formula; a box query is the crop's descriptor."""
    require_weights()
    if not UKBENCH.is_dir():
        pytest.skip(f"{UKBENCH} is missing: the test reads one real photo")
    import cv2

    from instance_search.features.cnn import Extractor, Preprocess, resized_size
    from instance_search.io import read_image

    ex = Extractor("mobilenet_v2", "features.18", "cpu")
    path = str(UKBENCH / "ukbench00000.jpg")
    scales, box = [1.0, 0.5], (100.0, 80.0, 400.0, 380.0)
    got = gem.describe(ex, [path, path], [None, box], scales=scales, p=3.0, max_side=160, workers=0)
    pre = Preprocess(ex.mean, ex.std)
    for row, b in zip(got, [None, box]):
        bgr = gem.crop(read_image(path, cv2.IMREAD_COLOR), b)
        h, w = bgr.shape[:2]
        total = sum(l2(gem.gem(ex.maps(pre(bgr, resized_size(w, h, round(160 * s), ex.stride))[None])[0], 3.0))
                    for s in scales)
        np.testing.assert_allclose(row, l2(total), atol=2e-5)
    assert got.shape == (2, 1280) and not np.allclose(got[0], got[1])  # the crop is another descriptor


def _db():
    """4 database vectors: a tight pair (0, 1), a third (2) near 1 but not the query, a far one (3)."""
    v = l2(np.array([[1.0, 0.1, 0.0], [0.9, 0.4, 0.0], [0.5, 0.9, 0.0], [0.0, 0.0, 1.0]]), np.float32)
    q = l2(np.array([[1.0, 0.0, 0.0]]), np.float32)
    db = GlobalDatabase(v, {"ls": q, "gs": q}, 4)
    return db, Queries(["q"], box=q, image=q)


def _params(**over):
    p = {"search": {"query": "ls"},
         "rerank": {"mode": "none", "diffusion": {"k": 2, "gamma": 3, "alpha": 0.9, "query_k": 2, "iterations": 50,
                                                  "tol": 1e-10}},
         "expand": {"mode": "none", "alpha": 3, "neighbours": 2}}
    for k, v in over.items():
        p[k].update(v)
    return p


def test_gem_search_expand_and_diffusion_through_the_method():
    db, queries = _db()
    g = methods.get("gem")
    first = g.search(db, queries, _params(), "cosine", 0.8)
    np.testing.assert_allclose(first.scores[0], np.sort(db.vectors @ queries.box[0])[::-1], atol=1e-6)
    assert first.ranks[0].tolist() == [0, 1, 2, 3]
    assert g.rerank(db, queries, first, _params(), "cosine", 0.8).reranked == 0
    # alpha-QE: the query plus its top 2 weighted by similarity^3, searched again
    p = _params(expand={"mode": "aqe"})
    got = g.expand(db, queries, first, p, "cosine", 0.8)
    s = db.vectors[:2] @ queries.box[0]
    expanded = l2(queries.box[0] + (s[:, None] ** 3 * db.vectors[:2]).sum(0))
    np.testing.assert_allclose(got.scores[0], np.sort(db.vectors @ expanded)[::-1], atol=1e-5)
    # diffusion: the graph's scores, ranked (their own test checks the solve against a dense one)
    d = g.rerank(db, queries, first, _params(rerank={"mode": "diffusion"}), "cosine", 0.8)
    assert d.ranks[0][0] in (0, 1) and d.ranks[0][-1] == 3 and np.all(np.diff(d.scores[0]) <= 0)
    assert db.diffusion(_params()["rerank"]["diffusion"]) is db.diffusion(_params()["rerank"]["diffusion"])  # built once
    with pytest.raises(InstanceSearchError, match="gem.rerank.mode='window'"):
        g.rerank(db, queries, first, _params(rerank={"mode": "window"}), "cosine", 0.8)
    with pytest.raises(InstanceSearchError, match="gem.expand.mode='lqe'"):
        g.expand(db, queries, first, _params(expand={"mode": "lqe"}), "cosine", 0.8)
