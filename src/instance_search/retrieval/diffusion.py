"""Query expansion and diffusion for global descriptors (one L2-normalised vector per image).

Alpha-weighted query expansion, alpha-QE (Radenovic, Tolias & Chum, "Fine-tuning CNN image retrieval
with no human annotation", TPAMI 2018): query q with first-stage results d_1, d_2, ... becomes::

    q' = l2( q + sum_{j <= n} s_j^alpha d_j ),   s_j = max(0, q . d_j)   (q, d_j L2-normalised)

alpha = 0 is average query expansion (Chum et al., ICCV 2007): every weight is 1 (0^0 = 1, so a
neighbour with a negative similarity counts too); for alpha > 0 such a neighbour adds nothing.

Database-side augmentation, alpha-DBA (Arandjelovic & Zisserman, CVPR 2012; the alpha weights of
Radenovic et al. TPAMI 2018): the same formula applied to every database vector with its ``k``
nearest *other* database vectors (:func:`knn`), so d_i' = l2(d_i + sum_{j in kNN(i)} s_ij^alpha d_j).
The query is then searched against the augmented vectors.

Diffusion (Iscen, Tolias, Avrithis, Furon & Chum, "Efficient diffusion on region manifolds:
recovering small objects with compact CNN representations", CVPR 2017), here on whole-image vectors
(the paper's global-descriptor variant) rather than regions:

* affinity W (N x N): w_ij = max(0, d_i . d_j)^gamma when i and j are *mutual* k nearest neighbours
  (i in kNN(j) and j in kNN(i), the paper's choice), 0 otherwise; zero diagonal, symmetric;
* S = D^-1/2 W D^-1/2 with D = diag(W 1) (a row of zero degree stays zero);
* the query's initial vector y: y_j = max(0, q . d_j)^gamma for its query_k nearest database
  vectors, 0 elsewhere;
* the ranking scores f solve (I - alpha S) f = y, 0 < alpha < 1, by conjugate gradient (the matrix
  is symmetric positive definite) truncated at ``iterations`` steps or relative residual ``tol``.

Nearest neighbours are by dot product with ties broken by database index, so graphs and rankings
are deterministic.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from ..errors import InstanceSearchError
from .linalg import l2

# scipy renamed cg's relative tolerance ``tol`` -> ``rtol`` (1.12) and removed ``tol`` (1.14); the
# project allows scipy >= 1.11, so the keyword is looked up once.
_CG_RTOL = "rtol" if "rtol" in inspect.signature(cg).parameters else "tol"

# Similarity blocks are cut to about this many float64 entries (32 MiB), so N x N never exists at once.
_BLOCK_ENTRIES = 1 << 22

EXPAND_ALPHA = "gem.expand.alpha"
EXPAND_NEIGHBOURS = "gem.expand.neighbours"
K = "gem.rerank.diffusion.k"
ALPHA = "gem.rerank.diffusion.alpha"
GAMMA = "gem.rerank.diffusion.gamma"
QUERY_K = "gem.rerank.diffusion.query_k"
ITERATIONS = "gem.rerank.diffusion.iterations"
TOL = "gem.rerank.diffusion.tol"
DBA_K = "gem.search.dba.k"
DBA_ALPHA = "gem.search.dba.alpha"


def _count(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InstanceSearchError(f"{key}={value}: must be an integer of at least 1")


def _real(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise InstanceSearchError(f"{key}={value}: must be a finite number")
    return float(value)


def _positive(key: str, value) -> None:
    if _real(key, value) <= 0:
        raise InstanceSearchError(f"{key}={value}: must be greater than 0")


def _non_negative(key: str, value) -> None:
    if _real(key, value) < 0:
        raise InstanceSearchError(f"{key}={value}: must be 0 or more (0: average query expansion)")


def _open_unit(key: str, value) -> None:
    if not 0 < _real(key, value) < 1:
        raise InstanceSearchError(f"{key}={value}: must be in (0, 1)")


_CHECKS = {EXPAND_ALPHA: _non_negative, EXPAND_NEIGHBOURS: _count, K: _count, ALPHA: _open_unit,
           GAMMA: _positive, QUERY_K: _count, ITERATIONS: _count, TOL: _positive,
           DBA_K: _count, DBA_ALPHA: _non_negative}


def _lookup(params: Mapping, key: str):
    """params[key] for a flat mapping of dotted keys, else the nested params[a][b][c]; None if absent."""
    if key in params:
        return params[key]
    node = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def check(params: Mapping) -> None:
    """Validate the gem.expand.*, gem.search.dba.* and gem.rerank.diffusion.* values present in ``params``
    (nested as in params.yaml, or flat dotted keys); an absent key is left to the schema."""
    for key, test in _CHECKS.items():
        value = _lookup(params, key)
        if value is not None:
            test(key, value)


def _matrix(x, what: str) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise InstanceSearchError(f"{what} must be a (rows, dimensions) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InstanceSearchError(f"{what} contain NaN or infinite values; re-run the step that computed them")
    return x


def _same_dimension(q: np.ndarray, db: np.ndarray) -> None:
    if q.shape[1] != db.shape[1]:
        raise InstanceSearchError(f"query vectors have {q.shape[1]} dimensions but the database {db.shape[1]}; "
                                  "extract both with the same configuration")


def alpha_qe(q, db, top, n: int, alpha: float) -> np.ndarray:
    """Alpha-QE queries (nq, D) float64: query i expanded with its first ``n`` results ``top[i]``
    (database indices, first-stage order; fewer when ``top`` has fewer columns)."""
    _count(EXPAND_NEIGHBOURS, n)
    _non_negative(EXPAND_ALPHA, alpha)
    q, db = _matrix(q, "query vectors"), _matrix(db, "database vectors")
    _same_dimension(q, db)
    top = np.asarray(top)
    if top.ndim != 2 or len(top) != len(q) or not np.issubdtype(top.dtype, np.integer):
        raise InstanceSearchError(f"first-stage ranks must be an integer (queries, results) array with one row "
                                  f"per query ({len(q)}), got {top.dtype} {top.shape}")
    top = top[:, :n]
    if top.size and (top.min() < 0 or top.max() >= len(db)):
        raise InstanceSearchError(f"first-stage ranks name database images outside 0..{len(db) - 1}")
    return _expanded(q, db, top, alpha)


def _expanded(q: np.ndarray, db: np.ndarray, top: np.ndarray, alpha: float) -> np.ndarray:
    """l2(q_i + sum_j max(0, q_i . d_j)^alpha d_j) over j in top[i] (q, d_j L2-normalised first)."""
    qn = l2(q)
    out = qn.copy()
    # Blocks of queries bound the gathered (queries, n, D) neighbour array; within one it is vectorised.
    step = max(1, _BLOCK_ENTRIES // max(1, top.shape[1] * db.shape[1]))
    for start in range(0, len(q), step):
        rows = slice(start, start + step)
        nb = l2(db[top[rows]])                                  # (b, n, D)
        sim = np.einsum("id,ijd->ij", qn[rows], nb)
        weight = np.maximum(sim, 0.0) ** alpha                  # alpha = 0: 0^0 = 1, plain averaging
        out[rows] += np.einsum("ij,ijd->id", weight, nb)
    return l2(out)


def dba(db, k: int, alpha: float) -> np.ndarray:
    """alpha-DBA: each database vector (N, D) float64 expanded with its ``k`` nearest other database
    vectors (:func:`knn`; at most N - 1) as alpha-QE expands a query."""
    _count(DBA_K, k)
    _non_negative(DBA_ALPHA, alpha)
    db = _matrix(db, "database vectors")
    if len(db) < 2:
        return l2(db)
    return _expanded(db, db, knn(db, k)[0], alpha)


def _top(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, values) (B, k) of each row's k largest entries, in column order; ties at the k-th value
    go to the lower columns. ``s`` is overwritten.

    np.argpartition picks k columns per row in O(N); it is exact wherever the k-th largest value is
    unique in its row. Only the rows where it is not (ties across the cut, where argpartition's pick
    is arbitrary) take the costlier pick of the lowest tied columns."""
    neg = np.negative(s, out=s)                                 # in place: no second block-sized copy
    cols = np.sort(np.argpartition(neg, k - 1, axis=1)[:, :k], axis=1)
    cut = np.take_along_axis(neg, cols, axis=1).max(axis=1, keepdims=True)
    crowded = np.flatnonzero((neg <= cut).sum(axis=1) > k)
    if crowded.size:
        sc, kc = neg[crowded], cut[crowded]
        above, tied = sc < kc, sc == kc
        room = k - above.sum(axis=1, keepdims=True)
        cols[crowded] = np.nonzero(above | (tied & (np.cumsum(tied, axis=1) <= room)))[1].reshape(-1, k)
    return cols, -np.take_along_axis(neg, cols, axis=1)


def _rows_per_block(n: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(1, n))


def knn(db, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64, similarities float64) (N, min(k, N - 1)): each database vector's k nearest other
    database vectors by dot product, best first, equal similarities in database order. Computed in
    blocks of rows, so the N x N similarities never exist at once."""
    db = _matrix(db, "database vectors")
    n = len(db)
    k = max(0, min(int(k), n - 1))
    idx, sims = np.zeros((n, k), np.int64), np.zeros((n, k))
    if k == 0:
        return idx, sims
    step = _rows_per_block(n)
    for start in range(0, n, step):
        block = np.arange(start, min(start + step, n))
        s = db[block] @ db.T
        s[np.arange(len(block)), block] = -np.inf              # a vector is not its own neighbour
        c, v = _top(s, k)          # in column order, so the stable sort leaves ties in database order
        order = np.argsort(-v, axis=1, kind="stable")
        idx[block] = np.take_along_axis(c, order, axis=1)
        sims[block] = np.take_along_axis(v, order, axis=1)
    return idx, sims


def knn_graph(db, k: int, gamma: float) -> sp.csr_matrix:
    """Affinity W (N, N) csr float64 of the database vectors: mutual k nearest neighbours by dot product
    (itself excluded; k is capped at N - 1), weights max(0, s)^gamma, zero diagonal, symmetric."""
    _count(K, k)
    _positive(GAMMA, gamma)
    db = _matrix(db, "database vectors")
    n = len(db)
    idx, sims = knn(db, k)
    if idx.shape[1] < 1:                                        # 0 or 1 vectors: no edges
        return sp.csr_matrix((n, n), dtype=np.float64)
    rows = np.repeat(np.arange(n), idx.shape[1])
    a = sp.csr_matrix((np.maximum(sims.ravel(), 0.0) ** gamma, (rows, idx.ravel())), shape=(n, n))
    # Weights are >= 0, so the elementwise minimum with the transpose keeps exactly the mutual pairs, and
    # min(a_ij, a_ji) is symmetric to the bit even where the two blocks rounded s_ij differently.
    w = sp.csr_matrix(a.minimum(a.T))
    w.eliminate_zeros()
    w.sort_indices()
    return w


def normalise(w) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (csr float64), D = diag(row sums of W); rows of zero degree stay zero."""
    w = sp.csr_matrix(w, dtype=np.float64)
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    s = w.copy()
    # inv_i * inv_j is computed as one commutative product, so a symmetric W gives an exactly symmetric S.
    row = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    s.data = w.data * (inv[row] * inv[w.indices])
    return s


class Diffusion:
    """The diffusion of one database, built once (graph, S, I - alpha S) and reused for every query."""

    def __init__(self, db, k: int, gamma: float, alpha: float):
        _open_unit(ALPHA, alpha)
        self.db = _matrix(db, "database vectors")
        self.k, self.gamma, self.alpha = k, float(gamma), float(alpha)
        self.S = normalise(knn_graph(self.db, k, gamma))
        self.system = sp.csr_matrix(sp.identity(len(self.db), dtype=np.float64, format="csr") - self.alpha * self.S)

    def initial(self, q, query_k: int) -> np.ndarray:
        """y (nq, N) float64: max(0, q . d_j)^gamma on each query's query_k nearest database vectors
        (all of them when query_k >= N), 0 elsewhere."""
        _count(QUERY_K, query_k)
        q = _matrix(q, "query vectors")
        _same_dimension(q, self.db)
        y = np.zeros((len(q), len(self.db)))
        kq = min(query_k, len(self.db))
        if kq == 0:
            return y
        step = _rows_per_block(len(self.db))
        for start in range(0, len(q), step):
            block = slice(start, start + step)
            c, v = _top(q[block] @ self.db.T, kq)
            np.put_along_axis(y[block], c, np.maximum(v, 0.0) ** self.gamma, axis=1)
        return y

    def solve(self, y, iterations: int, tol: float) -> np.ndarray:
        """f (nq, N) float64 with (I - alpha S) f = y row by row: conjugate gradient from f = 0, at most
        ``iterations`` steps or until |r| <= tol |y|. Stopping at the step limit is the paper's
        truncation, not an error."""
        _count(ITERATIONS, iterations)
        _positive(TOL, tol)
        y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        f = np.zeros_like(y)
        for i, b in enumerate(y):
            if b.any():                                          # y = 0 (no positive similarity): f = 0
                f[i], info = cg(self.system, b, x0=np.zeros_like(b), maxiter=iterations, atol=0.0,
                                **{_CG_RTOL: tol})
                if info < 0:
                    raise InstanceSearchError(f"the diffusion solver failed (scipy cg info {info}); "
                                              f"check {ALPHA} and the database vectors")
        return f

    def rank(self, q, query_k: int, iterations: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
        """(ranks int64, scores float64) (nq, N): database indices by decreasing diffusion score f,
        equal scores in database order (a stable sort), and the sorted scores."""
        f = self.solve(self.initial(q, query_k), iterations, tol)
        ranks = np.argsort(-f, axis=1, kind="stable").astype(np.int64)
        return ranks, np.take_along_axis(f, ranks, axis=1)
