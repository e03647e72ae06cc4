"""Average query expansion (Chum et al., ICCV 2007): the expanded query is the mean of the
L2-normalised query and the L2-normalised vectors its top results contribute::

    q' = (q / |q| + sum_{j <= k} v_j / |v_j|) / (1 + k)

What the v_j are is the method's choice (whole-image bags, best windows, best proposals); the
expanded query then re-scores the re-ranked top, so the spatial verification is kept.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError
from .linalg import l2


def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ m)


def check_neighbours(k: int, key: str = "expand.neighbours") -> None:
    if k < 1:
        raise InstanceSearchError(f"{key}={k}: must be at least 1")


def average_sparse(q: sp.csr_matrix, neighbours: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Expanded sparse queries: row j from q's row j and the rows of neighbours[j]."""
    if len(neighbours) != q.shape[0]:
        raise InstanceSearchError(f"{len(neighbours)} neighbour sets for {q.shape[0]} queries")
    qn = _unit_rows(sp.csr_matrix(q, dtype=np.float64))
    out = []
    for j, nb in enumerate(neighbours):
        total = qn[j] + sp.csr_matrix(_unit_rows(nb).sum(axis=0)) if nb.shape[0] else qn[j]
        out.append(total / (1 + nb.shape[0]))
    return sp.csr_matrix(sp.vstack(out))


def average_dense(q: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Expanded dense queries (nq, C) float64: query ``rows[i]`` gets ``vectors[i]`` (added in order)."""
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    total = l2(q)
    count = np.ones(len(q))
    if len(rows):
        np.add.at(total, rows, l2(np.asarray(vectors, np.float64)))
        np.add.at(count, rows, 1)
    return total / count[:, None]
