"""Similarities against their dense formulas; ranking ties; box queries."""

import numpy as np
import pytest
import scipy.sparse as sp

from instance_search import search
from instance_search.bow import AssignmentMaps, counts_matrix, word_weights
from instance_search.groundtruth import GroundTruth, Image, Query


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
    got_c = search.cosine(sp.csr_matrix(q), sp.csr_matrix(d))
    got_w = search.weighted_cosine(sp.csr_matrix(q), sp.csr_matrix(d), alpha)
    for i in range(5):
        for j in range(40):
            assert got_c[i, j] == pytest.approx(_dense_cosine(q[i], d[j]), abs=1e-9)
            assert got_w[i, j] == pytest.approx(_dense_weighted_cosine(q[i], d[j], alpha), abs=1e-9)


def test_weighted_cosine_with_alpha_one_is_cosine():
    rng = np.random.default_rng(2)
    q = sp.random(3, 50, density=0.2, random_state=3, format="csr")
    d = sp.random(20, 50, density=0.3, random_state=4, format="csr")
    np.testing.assert_allclose(search.weighted_cosine(q, d, 1.0), search.cosine(q, d), atol=1e-12)


def test_hand_computed_weighted_cosine():
    # q = (1, 0), d = (1, 1), alpha = 0.8: num = 1; |q|_w = 1; |d|_w = sqrt(1 + 0.8) -> 1/sqrt(1.8)
    q, d = sp.csr_matrix([[1.0, 0.0]]), sp.csr_matrix([[1.0, 1.0]])
    assert search.weighted_cosine(q, d, 0.8)[0, 0] == pytest.approx(1 / np.sqrt(1.8))
    assert search.cosine(q, d)[0, 0] == pytest.approx(1 / np.sqrt(2))


def test_rank_is_stable_on_ties():
    ranks, scores = search.rank(np.array([[0.5, 0.9, 0.5, 0.9, 0.1]]))
    assert ranks.tolist() == [[1, 3, 0, 2, 4]]
    np.testing.assert_allclose(scores, [[0.9, 0.9, 0.5, 0.5, 0.1]], rtol=1e-6)


def _one_image_index():
    xy = np.array([[5, 5], [15, 5], [50, 40], [55, 45]], np.float32)
    words = np.array([0, 1, 2, 2], np.int32)
    maps = AssignmentMaps(xy, words, np.array([0, 4]), np.array([64]), np.array([48]))
    img = Image("a", "a.jpg", 64, 48)
    return maps, img


def test_ls_query_uses_only_features_in_the_box_and_gs_all():
    maps, img = _one_image_index()
    gnd = GroundTruth("t", ".", [img], 1, [Query("q", 0, (0, 0, 20, 20), (0,))])
    ls = search.query_counts(gnd, maps, 3, "ls").toarray()
    gs = search.query_counts(gnd, maps, 3, "gs").toarray()
    assert ls.tolist() == [[1, 1, 0]]
    assert gs.tolist() == [[1, 1, 2]]


def test_box_without_features_falls_back_to_whole_image(caplog):
    maps, img = _one_image_index()
    gnd = GroundTruth("t", ".", [img], 1, [Query("empty", 0, (30, 0, 40, 10), (0,))])
    got = search.query_counts(gnd, maps, 3, "ls").toarray()
    assert got.tolist() == [[1, 1, 2]]
    assert "empty" in caplog.text


def test_idf_and_counts():
    words = np.array([0, 0, 1, 2, 1], np.int32)
    offsets = np.array([0, 3, 5, 5])  # image 2 has no feature
    m = counts_matrix(words, offsets, 4)
    assert m.toarray().tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    idf = word_weights(m, 3, "tfidf")
    # df = (1, 2, 1, 0 -> 1): idf = log(3/1), log(3/2), log(3), log(3)
    np.testing.assert_allclose(idf, np.log([3, 1.5, 3, 3]), rtol=1e-6)
    assert word_weights(m, 3, "tf").tolist() == [1, 1, 1, 1]
