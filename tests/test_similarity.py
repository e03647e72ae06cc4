"""Similarities against their dense formulas (sparse and dense); ranking ties; box queries."""

import numpy as np
import pytest
import scipy.sparse as sp

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.groundtruth import GroundTruth, Image, Query
from instance_search.methods.bow import BowDatabase
from instance_search.retrieval.bow import AssignmentMaps, counts_matrix, word_weights
from instance_search.retrieval.ranking import rank
from instance_search.retrieval.similarity import scores


def cosine(q, d):
    return scores(q, d, "cosine")


def weighted_cosine(q, d, alpha):
    return scores(q, d, "weighted_cosine", alpha)


def _dense_weighted_cosine(q, d, alpha):
    w = np.where(q != 0, 1.0, alpha)
    num = (w * q * d).sum()
    den = np.sqrt((w * q * q).sum()) * np.sqrt((w * d * d).sum())
    return num / den if den > 0 else 0.0


def _dense_cosine(q, d):
    den = np.linalg.norm(q) * np.linalg.norm(d)
    return q @ d / den if den > 0 else 0.0


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_similarities_match_dense_formulas(alpha):
    rng = np.random.default_rng(1)
    q = rng.random((5, 30)) * (rng.random((5, 30)) < 0.3)
    d = rng.random((40, 30)) * (rng.random((40, 30)) < 0.4)
    d[3] = 0  # an empty database image scores 0, not NaN
    got_c = cosine(sp.csr_matrix(q), sp.csr_matrix(d))
    got_w = weighted_cosine(sp.csr_matrix(q), sp.csr_matrix(d), alpha)
    for i in range(5):
        for j in range(40):
            assert got_c[i, j] == pytest.approx(_dense_cosine(q[i], d[j]), abs=1e-9)
            assert got_w[i, j] == pytest.approx(_dense_weighted_cosine(q[i], d[j], alpha), abs=1e-9)


def test_weighted_cosine_with_alpha_one_is_cosine():
    q = sp.random(3, 50, density=0.2, random_state=3, format="csr")
    d = sp.random(20, 50, density=0.3, random_state=4, format="csr")
    np.testing.assert_allclose(weighted_cosine(q, d, 1.0), cosine(q, d), atol=1e-12)


def test_hand_computed_weighted_cosine():
    # q = (1, 0), d = (1, 1), alpha = 0.8: num = 1; |q|_w = 1; |d|_w = sqrt(1 + 0.8) -> 1/sqrt(1.8)
    q, d = sp.csr_matrix([[1.0, 0.0]]), sp.csr_matrix([[1.0, 1.0]])
    assert weighted_cosine(q, d, 0.8)[0, 0] == pytest.approx(1 / np.sqrt(1.8))
    assert cosine(q, d)[0, 0] == pytest.approx(1 / np.sqrt(2))


def test_rank_is_stable_on_ties():
    ranks, scores = rank(np.array([[0.5, 0.9, 0.5, 0.9, 0.1]]))
    assert ranks.tolist() == [[1, 3, 0, 2, 4]]
    np.testing.assert_allclose(scores, [[0.9, 0.9, 0.5, 0.5, 0.1]], rtol=1e-6)


def _one_image_index():
    xy = np.array([[5, 5], [15, 5], [50, 40], [55, 45]], np.float32)
    words = np.array([0, 1, 2, 2], np.int32)
    maps = AssignmentMaps(xy, words, np.array([0, 4]), np.array([64]), np.array([48]))
    img = Image("a", "a.jpg", 64, 48)
    return maps, img


def _queries(gnd, maps, method="sift"):
    """The method's benchmark queries over a one-image index (unit word weights: the counts themselves)."""
    db = BowDatabase(counts_matrix(maps.words, maps.offsets, 3), np.ones(3), 1, maps)
    return methods.get(method).benchmark_queries(db, gnd)


def test_ls_query_uses_only_features_in_the_box_and_gs_all():
    maps, img = _one_image_index()
    gnd = GroundTruth("t", ".", [img], 1, [Query("q", 0, (0, 0, 20, 20), (0,))])
    q = _queries(gnd, maps)
    assert q.box.toarray().tolist() == [[1, 1, 0]]
    assert q.image.toarray().tolist() == [[1, 1, 2]]


def test_box_without_features_falls_back_to_whole_image_or_nearest_feature(caplog):
    maps, img = _one_image_index()
    gnd = GroundTruth("t", ".", [img], 1, [Query("empty", 0, (30, 0, 40, 10), (0,))])
    assert _queries(gnd, maps, "sift").box.toarray().tolist() == [[1, 1, 2]]  # keypoints: the whole image
    assert "empty" in caplog.text
    # a CNN map tiles the image: the feature nearest the box centre (35, 5) is the one at (15, 5)
    assert _queries(gnd, maps, "blcf").box.toarray().tolist() == [[0, 1, 0]]


def test_dense_and_sparse_give_the_same_similarities():
    rng = np.random.default_rng(5)
    q = rng.random((4, 12)) * (rng.random((4, 12)) < 0.5)
    d = rng.random((9, 12)) * (rng.random((9, 12)) < 0.5)
    for name in ("cosine", "weighted_cosine"):
        np.testing.assert_allclose(scores(q, d, name, 0.3), scores(sp.csr_matrix(q), sp.csr_matrix(d), name, 0.3),
                                   atol=1e-12)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_one_check_of_the_absent_word_weight(alpha):
    """The same validation for every caller: first stage, window re-ranking, proposals."""
    with pytest.raises(InstanceSearchError, match="weight_absent"):
        scores(np.ones((1, 2)), np.ones((1, 2)), "weighted_cosine", alpha)
    from instance_search.retrieval import windows

    with pytest.raises(InstanceSearchError, match="weight_absent"):
        windows.score_windows([[1, 1]], [0], 8, 8, [0], [1.0], np.ones(1), windows=[[0, 0, 1, 1]], cell=8,
                              similarity="weighted_cosine", alpha=alpha)


def test_idf_and_counts():
    words = np.array([0, 0, 1, 2, 1], np.int32)
    offsets = np.array([0, 3, 5, 5])  # image 2 has no feature
    m = counts_matrix(words, offsets, 4)
    assert m.toarray().tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    idf = word_weights(m, 3, "tfidf")
    # df = (1, 2, 1, 0 -> 1): idf = log(3/1), log(3/2), log(3), log(3)
    np.testing.assert_allclose(idf, np.log([3, 1.5, 3, 3]), rtol=1e-6)
    assert word_weights(m, 3, "tf").tolist() == [1, 1, 1, 1]
