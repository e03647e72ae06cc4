"""The database's k-NN lists, alpha-DBA (retrieval/diffusion.py) and k-reciprocal re-ranking
(retrieval/kreciprocal.py) against hand computations and a dense reference, and both through gem."""

import copy

import numpy as np
import pytest

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.methods.base import Queries
from instance_search.methods.descriptors import GlobalDatabase
from instance_search.retrieval import diffusion, kreciprocal
from instance_search.retrieval.diffusion import dba, knn
from instance_search.retrieval.kreciprocal import KReciprocal


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _circle(degrees):
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _e(degrees):
    """The kernel e^-d for two unit vectors ``degrees`` apart: d = (1 - cos) / 2."""
    return np.exp(-(1 - np.cos(np.radians(degrees))) / 2)


# ---------------------------------------------------------------- k-NN lists

def test_knn_by_hand_best_first_ties_to_the_lower_index():
    # copies 0, 1, 2 of p, and r: 0's nearest 1 then 2 (ties, lower first), then r at cosine 0
    db = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    idx, sims = knn(db, 2)
    assert idx.dtype == np.int64 and sims.dtype == np.float64
    np.testing.assert_array_equal(idx, [[1, 2], [0, 2], [0, 1], [0, 1]])
    np.testing.assert_array_equal(sims, [[1, 1], [1, 1], [1, 1], [0, 0]])
    assert knn(db, 10)[0].shape == (4, 3)                       # capped at N - 1
    assert knn(db[:1], 5)[0].shape == (1, 0)


def test_knn_in_small_blocks_matches_a_dense_sort(monkeypatch):
    rng = np.random.default_rng(5)
    db = rng.integers(-2, 3, size=(40, 3)).astype(np.float64)  # many exact ties
    s = db @ db.T
    np.fill_diagonal(s, -np.inf)
    expect = np.argsort(-s, axis=1, kind="stable")[:, :7]
    monkeypatch.setattr(diffusion, "_BLOCK_ENTRIES", 40)       # one row a block
    idx, sims = knn(db, 7)
    np.testing.assert_array_equal(idx, expect)
    np.testing.assert_array_equal(sims, np.take_along_axis(s, expect, axis=1))


# ---------------------------------------------------------------- alpha-DBA

# cosines: d0.d1 0, d0.d2 0.28, d0.d3 0.48, d1.d2 0, d1.d3 0.6, d2.d3 -0.48
DB = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [-0.6, 0.8, 0.0], [0.8, 0.0, 0.6]])


def test_dba_by_hand():
    # k = 1, alpha = 1: nearest d0 -> d3 (0.48), d1 -> d3 (0.6), d2 -> d0 (0.28), d3 -> d1 (0.6)
    expect = [[0.6 + 0.48 * 0.8, 0.8, 0.48 * 0.6],             # d0 + 0.48 d3
              [0.6 * 0.8, 0.0, 1.0 + 0.6 * 0.6],               # d1 + 0.6 d3
              [-0.6 + 0.28 * 0.6, 0.8 + 0.28 * 0.8, 0.0],      # d2 + 0.28 d0
              [0.8, 0.0, 0.6 + 0.6]]                           # d3 + 0.6 d1
    np.testing.assert_allclose(dba(DB, 1, 1.0), _unit(np.array(expect)), atol=1e-12)
    # k = 2, alpha = 0 (plain mean): d1's second nearest ties d0 / d2 at 0: d0; d2's is d1 (0 beats -0.48)
    expect = [DB[0] + DB[3] + DB[2], DB[1] + DB[3] + DB[0], DB[2] + DB[0] + DB[1], DB[3] + DB[1] + DB[0]]
    np.testing.assert_allclose(dba(DB, 2, 0.0), _unit(np.array(expect)), atol=1e-12)
    # k = 3, alpha = 2: d2's neighbours weigh 0.28^2, 0 and max(0, -0.48)^2 = 0
    np.testing.assert_allclose(dba(DB, 3, 2.0)[2], _unit(DB[2] + 0.28**2 * DB[0]), atol=1e-12)
    # k beyond N - 1 takes every other vector
    np.testing.assert_array_equal(dba(DB, 50, 1.0), dba(DB, 3, 1.0))


def test_dba_matches_a_loop_and_is_deterministic(monkeypatch):
    rng = np.random.default_rng(6)
    db = _unit(rng.normal(size=(50, 8)))
    s = db @ db.T
    np.fill_diagonal(s, -np.inf)
    expect = []
    for i in range(len(db)):
        nn = np.argsort(-s[i], kind="stable")[:5]
        expect.append(_unit(db[i] + (np.maximum(s[i, nn], 0) ** 3) @ db[nn]))
    got = dba(db, 5, 3.0)
    np.testing.assert_allclose(got, expect, atol=1e-12)
    monkeypatch.setattr(diffusion, "_BLOCK_ENTRIES", 64)
    assert dba(db.copy(), 5, 3.0).tobytes() == got.tobytes()


# ---------------------------------------------------------------- k-reciprocal: by hand

# a 0, b 20, c 60, d 110, e 240 degrees on the circle; angular distances, nearest first:
#   a: b 20, c 60, d 110, e 120     b: a 20, c 40, d 90, e 140     c: b 40, d 50, a 60, e 180
#   d: c 50, b 90, a 110, e 130     e: a 120, d 130, b 140, c 180
# k1 = 2 (h = 1):  N(x, 2) = x + its 2 nearest: a{b,c} b{a,c} c{b,d} d{c,b} e{a,d}
#   R(a, 2) = {a, b} (c lacks a)  R(b, 2) = {a, b, c}  R(c, 2) = {b, c, d}  R(d, 2) = {c, d}  R(e, 2) = {e}
#   N(x, 1): a{b} b{a} c{b} d{c} e{a} -> R(a, 1) = R(b, 1) = {a, b}, R(c, 1) = {c}, R(d, 1) = {d}, R(e, 1) = {e}
#   R*: each R(c, 1) with more than 2/3 in R(x, 2) is already inside it ({a, b} has only b in R(c, 2)):
#   R* = R(x, 2)
CIRCLE = _circle([0, 20, 60, 110, 240])
A, B, C, D, E = range(5)
V_DB = {A: {A: 1, B: _e(20)}, B: {A: _e(20), B: 1, C: _e(40)}, C: {B: _e(40), C: 1, D: _e(50)},
        D: {C: _e(50), D: 1}, E: {E: 1}}


def _rows(v):
    out = np.zeros((5, 5))
    for g, row in v.items():
        total = sum(row.values())
        for x, w in row.items():
            out[g, x] = w / total
    return out


def test_kreciprocal_database_sets_by_hand():
    kr = KReciprocal(CIRCLE, 2, 1)
    assert kr.h == 1
    np.testing.assert_allclose(kr.cut, np.cos(np.radians([60, 40, 50, 90, 130])), atol=1e-15)  # 2nd best of each
    np.testing.assert_allclose(kr.v.toarray(), _rows(V_DB), atol=1e-15)
    np.testing.assert_allclose(kr.v_qe.toarray(), _rows(V_DB), atol=1e-15)      # k2 = 1: no expansion
    assert [sorted(kr.rh[g].indices) for g in range(5)] == [[A, B], [A, B], [C], [D], [E]]
    # k2 = 2: V_qe(x) = mean of V(x) and V(x's nearest): a with b, b with a, c with b, d with c, e with a
    v = _rows(V_DB)
    np.testing.assert_allclose(KReciprocal(CIRCLE, 2, 2).v_qe.toarray(),
                               [(v[A] + v[B]) / 2, (v[B] + v[A]) / 2, (v[C] + v[B]) / 2, (v[D] + v[C]) / 2,
                                (v[E] + v[A]) / 2], atol=1e-15)


def test_kreciprocal_query_by_hand():
    # q at 5 degrees: a 5, b 15, c 55, d 105, e 125. k1 = 2: its two nearest a, b; cos 5 > a's cut cos 60
    # and cos 15 > b's cut cos 40, so R(q, 2) = {q, a, b} = R*(q) (R(a, 1) = R(b, 1) = {a, b} inside it)
    q = _circle([5])
    z = 1 + _e(5) + _e(15)
    vq = {A: _e(5) / z, B: _e(15) / z}                           # and q's own 1 / z
    v = _rows(V_DB)
    shared = {A: min(vq[A], v[A, A]) + min(vq[B], v[A, B]), B: min(vq[A], v[B, A]) + min(vq[B], v[B, B]),
              C: min(vq[B], v[C, B]), D: 0.0, E: 0.0}
    jaccard = np.array([1 - shared[g] / (2 - shared[g]) for g in range(5)])
    d = (1 - np.cos(np.radians([5, 15, 55, 105, 125]))) / 2
    kr = KReciprocal(CIRCLE, 2, 1)
    np.testing.assert_allclose(kr.distances(q, 0.3)[0], 0.7 * jaccard + 0.3 * d, atol=1e-15)
    ranks, scores = kr.rank(q, 0.3)
    np.testing.assert_array_equal(ranks, [[A, B, C, D, E]])
    np.testing.assert_allclose(scores[0], 1 - (0.7 * jaccard + 0.3 * d)[ranks[0]], atol=1e-15)
    # lambda = 0: only the Jaccard distance; d and e share nothing: 1, in database order
    ranks, scores = kr.rank(q, 0.0)
    np.testing.assert_array_equal(ranks[0, -2:], [D, E])
    np.testing.assert_array_equal(scores[0, -2:], [0.0, 0.0])
    # lambda = 1: the original distance alone, the plain similarity ranking
    np.testing.assert_array_equal(kr.rank(q, 1.0)[0], np.argsort(-(q @ CIRCLE.T), kind="stable"))


def test_kreciprocal_query_outside_every_reciprocal_set():
    # q at 165 degrees, k1 = 1: its nearest is d (55), but d's own nearest, c, is closer (50): R(q, 1) = {q},
    # V_q = e_q, nothing shared: Jaccard 1 everywhere, the ranking is the similarity's
    q = _circle([165])
    kr = KReciprocal(CIRCLE, 1, 1)
    d = (1 - (q @ CIRCLE.T)[0]) / 2
    np.testing.assert_allclose(kr.distances(q, 0.3)[0], 0.7 + 0.3 * d, atol=1e-15)
    np.testing.assert_array_equal(kr.rank(q, 0.0)[0], [[0, 1, 2, 3, 4]])   # all 1: database order


# ---------------------------------------------------------------- k-reciprocal: dense reference

def _dense_kreciprocal(q, db, k1, k2, lam):
    """The same definitions (module docstring) computed plainly: N x N similarities, Python sets, the
    paper's loops. Column n of the query's V is the query itself. Returns (distances (nq, n), the
    number of rows whose R* grew beyond R)."""
    n = len(db)
    s = db @ db.T
    order = [[x for x in np.argsort(-s[g], kind="stable") if x != g] for g in range(n)]

    def nn(g, k):
        return [g] + order[g][:k]

    def r(g, k):
        return {x for x in nn(g, k) if g in nn(x, k)}

    h = int(np.around(k1 / 2))
    grew = 0

    def star(own, candidates):
        nonlocal grew
        out = set(own)
        for c in candidates:
            rc = r(c, h) if c != n else set()  # the query's own R(q, h) lies inside R(q, k1): nothing to add
            if len(rc & own) > 2 / 3 * len(rc):
                out |= rc
        grew += out != own
        return out

    v = np.zeros((n, n + 1))
    for g in range(n):
        for x in star(r(g, k1), r(g, k1)):
            v[g, x] = np.exp(-(1 - s[g, x]) / 2)
        v[g] /= v[g].sum()
    v_qe = np.array([v[nn(g, k2 - 1)].mean(axis=0) for g in range(n)])
    out = np.zeros((len(q), n))
    for i, qi in enumerate(q):
        sq = db @ qi
        oq = list(np.argsort(-sq, kind="stable"))

        def q_in(g, k):  # q among g's k nearest of the database and q: it beats g's k-th best
            return k > len(order[g]) or sq[g] > s[g, order[g][k - 1]]
        rq = {n} | {g for g in oq[:k1] if q_in(g, k1)}
        vq = np.zeros(n + 1)
        vq[n] = 1.0
        for x in star(rq, rq) - {n}:
            vq[x] = np.exp(-(1 - sq[x]) / 2)
        vq /= vq.sum()
        vq_qe = np.mean([vq] + [v[g] for g in oq[:k2 - 1]], axis=0)
        jac = np.array([1 - np.minimum(vq_qe, v_qe[g]).sum() / np.maximum(vq_qe, v_qe[g]).sum() for g in range(n)])
        out[i] = (1 - lam) * jac + lam * (1 - sq) / 2
    return out, grew


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 1, 0.0), (8, 3, 0.5), (1, 2, 0.3), (3, 10, 1.0),
                                         (70, 4, 0.3)])
def test_kreciprocal_matches_the_dense_reference(k1, k2, lam):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(8, 12))                         # clusters, so the reciprocal sets are not trivial
    db = _unit(centres[rng.integers(0, 8, 60)] + 0.6 * rng.normal(size=(60, 12)))
    q = _unit(centres[rng.integers(0, 8, 7)] + 0.6 * rng.normal(size=(7, 12)))
    expect, grew = _dense_kreciprocal(q, db, k1, k2, lam)
    if 8 <= k1 <= 20:  # (with h <= 2 a set of at most 3 must lie wholly inside R to be added: nothing new)
        assert grew > 0                                         # the 2/3 expansion is exercised
    kr = KReciprocal(db, k1, k2)
    got = kr.distances(q, lam)
    np.testing.assert_allclose(got, expect, atol=1e-9, rtol=0)
    ranks, scores = kr.rank(q, lam)
    np.testing.assert_array_equal(ranks, np.argsort(expect, axis=1, kind="stable"))
    np.testing.assert_allclose(scores, 1 - np.sort(expect, axis=1), atol=1e-9, rtol=0)


def test_kreciprocal_in_small_blocks_is_the_same_and_deterministic(monkeypatch):
    rng = np.random.default_rng(8)
    db = _unit(rng.normal(size=(80, 6))).astype(np.float32)
    q = _unit(rng.normal(size=(9, 6)))
    r1, s1 = KReciprocal(db, 20, 6).rank(q, 0.3)
    r2, s2 = KReciprocal(db.copy(), 20, 6).rank(q.copy(), 0.3)
    assert r1.tobytes() == r2.tobytes() and s1.tobytes() == s2.tobytes()
    monkeypatch.setattr(diffusion, "_BLOCK_ENTRIES", 100)      # one row (one query) a block
    r3, s3 = KReciprocal(db, 20, 6).rank(q, 0.3)               # (another product shape: the last bit may move)
    np.testing.assert_array_equal(r3, r1)
    np.testing.assert_allclose(s3, s1, atol=1e-12, rtol=0)
    assert r1.dtype == np.int64 and s1.dtype == np.float64 and (np.diff(s1, axis=1) <= 0).all()


# ---------------------------------------------------------------- parameters

GOOD = {"search": {"dba": {"k": 2, "alpha": 3}}, "rerank": {"kreciprocal": {"k1": 20, "k2": 6, "lambda": 0.3}}}


@pytest.mark.parametrize("key, value, module", [
    ("gem.search.dba.k", 0, diffusion), ("gem.search.dba.k", 2.5, diffusion), ("gem.search.dba.k", True, diffusion),
    ("gem.search.dba.alpha", -1, diffusion), ("gem.search.dba.alpha", float("inf"), diffusion),
    ("gem.rerank.kreciprocal.k1", 0, kreciprocal), ("gem.rerank.kreciprocal.k2", 0, kreciprocal),
    ("gem.rerank.kreciprocal.k2", "6", kreciprocal), ("gem.rerank.kreciprocal.lambda", 1.5, kreciprocal),
    ("gem.rerank.kreciprocal.lambda", -0.1, kreciprocal), ("gem.rerank.kreciprocal.lambda", float("nan"), kreciprocal),
])
def test_check_names_the_key(key, value, module):
    *path, name = key.split(".")
    nested = copy.deepcopy({"gem": GOOD})
    module.check(nested)
    node = nested
    for part in path:
        node = node[part]
    node[name] = value
    pattern = "^" + key.replace(".", r"\.") + "="
    with pytest.raises(InstanceSearchError, match=pattern):
        module.check(nested)
    with pytest.raises(InstanceSearchError, match=pattern):
        module.check({key: value})


def test_functions_check_their_arguments():
    with pytest.raises(InstanceSearchError, match=r"^gem\.search\.dba\.k=0: must be an integer of at least 1"):
        dba(DB, 0, 3.0)
    with pytest.raises(InstanceSearchError, match=r"^gem\.search\.dba\.alpha=-1:"):
        dba(DB, 2, -1)
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.kreciprocal\.k1=0:"):
        KReciprocal(CIRCLE, 0, 6)
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.kreciprocal\.k2=0:"):
        KReciprocal(CIRCLE, 20, 0)
    with pytest.raises(InstanceSearchError, match=r"^gem\.rerank\.kreciprocal\.lambda=2:"):
        KReciprocal(CIRCLE, 2, 1).rank(CIRCLE[:1], 2)
    with pytest.raises(InstanceSearchError, match="dimensions"):
        KReciprocal(CIRCLE, 2, 1).rank(np.ones((1, 3)), 0.3)


# ---------------------------------------------------------------- through the gem method

def _params(**over):
    p = {"search": {"query": "ls", "augment": "none", "dba": {"k": 1, "alpha": 1}},
         "rerank": {"mode": "none", "diffusion": {"k": 2, "gamma": 3, "alpha": 0.9, "query_k": 2, "iterations": 50,
                                                  "tol": 1e-10},
                    "kreciprocal": {"k1": 2, "k2": 1, "lambda": 0.3}},
         "expand": {"mode": "none", "alpha": 3, "neighbours": 2}}
    for k, v in over.items():
        p[k].update(v)
    return p


def _db():
    v = CIRCLE.astype(np.float32)
    q = _circle([5]).astype(np.float32)
    return GlobalDatabase(v, {"ls": q, "gs": q}, 5), Queries(["q"], box=q, image=q)


def test_gem_kreciprocal_and_dba_through_the_method():
    db, queries = _db()
    g = methods.get("gem")
    first = g.search(db, queries, _params(), "cosine", 0.8)
    p = _params(rerank={"mode": "kreciprocal"})
    got = g.rerank(db, queries, first, p, "cosine", 0.8)
    ranks, scores = KReciprocal(CIRCLE.astype(np.float32), 2, 1).rank(_circle([5]), 0.3)
    np.testing.assert_array_equal(got.ranks, ranks)
    np.testing.assert_allclose(got.scores, scores, atol=1e-6)
    assert db.kreciprocal(p["rerank"]["kreciprocal"]) is db.kreciprocal(p["rerank"]["kreciprocal"])  # built once
    # dba: the search, the re-ranking and the expansion all see the augmented vectors, built once
    on = {"augment": "dba"}
    augmented = db.searched({"k": 1, "alpha": 1})
    assert augmented is db.searched({"k": 1, "alpha": 1}) and augmented.dtype == np.float32
    np.testing.assert_allclose(augmented, dba(CIRCLE, 1, 1), atol=1e-6)
    assert db.searched(None) is db.vectors
    p = _params(search=on)
    first = g.search(db, queries, p, "cosine", 0.8)
    np.testing.assert_allclose(first.scores[0], np.sort(augmented @ queries.box[0])[::-1], atol=1e-6)
    got = g.rerank(db, queries, first, _params(search=on, rerank={"mode": "kreciprocal"}), "cosine", 0.8)
    np.testing.assert_array_equal(got.ranks, KReciprocal(augmented, 2, 1).rank(_circle([5]), 0.3)[0])
    expanded = g.expand(db, queries, first, _params(search=on, expand={"mode": "aqe"}), "cosine", 0.8)
    q2 = diffusion.alpha_qe(queries.box, augmented, first.ranks, 2, 3)
    np.testing.assert_allclose(expanded.scores[0], np.sort((augmented @ q2.T)[:, 0])[::-1], atol=1e-5)
    with pytest.raises(InstanceSearchError, match=r"^gem\.search\.dba\.k=0"):
        g.search(db, queries, _params(search={"augment": "dba", "dba": {"k": 0, "alpha": 3}}), "cosine", 0.8)
    with pytest.raises(InstanceSearchError, match=r"^gem\.search\.augment='qe': expected none or dba"):
        g.search(db, queries, _params(search={"augment": "qe"}), "cosine", 0.8)
    with pytest.raises(InstanceSearchError, match="expected none, diffusion or kreciprocal"):
        g.rerank(db, queries, first, _params(rerank={"mode": "window"}), "cosine", 0.8)


def test_the_database_builds_each_setting_once_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    db, _ = _db()
    setting = {"k1": 2, "k2": 1, "lambda": 0.3}
    with ThreadPoolExecutor(4) as pool:  # the web page's request threads
        got = list(pool.map(lambda _: db.kreciprocal(setting, {"k": 1, "alpha": 1}), range(8)))
    assert all(g is got[0] for g in got)
    assert got[0] is not db.kreciprocal(setting)                # another database: the stored vectors


def test_gem_options_and_their_description():
    g = methods.get("gem")
    p = _params()
    opts = g.options(p)
    assert set(opts) == {"diffusion", "kreciprocal", "aqe", "dba", "dba+aqe"}
    assert opts["dba"]["search"] == {"augment": "dba"} and opts["dba+aqe"]["expand"] == {"mode": "aqe"}
    assert g.second_stage(p) == "no re-ranking"
    assert g.second_stage(_params(search={"augment": "dba", "dba": {"k": 10, "alpha": 3}},
                                  rerank={"mode": "kreciprocal"}, expand={"mode": "aqe"})) == (
        "alpha-DBA over the database's 10 nearest, then k-reciprocal re-ranking (Jaccard distance), "
        "then alpha-QE over the top 2")
