"""Average query expansion (Chum et al. 2007) over the top k of a ranking, global or local.

The expanded query is the mean of the L2-normalised query vector and the L2-normalised vectors of
its top k results (of the re-ranked list); it then re-scores the same top N as the re-ranking, by
each image's best window (stages.expand), so spatial verification is kept. (A new global search
with the expanded query lost to plain re-ranking on the embedded benchmark: it discards the windows.)

- GQE: each result contributes its whole-image BoW vector;
- LQE: each result contributes the BoW vector of its best re-ranking window (BLCF paper), so clutter
  around the object in the retrieved images does not leak into the query.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .bow import AssignmentMaps
from .errors import InstanceSearchError
from .search import box_mask

MODES = ("none", "gqe", "lqe")  # not "off": YAML 1.1 writers (dvc exp run -S) turn it into false


def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ m)


def window_vectors(maps: AssignmentMaps, images: np.ndarray, boxes: np.ndarray, idf: np.ndarray) -> sp.csr_matrix:
    """Weighted BoW (n, K) of the features of ``images[j]`` inside ``boxes[j]`` (NaN box: none)."""
    rows, cols = [], []
    for j, (i, box) in enumerate(zip(images, boxes)):
        xy, words, _, _ = maps.image(int(i))
        if not np.isnan(box).any():
            w = words[box_mask(xy, box)]
            rows.append(np.full(len(w), j))
            cols.append(w)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(images), len(idf)))
    m.sum_duplicates()
    return sp.csr_matrix(m.multiply(idf[None, :].astype(np.float64)))


def expand(q: sp.csr_matrix, neighbours: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Expanded queries: row j = mean of unit(q_j) and the unit rows of neighbours[j]."""
    if len(neighbours) != q.shape[0]:
        raise InstanceSearchError(f"{len(neighbours)} neighbour sets for {q.shape[0]} queries")
    qn = _unit_rows(sp.csr_matrix(q, dtype=np.float64))
    out = []
    for j, nb in enumerate(neighbours):
        total = qn[j] + sp.csr_matrix(_unit_rows(nb).sum(axis=0)) if nb.shape[0] else qn[j]
        out.append(total / (1 + nb.shape[0]))
    return sp.csr_matrix(sp.vstack(out))


def neighbour_vectors(mode: str, k: int, ranks: np.ndarray, d: sp.csr_matrix, *, maps: AssignmentMaps | None = None,
                      boxes: np.ndarray | None = None, idf: np.ndarray | None = None) -> list[sp.csr_matrix]:
    """Per query, the vectors its top ``k`` results contribute (GQE: ``d`` rows; LQE: best windows)."""
    if mode not in ("gqe", "lqe"):
        raise InstanceSearchError(f"expand.mode={mode!r}: expected one of {', '.join(MODES)}")
    if k < 1:
        raise InstanceSearchError(f"expand.top={k}: must be at least 1")
    if mode == "gqe":
        return [d[ranks[j, :k]] for j in range(len(ranks))]
    if boxes is None or boxes.shape[1] < k:
        have = 0 if boxes is None else boxes.shape[1]
        raise InstanceSearchError(f"expand.mode=lqe needs the best windows of the top {k} results but re-ranking "
                                  f"kept {have}; raise rerank.top to at least expand.top or use gqe")
    return [window_vectors(maps, ranks[j, :k], boxes[j, :k], idf) for j in range(len(ranks))]

