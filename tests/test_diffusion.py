"""Alpha-QE and diffusion (retrieval/diffusion.py) against hand computations and dense references."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from instance_search.errors import InstanceSearchError
from instance_search.retrieval import diffusion
from instance_search.retrieval.diffusion import (
    Diffusion,
    alpha_qe,
    check,
    knn_graph,
    normalise,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _circle(degrees):
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


# ---------------------------------------------------------------- alpha-QE

# q = (1, 0, 0); its cosines with the database: d0 0.6, d1 0, d2 -0.6, d3 0.8.
Q = np.array([[1.0, 0.0, 0.0]])
DB = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [-0.6, 0.8, 0.0], [0.8, 0.0, 0.6]])
TOP = np.array([[3, 0, 2, 1]])


def test_alpha_qe_by_hand():
    # alpha = 1, n = 3 (d3, d0, d2): weights 0.8, 0.6, max(0, -0.6) = 0
    # q + 0.8 d3 + 0.6 d0 = (1 + 0.64 + 0.36, 0.48, 0.48) = (2, 0.48, 0.48); |.|^2 = 4 + 2 * 0.2304 = 4.4608
    got = alpha_qe(Q, DB, TOP, 3, 1.0)
    np.testing.assert_allclose(got, [[2.0, 0.48, 0.48]] / np.sqrt(4.4608), atol=1e-12)
    # alpha = 3: weights 0.512, 0.216, 0 -> (1 + 0.4096 + 0.1296, 0.1728, 0.3072) = (1.5392, 0.1728, 0.3072)
    got = alpha_qe(Q, DB, TOP, 3, 3.0)
    expect = np.array([1.5392, 0.1728, 0.3072])
    np.testing.assert_allclose(got[0], expect / np.sqrt(1.5392**2 + 0.1728**2 + 0.3072**2), atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (1, 3)


def test_alpha_qe_negative_similarity_adds_nothing():
    # n = 1 with d2 (cosine -0.6) first: weight max(0, -0.6)^2 = 0, so q comes back unchanged
    np.testing.assert_allclose(alpha_qe(Q, DB, np.array([[2, 3]]), 1, 2.0), Q, atol=0)


def test_alpha_zero_is_average_query_expansion():
    # every weight is 0^0 = 1: (q + d3 + d0 + d2) = (1 + 0.8 + 0.6 - 0.6, 0 + 0 + 0.8 + 0.8, 0.6) = (1.8, 1.6, 0.6)
    got = alpha_qe(2 * Q, DB, TOP, 3, 0.0)  # the query's length does not matter
    np.testing.assert_allclose(got[0], np.array([1.8, 1.6, 0.6]) / np.sqrt(1.8**2 + 1.6**2 + 0.6**2), atol=1e-12)
    # the same as averaging the normalised vectors (the 1 / (1 + n) vanishes in the l2)
    rng = np.random.default_rng(0)
    q, db = rng.normal(size=(4, 6)), rng.normal(size=(20, 6))
    top = np.argsort(-(q @ db.T), axis=1)
    mean = (_unit(q) + _unit(db[top[:, :5]]).sum(axis=1)) / 6
    np.testing.assert_allclose(alpha_qe(q, db, top, 5, 0.0), _unit(mean), atol=1e-12)


def test_alpha_qe_matches_a_per_query_loop_in_small_blocks(monkeypatch):
    monkeypatch.setattr(diffusion, "_BLOCK_ENTRIES", 40)  # 1 query per block
    rng = np.random.default_rng(1)
    q, db = rng.normal(size=(7, 8)), rng.normal(size=(30, 8))
    top = np.argsort(-(q @ db.T), axis=1)
    expect = []
    for i in range(len(q)):
        d = _unit(db[top[i, :4]])
        w = np.maximum(d @ _unit(q[i]), 0) ** 3
        expect.append(_unit(_unit(q[i]) + w @ d))
    np.testing.assert_allclose(alpha_qe(q, db, top, 4, 3.0), expect, atol=1e-12)
    # n beyond the ranking's length uses what there is
    np.testing.assert_array_equal(alpha_qe(q, db, top, 1000, 3.0), alpha_qe(q, db, top, 30, 3.0))


def test_alpha_qe_bad_input():
    with pytest.raises(InstanceSearchError, match=r"^gem\.expand\.neighbours=0:"):
        alpha_qe(Q, DB, TOP, 0, 1.0)
    with pytest.raises(InstanceSearchError, match=r"^gem\.expand\.alpha=-1\.0:"):
        alpha_qe(Q, DB, TOP, 2, -1.0)
    with pytest.raises(InstanceSearchError, match="outside"):
        alpha_qe(Q, DB, np.array([[4]]), 1, 1.0)
    with pytest.raises(InstanceSearchError, match="dimensions"):
        alpha_qe(Q[:, :2], DB, TOP, 1, 1.0)


# ---------------------------------------------------------------- kNN graph

# Five points on the unit circle at a 0, b 20, c 60, d 110, e 250 degrees; k = 2 (angular distances):
#   a: b 20, c 60 (e 110)  -> {b, c}      b: a 20, c 40 -> {a, c}      c: b 40, d 50 (a 60) -> {b, d}
#   d: c 50, b 90          -> {c, b}      e: a 110, d 140 -> {a, d}
# mutual: a-b, b-c, c-d; a-c (c lacks a), d-b (b lacks d), e-a, e-d are one-sided; e is isolated.
CIRCLE = _circle([0, 20, 60, 110, 250])


def _circle_w(gamma):
    ab, bc, cd = (np.cos(np.radians(x)) ** gamma for x in (20, 40, 50))
    return np.array([[0, ab, 0, 0, 0],
                     [ab, 0, bc, 0, 0],
                     [0, bc, 0, cd, 0],
                     [0, 0, cd, 0, 0],
                     [0, 0, 0, 0, 0]])


def test_knn_graph_by_hand():
    w = knn_graph(CIRCLE, 2, 2.0)
    assert sp.isspmatrix_csr(w) and w.dtype == np.float64
    np.testing.assert_allclose(w.toarray(), _circle_w(2.0), atol=1e-15)
    assert (w != w.T).nnz == 0 and not w.diagonal().any()
    assert w.nnz == 6  # no stored zeros
    np.testing.assert_allclose(knn_graph(CIRCLE, 2, 3.0).toarray(), _circle_w(3.0), atol=1e-15)


def test_knn_graph_negative_similarity_is_no_edge_and_k_is_capped():
    # two opposite points are mutual neighbours with cosine -1: weight max(0, -1)^gamma = 0
    assert knn_graph(_circle([0, 180]), 1, 1.0).nnz == 0
    # k beyond N - 1 means every other vector: the complete graph on the positive similarities
    w = knn_graph(_circle([0, 30, 60]), 10, 1.0).toarray()
    c30, c60 = np.cos(np.radians(30)), np.cos(np.radians(60))
    np.testing.assert_allclose(w, [[0, c30, c60], [c30, 0, c30], [c60, c30, 0]], atol=1e-15)


def test_knn_graph_ties_go_to_the_lower_index():
    # three copies of p and one r: k = 1 ties among the copies -> NN(0) = 1, NN(1) = 0, NN(2) = 0;
    # NN(3) = 0 (ties again); mutual only 0-1, weight (p.p)^1 = 1
    db = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expect = np.zeros((4, 4))
    expect[0, 1] = expect[1, 0] = 1.0
    np.testing.assert_array_equal(knn_graph(db, 1, 1.0).toarray(), expect)


def _dense_mutual_knn(db, k, gamma):
    s = db @ db.T
    np.fill_diagonal(s, -np.inf)
    nn = np.argsort(-s, axis=1, kind="stable")[:, :k]
    a = np.zeros_like(s)
    for i, row in enumerate(nn):
        a[i, row] = np.maximum(s[i, row], 0) ** gamma
    return np.where((a > 0) & (a.T > 0), np.minimum(a, a.T), 0.0)


def test_knn_graph_in_small_blocks_matches_a_dense_reference(monkeypatch):
    # coarse integer coordinates make many exact ties; 50 entries per block = 1 row per block
    rng = np.random.default_rng(2)
    db = rng.integers(-2, 3, size=(50, 3)).astype(np.float64)
    expect = _dense_mutual_knn(db, 6, 2.0)
    monkeypatch.setattr(diffusion, "_BLOCK_ENTRIES", 50)
    np.testing.assert_array_equal(knn_graph(db, 6, 2.0).toarray(), expect)


# ---------------------------------------------------------------- normalisation

def test_normalise_by_hand():
    # degrees 1, 5, 4, 0: S_01 = 1 / sqrt(1 * 5), S_12 = 4 / sqrt(5 * 4) = 2 / sqrt(5); node 3 stays zero
    w = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 4, 0], [0, 4, 0, 0], [0, 0, 0, 0]], dtype=float))
    r5 = 1 / np.sqrt(5)
    expect = np.array([[0, r5, 0, 0], [r5, 0, 2 * r5, 0], [0, 2 * r5, 0, 0], [0, 0, 0, 0]])
    s = normalise(w)
    assert sp.isspmatrix_csr(s)
    np.testing.assert_allclose(s.toarray(), expect, atol=1e-15)
    assert (s != s.T).nnz == 0


# ---------------------------------------------------------------- diffusion

def test_diffusion_solves_the_linear_system():
    d = Diffusion(CIRCLE, 2, 2.0, 0.9)
    s_dense = normalise(_circle_w(2.0)).toarray()
    np.testing.assert_allclose(d.S.toarray(), s_dense, atol=1e-15)
    np.testing.assert_allclose(d.system.toarray(), np.eye(5) - 0.9 * s_dense, atol=1e-15)
    # query at 10 degrees, query_k = 2: nearest a (cos 10), b (cos 10; tie, both kept)
    q = _circle([10])
    y = np.zeros((1, 5))
    y[0, :2] = np.cos(np.radians(10)) ** 2
    np.testing.assert_allclose(d.initial(q, 2), y, atol=1e-15)
    f = np.linalg.solve(np.eye(5) - 0.9 * s_dense, y[0])
    ranks, scores = d.rank(q, 2, 50, 1e-14)
    assert ranks.dtype == np.int64 and scores.dtype == np.float64 and ranks.shape == scores.shape == (1, 5)
    np.testing.assert_allclose(scores[0], f[ranks[0]], atol=1e-8)
    assert (np.diff(scores[0]) <= 0).all()
    # e is unreachable: score 0, last
    assert ranks[0, -1] == 4 and scores[0, -1] == 0


def test_diffusion_matches_dense_solution_on_a_random_graph():
    rng = np.random.default_rng(3)
    db = rng.normal(size=(40, 5))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = rng.normal(size=(3, 5))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d = Diffusion(db, 6, 3.0, 0.99)
    s_dense = normalise(_dense_mutual_knn(db, 6, 3.0)).toarray()
    np.testing.assert_allclose(d.S.toarray(), s_dense, atol=1e-14)
    y = d.initial(q, 5)
    assert ((y > 0).sum(axis=1) <= 5).all()
    f = np.linalg.solve(np.eye(40) - 0.99 * s_dense, y.T).T
    np.testing.assert_allclose(d.solve(y, 200, 1e-15), f, atol=1e-8)
    # a truncated solve (few iterations) is not the solution: the step limit is honoured
    assert np.abs(d.solve(y, 2, 1e-15) - f).max() > 1e-3


def test_equal_scores_keep_database_order():
    # two components {0, 1} and {2, 3, 4} (copies): a query near 0 reaches only {0, 1}; the rest score 0
    db = np.array([[1.0, 0.0], [np.cos(0.1), np.sin(0.1)], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    d = Diffusion(db, 1, 1.0, 0.5)
    ranks, scores = d.rank(np.array([[1.0, 0.0]]), 1, 20, 1e-12)
    np.testing.assert_array_equal(ranks, [[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(scores[0, 2:], 0.0)
    # query_k ties go to the lower index: the copies 2, 3, 4 tie for the nearest, 2 gets y
    np.testing.assert_array_equal(d.initial(np.array([[0.0, 1.0]]), 1)[0] > 0, [False, False, True, False, False])
    # a query with no positive similarity: f = 0 everywhere, database order
    ranks, scores = d.rank(np.array([[-1.0, -1.0]]), 2, 20, 1e-12)
    np.testing.assert_array_equal(ranks, [[0, 1, 2, 3, 4]])
    assert not scores.any()
    # a long tie among scattered indices (an unstable sort reorders it): even indices on an arc around
    # the query, odd ones copies of (0, 1) in their own component, unreached, so they score 0
    a = np.radians(np.linspace(-30, 30, 31))
    many = np.zeros((62, 2))
    many[0::2] = np.stack([np.cos(a), np.sin(a)], axis=1)
    many[1::2] = [0.0, 1.0]
    ranks, scores = Diffusion(many, 2, 1.0, 0.5).rank(np.array([[1.0, 0.0]]), 3, 50, 1e-12)
    zero = ranks[0][scores[0] == 0]
    assert len(zero) >= 31 and (np.diff(zero) > 0).all()


def test_diffusion_follows_the_manifold():
    # a chain on an arc every 10 degrees from 0 to 150, and a distractor off the arc's plane at 60 degrees
    # from the query (cosine 0.5, but 60 degrees from every chain point: no mutual neighbour)
    a = np.radians(np.arange(0, 160, 10))
    chain = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)
    db = np.vstack([chain, [[0.5, 0.0, np.sqrt(0.75)]]])
    q = np.array([[1.0, 0.0, 0.0]])
    cosine = (q @ db.T)[0]
    far, distractor = 15, 16
    assert cosine[far] < 0 < cosine[distractor]
    plain = np.argsort(-cosine, kind="stable")
    assert list(plain).index(distractor) < list(plain).index(far)
    # even with the distractor in y (query_k = all), diffusion puts the whole chain first
    ranks, scores = Diffusion(db, 2, 3.0, 0.99).rank(q, 17, 100, 1e-12)
    assert ranks[0, -1] == distractor
    assert scores[0, -2] > 10 * scores[0, -1] > 0


def test_deterministic():
    rng = np.random.default_rng(4)
    db = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(5, 16))
    one = Diffusion(db, 10, 3.0, 0.99)
    two = Diffusion(db.copy(), 10, 3.0, 0.99)
    for m in ("S", "system"):
        x, y = getattr(one, m), getattr(two, m)
        assert (x != y).nnz == 0 and np.array_equal(x.indices, y.indices) and np.array_equal(x.data, y.data)
    r1, s1 = one.rank(q, 10, 20, 1e-6)
    r2, s2 = two.rank(q, 10, 20, 1e-6)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)


# ---------------------------------------------------------------- parameters

GOOD = {"expand": {"alpha": 3.0, "neighbours": 2},
        "rerank": {"diffusion": {"k": 50, "alpha": 0.99, "gamma": 3.0, "query_k": 10, "iterations": 20, "tol": 1e-6}}}


@pytest.mark.parametrize("key, value", [
    ("gem.expand.alpha", -0.5), ("gem.expand.alpha", float("nan")),
    ("gem.expand.neighbours", 0), ("gem.expand.neighbours", 2.5),
    ("gem.rerank.diffusion.k", 0), ("gem.rerank.diffusion.k", True),
    ("gem.rerank.diffusion.alpha", 1.5), ("gem.rerank.diffusion.alpha", 0.0), ("gem.rerank.diffusion.alpha", 1.0),
    ("gem.rerank.diffusion.gamma", 0.0), ("gem.rerank.diffusion.gamma", "3"),
    ("gem.rerank.diffusion.query_k", 0), ("gem.rerank.diffusion.iterations", 0),
    ("gem.rerank.diffusion.tol", 0.0), ("gem.rerank.diffusion.tol", -1e-6),
])
def test_check_names_the_key(key, value):
    *path, name = key.split(".")
    nested = copy.deepcopy({"gem": GOOD})
    check(nested)  # the good values pass
    node = nested
    for part in path:
        node = node[part]
    node[name] = value
    with pytest.raises(InstanceSearchError, match="^" + key.replace(".", r"\.") + "="):
        check(nested)
    with pytest.raises(InstanceSearchError, match="^" + key.replace(".", r"\.") + "="):
        check({key: value})


def test_diffusion_checks_its_arguments():
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.diffusion\.alpha=1\.5: must be in \(0, 1\)$"):
        Diffusion(CIRCLE, 2, 3.0, 1.5)
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.diffusion\.k=0:"):
        Diffusion(CIRCLE, 0, 3.0, 0.5)
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.diffusion\.gamma=0:"):
        knn_graph(CIRCLE, 2, 0)
    d = Diffusion(CIRCLE, 2, 3.0, 0.5)
    for args, key in [((0, 20, 1e-6), "query_k"), ((2, 0, 1e-6), "iterations"), ((2, 20, 0.0), "tol")]:
        with pytest.raises(InstanceSearchError, match=rf"^gem\.rerank\.diffusion\.{key}="):
            d.rank(CIRCLE[:1], *args)
