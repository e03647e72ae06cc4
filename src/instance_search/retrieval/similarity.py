"""Cosine and weighted cosine between query and database vectors, sparse or dense.

Weighted cosine, as the reproduced system defined it (reference.md, section 1): w_i = 1 where the
query's coordinate i is non-zero, alpha (``weight_absent``) elsewhere, used in both norms::

    s(q, d) = sum_i w_i q_i d_i / (sqrt(sum_i w_i q_i^2) * sqrt(sum_i w_i d_i^2))

Since q_i = 0 wherever w_i = alpha, the numerator is q.d, the query norm is |q|, and
sum_i w_i d_i^2 = alpha |d|^2 + (1 - alpha) sum_{i in supp q} d_i^2: one more product (the query's
support times the squared database entries). alpha = 1 is the cosine. Both are 0 where a norm is 0.

It differs from the cosine only where the query has exact zeros: bags of words, or pooled post-ReLU
activations. Signed or whitened vectors have no zeros, and there it *is* the cosine.

Every caller (first stage, window and proposal re-ranking, query expansion) checks its arguments
with :func:`check`, the one validation of the similarity name and of alpha.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError

SIMILARITIES = ("cosine", "weighted_cosine")


def check(name: str, alpha: float) -> None:
    """The similarity must be known; alpha (similarity.weight_absent) must lie in [0, 1]."""
    if name not in SIMILARITIES:
        raise InstanceSearchError(f"similarity {name!r} is unknown; choose one of {', '.join(SIMILARITIES)}")
    if name == "weighted_cosine" and not 0 <= alpha <= 1:
        raise InstanceSearchError(f"similarity.weight_absent={alpha}: must be between 0 and 1")


def _row_norms(m: sp.csr_matrix) -> np.ndarray:
    return np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())


def _sparse(q: sp.csr_matrix, d: sp.csr_matrix, name: str, alpha: float) -> np.ndarray:
    dots = (q @ d.T).toarray()
    if name == "cosine":
        denom = np.outer(_row_norms(q), _row_norms(d))
    else:
        d_sq = d.multiply(d).tocsr()
        support = q.copy()
        support.data = np.ones_like(support.data)
        on_support = (support @ d_sq.T).toarray()
        d_norm2 = np.asarray(d_sq.sum(axis=1)).ravel()[None, :]
        denom = _row_norms(q)[:, None] * np.sqrt(alpha * d_norm2 + (1 - alpha) * on_support)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def _dense(q: np.ndarray, d: np.ndarray, name: str, alpha: float) -> np.ndarray:
    q, d = np.atleast_2d(np.asarray(q, np.float64)), np.atleast_2d(np.asarray(d, np.float64))
    if q.shape[1] != d.shape[1]:
        raise InstanceSearchError(f"query vectors have {q.shape[1]} dimensions but the database {d.shape[1]}; "
                                  "extract both with the same configuration")
    dots = q @ d.T
    q_norm = np.linalg.norm(q, axis=1)[:, None]
    d2 = d * d
    if name == "cosine":
        den2 = np.broadcast_to(d2.sum(axis=1)[None, :], dots.shape)
    else:
        den2 = alpha * d2.sum(axis=1)[None, :] + (1 - alpha) * ((q != 0) @ d2.T)
    den = q_norm * np.sqrt(den2)
    return np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)


def scores(q, d, name: str = "cosine", alpha: float = 0.8) -> np.ndarray:
    """Dense (n_queries, n_database) float64 similarities of the rows of q and d (both sparse, or both
    dense arrays)."""
    check(name, alpha)
    if sp.issparse(q) != sp.issparse(d):
        raise TypeError("query and database vectors must be both sparse or both dense")
    return _sparse(q, d, name, alpha) if sp.issparse(q) else _dense(q, d, name, alpha)
