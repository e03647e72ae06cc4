"""Spatial verification as the bag-of-words methods' re-ranking (rerank.mode: sv), on a hand-made index:
a candidate holding the query's object moved by a known translation beats one with the same words in
scrambled places when the inliers weigh enough against the first stage, and the located region is
the moved query box."""

import numpy as np
import pytest
import scipy.sparse as sp

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.methods.base import Queries
from instance_search.methods.bow import BowDatabase
from instance_search.retrieval import bow
from instance_search.retrieval.ranking import Ranking

SV = {"model": "affine", "threshold": 3.0, "cap": 2, "max_iters": 500, "confidence": 0.999, "min_inliers": 4,
      "seed": 0, "weight": 1.0, "hamming": 1.0, "score": "inliers"}
SHIFT = np.array([100.0, 40.0])
BOX = (10.0, 10.0, 210.0, 160.0)


def _index():
    """Image 0: the object, 30 features with distinct words inside BOX; image 1: the same features
    moved by SHIFT (the object elsewhere); image 2: the same words at random places (no object)."""
    rng = np.random.default_rng(3)
    xy = rng.uniform([15, 15], [205, 155], size=(30, 2)).astype(np.float32)
    words = np.arange(30, dtype=np.int32)
    scrambled = rng.uniform([0, 0], [400, 300], size=(30, 2)).astype(np.float32)
    maps = bow.AssignmentMaps(xy=np.concatenate([xy, xy + SHIFT, scrambled]).astype(np.float32),
                              words=np.concatenate([words, words, words]),
                              offsets=np.array([0, 30, 60, 90], np.int64),
                              width=np.full(3, 400, np.int32), height=np.full(3, 300, np.int32))
    counts = bow.counts_matrix(maps.words, maps.offsets, 30)
    db = BowDatabase(sp.csr_matrix(counts), np.ones(30), 3, maps)
    queries = Queries(["q"], box=None, image=None, extra={"points": [(xy, words, None, BOX)]})
    return db, queries


def _params(mode="sv", candidates=3, **sv):
    return {"rerank": {"mode": mode, "candidates": candidates, "sv": {**SV, **sv}}}


def test_verified_candidate_moves_up_and_carries_the_moved_box():
    db, queries = _index()
    sift = methods.get("sift")
    # the first stage put the scrambled image first (its score ties: only the layout tells them apart)
    first = Ranking(np.array([[2, 1, 0]], np.int32), np.array([[0.9, 0.8, 0.7]], np.float32))
    got = sift.rerank(db, queries, first, _params(), "cosine", 0.8)
    assert got.ranks[0].tolist() == [1, 0, 2]  # 0 and 1 both verified with 30: the first stage orders them
    # every feature an inlier of the translation: first-stage score + 1 x 30
    np.testing.assert_allclose(got.scores[0, :2], [30.8, 30.7], rtol=1e-6)
    np.testing.assert_allclose(got.scores[0, 2], 0.9, rtol=1e-6)  # the scrambled image: below min_inliers, + 0
    np.testing.assert_allclose(got.boxes[0, 0], [BOX[0] + 100, BOX[1] + 40, BOX[2] + 100, BOX[3] + 40], atol=0.5)
    np.testing.assert_allclose(got.boxes[0, 1], BOX, atol=0.5)
    assert np.isnan(got.boxes[0, 2]).all()


def test_only_the_top_candidates_are_verified():
    db, queries = _index()
    first = Ranking(np.array([[2, 0, 1]], np.int32), np.array([[0.9, 0.8, 0.7]], np.float32))
    got = methods.get("sift").rerank(db, queries, first, _params(candidates=2), "cosine", 0.8)
    assert got.ranks[0].tolist() == [0, 2, 1] and got.boxes.shape == (1, 2, 4)


def test_a_bad_mode_or_setting_is_named():
    db, queries = _index()
    first = Ranking(np.array([[0, 1, 2]], np.int32), np.array([[0.9, 0.8, 0.7]], np.float32))
    with pytest.raises(InstanceSearchError, match="sift.rerank.mode='ransac'"):
        methods.get("sift").rerank(db, queries, first, _params(mode="ransac"), "cosine", 0.8)
    p = _params()
    p["rerank"]["sv"]["threshold"] = -1
    with pytest.raises(InstanceSearchError, match="sift.rerank.sv.threshold"):
        methods.get("sift").rerank(db, queries, first, p, "cosine", 0.8)
    with pytest.raises(InstanceSearchError, match="sift.rerank.sv.weight"):
        methods.get("sift").rerank(db, queries, first, _params(weight=-0.5), "cosine", 0.8)


@pytest.mark.parametrize("weight, order", [(0.0, [2, 1, 0]), (0.01, [2, 1, 0]), (0.1, [1, 0, 2])])
def test_the_weight_trades_inliers_against_the_first_stage_score(weight, order):
    """score = first + weight x 30 inliers for images 0 and 1, + 0 for the scrambled one: at 0.01 the
    scrambled image's 0.9 still beats 0.3 + 0.3; at 0.1 the verified ones pass it; 0 is the first stage."""
    db, queries = _index()
    first = Ranking(np.array([[2, 1, 0]], np.int32), np.array([[0.9, 0.3, 0.2]], np.float32))
    got = methods.get("sift").rerank(db, queries, first, _params(weight=weight), "cosine", 0.8)
    assert got.ranks[0].tolist() == order
    np.testing.assert_allclose(np.sort(got.scores[0])[::-1], got.scores[0])  # scores never increase
