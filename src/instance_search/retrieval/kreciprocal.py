"""k-reciprocal re-ranking (Zhong, Zheng, Cao & Li, "Re-ranking person re-identification with
k-reciprocal encoding", CVPR 2017) for global descriptors, from the database's sparse k-NN graph.

What is computed, for L2-normalised vectors with similarity s(x, y) = x . y:

* the original distance d(x, y) = (1 - s(x, y)) / 2 = |x - y|^2 / 4, in [0, 1];
* N(x, k): x itself and its k nearest other images (at most all of them), ties to the lower database
  index; R(x, k) = {y in N(x, k) : x in N(y, k)}, the k-reciprocal set (x is in it);
* R*(x) = R(x, k1) united with every R(c, h), c in R(x, k1), that shares more than two thirds of its
  members with R(x, k1) (h = round(k1 / 2), half to even as numpy rounds);
* V_x: e^-d(x, y) on y in R*(x), 0 elsewhere, scaled to sum 1 (the Gaussian kernel of the paper's
  eq. 7, normalised as the authors' code does);
* local query expansion: V_x replaced by the mean of V_y over y in N(x, k2 - 1) (x and its k2 - 1
  nearest; k2 = 1: none);
* Jaccard distance d_J(q, g) = 1 - sum min(V_q, V_g) / sum max(V_q, V_g), where sum max = 2 - sum min
  since both rows sum to 1; an image that shares nothing with the query's V keeps d_J = 1;
* final distance (1 - lambda) d_J(q, g) + lambda d(q, g) for every database image g, ranked ascending
  with a stable sort (equal distances in database order); the score stored is 1 - that distance, so
  higher is better as everywhere else.

Where it departs from the paper, which puts the probe and the gallery into one set and builds every
neighbourhood over it (N x N):

* the database's neighbourhoods, R, R* and V (and their expansion) are built over the database
  alone, once per database and (k1, k2) (:class:`KReciprocal`; from :func:`.diffusion.knn`, never
  N x N); a query never enters a database image's neighbourhood there, and V_g has no entry for q;
* the query's own set: g in R(q, k1) when g is among q's k1 nearest database images and q would be
  among g's k1 nearest, i.e. s(q, g) beats (strictly: a tie goes to the database) g's k1-th best
  database similarity (always, where g has at most k1 others); its R* expansion uses the database's
  R(c, h); V_q has its own entry e^0 for q, which no database row shares; its local expansion
  averages V_q with the V of q's k2 - 1 nearest database images;
* d is a fixed scaling of |x - y|^2 to [0, 1], where the authors' code divides each row by its
  largest distance (which needs each image's farthest one: a second pass over all pairs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError
from .diffusion import _count, _lookup, _matrix, _real, _rows_per_block, _same_dimension, knn

K1 = "gem.rerank.kreciprocal.k1"
K2 = "gem.rerank.kreciprocal.k2"
LAMBDA = "gem.rerank.kreciprocal.lambda"


def _unit_interval(key: str, value) -> None:
    if not 0 <= _real(key, value) <= 1:
        raise InstanceSearchError(f"{key}={value}: must be in [0, 1] (0: Jaccard distance only)")


_CHECKS = {K1: _count, K2: _count, LAMBDA: _unit_interval}


def check(params: Mapping) -> None:
    """Validate the gem.rerank.kreciprocal.* values present in ``params`` (nested as in params.yaml, or
    flat dotted keys); an absent key is left to the schema."""
    for key, test in _CHECKS.items():
        value = _lookup(params, key)
        if value is not None:
            test(key, value)


def _indicator(rows: np.ndarray, cols: np.ndarray, shape) -> sp.csr_matrix:
    """A 0/1 csr float64 matrix with ones at (rows, cols) (repeats counted once)."""
    m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    m.data[:] = 1.0
    m.sort_indices()
    return m


def _neighbours(idx: np.ndarray, k: int) -> sp.csr_matrix:
    """A[x, y] = 1 for y among x's k nearest others (the graph's first k columns)."""
    n, k = len(idx), min(k, idx.shape[1])
    return _indicator(np.repeat(np.arange(n), k), idx[:, :k].ravel(), (n, n))


def _reciprocal(idx: np.ndarray, k: int) -> sp.csr_matrix:
    """R(x, k) of every database image as 0/1 rows: x itself and the mutual k nearest neighbours."""
    a = _neighbours(idx, k)
    r = sp.csr_matrix(a.multiply(a.T) + sp.identity(len(idx), format="csr"))
    r.sort_indices()
    return r


def _expand(r: sp.csr_matrix, rh: sp.csr_matrix, sizes: np.ndarray) -> sp.csr_matrix:
    """R* as 0/1 rows: each row of ``r`` united with every R(c, h) (rows of ``rh``, ``sizes`` their
    lengths), c in the row, that has more than 2/3 of its members in the row."""
    shared = r.multiply(r @ rh.T).tocoo()                       # |R(x) n R(c, h)| for c in R(x)
    keep = 3 * shared.data > 2 * sizes[shared.col]              # integers: no rounding at the 2/3 cut
    c = _indicator(shared.row[keep], shared.col[keep], r.shape)
    star = sp.csr_matrix(r + c @ rh)
    star.data[:] = 1.0
    star.sort_indices()
    return star


def _kernel(star: sp.csr_matrix, left: np.ndarray, db: np.ndarray, self_weight: float) -> sp.csr_matrix:
    """V (csr float64): e^-d(x, y) on the entries of ``star`` (x a row of ``left``, y of ``db``), divided
    by each row's sum plus ``self_weight`` (the query's own e^0, which is not a database column)."""
    coo = star.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    s = np.empty(len(rows))
    step = max(1, _rows_per_block(db.shape[1]))
    for start in range(0, len(rows), step):                     # pairs in blocks: (pairs, D) gathers bounded
        part = slice(start, start + step)
        s[part] = np.einsum("ij,ij->i", left[rows[part]], db[cols[part]])
    w = np.exp(-(1.0 - s) / 2.0)
    z = np.bincount(rows, w, minlength=star.shape[0]) + self_weight
    v = sp.csr_matrix((w / z[rows], (rows, cols)), shape=star.shape)
    v.sort_indices()
    return v


class KReciprocal:
    """The database side of k-reciprocal re-ranking, built once (graph, R(., h), V with its local
    expansion) and reused for every query."""

    def __init__(self, db, k1: int, k2: int):
        _count(K1, k1)
        _count(K2, k2)
        self.db = _matrix(db, "database vectors")
        n = len(self.db)
        self.k1, self.k2, self.h = int(k1), int(k2), int(np.around(k1 / 2))
        self.idx, sims = knn(self.db, max(self.k1, self.k2 - 1))
        # the query enters a database image's N(g, k1) only above its k1-th best database similarity
        self.cut = sims[:, self.k1 - 1] if self.k1 <= sims.shape[1] else np.full(n, -np.inf)
        r1 = _reciprocal(self.idx, self.k1)
        self.rh = _reciprocal(self.idx, self.h)
        self.rh_sizes = np.diff(self.rh.indptr)
        self.v = _kernel(_expand(r1, self.rh, self.rh_sizes), self.db, self.db, 0.0)
        qe = _indicator(np.arange(n), np.arange(n), (n, n)) + _neighbours(self.idx, self.k2 - 1)
        self.v_qe = sp.csc_matrix(sp.diags(1.0 / np.asarray(qe.sum(axis=1)).ravel()) @ qe @ self.v)
        self.v_qe.sort_indices()

    def distances(self, q, lam: float) -> np.ndarray:
        """Final distances (nq, N) float64 of the queries (rows of ``q``, L2-normalised) to every database image."""
        _unit_interval(LAMBDA, lam)
        q = _matrix(q, "query vectors")
        _same_dimension(q, self.db)
        n = len(self.db)
        out = np.empty((len(q), n))
        step = _rows_per_block(n)
        for start in range(0, len(q), step):
            block = slice(start, start + step)
            s = q[block] @ self.db.T
            out[block] = (1.0 - lam) * self._jaccard(q[block], s) + lam * (1.0 - s) / 2.0
        return out

    def rank(self, q, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """(ranks int64, scores float64) (nq, N): database indices by ascending final distance, equal
        distances in database order (a stable sort), and 1 - the sorted distances."""
        dist = self.distances(q, lam)
        ranks = np.argsort(dist, axis=1, kind="stable").astype(np.int64)
        return ranks, 1.0 - np.take_along_axis(dist, ranks, axis=1)

    def _jaccard(self, q: np.ndarray, s: np.ndarray) -> np.ndarray:
        """d_J (b, N) of a block of queries with similarities ``s`` (b, N) to the database."""
        b, n = s.shape
        order = np.argsort(-s, axis=1, kind="stable")          # ties to the lower index, as in the graph
        top = order[:, :self.k1]
        reciprocal = np.take_along_axis(s, top, axis=1) > self.cut[top]
        rows = np.repeat(np.arange(b), top.shape[1]).reshape(top.shape)
        rq = _indicator(rows[reciprocal], top[reciprocal], (b, n))   # R(q, k1) without q itself
        vq = _kernel(_expand(rq, self.rh, self.rh_sizes), q, self.db, 1.0)
        near = order[:, :self.k2 - 1]
        count = 1 + near.shape[1]                               # q and its k2 - 1 nearest
        nq = _indicator(np.repeat(np.arange(b), near.shape[1]), near.ravel(), (b, n))
        vq = sp.csr_matrix((vq + nq @ self.v) / count)
        vq.sort_indices()
        out = np.ones((b, n))
        for i in range(b):
            cols = vq.indices[vq.indptr[i]:vq.indptr[i + 1]]
            vals = vq.data[vq.indptr[i]:vq.indptr[i + 1]]
            sub = self.v_qe[:, cols].tocoo()                    # V_g on the query's columns
            shared = np.bincount(sub.row, np.minimum(sub.data, vals[sub.col]), minlength=n)
            out[i] = 1.0 - shared / (2.0 - shared)
        return out
