"""First-stage search: query vectors, cosine and weighted cosine scores, rankings.

Scores come from sparse matrix products (an inverted index in matrix form), never a Python loop
over database images.

Weighted cosine, as the reproduced system defined it: w_i = 1 where the query's word i is present,
alpha elsewhere, used in both norms::

    s(q, d) = sum_i w_i q_i d_i / (sqrt(sum_i w_i q_i^2) * sqrt(sum_i w_i d_i^2))

Since q_i = 0 wherever w_i = alpha, the numerator is q.d, the query norm is |q|, and
sum_i w_i d_i^2 = alpha |d|^2 + (1 - alpha) sum_{i in supp q} d_i^2, the last term being one more
sparse product (support of Q times the squared database entries).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .bow import AssignmentMaps
from .errors import InstanceSearchError
from .groundtruth import GroundTruth
from .io import load_npz

log = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "weighted_cosine")


def box_mask(xy: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return (xy[:, 0] >= x1) & (xy[:, 0] < x2) & (xy[:, 1] >= y1) & (xy[:, 1] < y2)


def query_counts(gnd: GroundTruth, maps: AssignmentMaps, vocabulary: int, mode: str,
                 fallback: str = "image") -> sp.csr_matrix:
    """Word counts of each query: inside its box (``ls``) or of its whole image (``gs``).

    A box that holds no feature falls back as :func:`box_words` says (counted in the log).
    """
    rows, cols, fallbacks = [], [], []
    for qi, q in enumerate(gnd.queries):
        xy, words, _, _ = maps.image(q.image)
        if mode == "ls":
            words, fell_back = box_words(xy, words, q.box, fallback)
            if fell_back:
                fallbacks.append(q.name)
        rows.append(np.full(len(words), qi))
        cols.append(words)
    if fallbacks:
        log.warning("%d queries have no feature inside their box; they use %s: %s", len(fallbacks),
                    "the whole image" if fallback == "image" else "the feature nearest the box centre",
                    ", ".join(fallbacks))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(gnd.queries), vocabulary))
    m.sum_duplicates()
    return m


def box_words(xy: np.ndarray, words: np.ndarray, box, fallback: str = "image") -> tuple[np.ndarray, bool]:
    """(words of the features inside ``box``, whether it had to fall back).

    A box that holds no feature is never a silent empty query (it would score zero everywhere): it
    falls back to the whole image (``fallback="image"``: sparse keypoints) or to the feature nearest
    the box centre (``"nearest"``: a dense CNN map, whose cells tile the image).
    """
    inside = box_mask(xy, box)
    if inside.any() or len(words) == 0:
        return words[inside], False
    if fallback == "image":
        return words, True
    if fallback == "nearest":
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return words[[int(np.argmin((xy[:, 0] - cx) ** 2 + (xy[:, 1] - cy) ** 2))]], True
    raise ValueError(f"unknown fallback {fallback!r}; expected image or nearest")


def weighted(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(counts.multiply(idf[None, :].astype(np.float64)))


def _row_norms(m: sp.csr_matrix) -> np.ndarray:
    return np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())


def cosine(q: sp.csr_matrix, d: sp.csr_matrix) -> np.ndarray:
    """Dense (n_queries, n_database) cosine similarities."""
    dots = (q @ d.T).toarray()
    denom = np.outer(_row_norms(q), _row_norms(d))
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def weighted_cosine(q: sp.csr_matrix, d: sp.csr_matrix, alpha: float) -> np.ndarray:
    """Dense weighted cosine (module docstring) for every query x database pair."""
    dots = (q @ d.T).toarray()
    d_sq = d.multiply(d).tocsr()
    support = q.copy()
    support.data = np.ones_like(support.data)
    on_support = (support @ d_sq.T).toarray()
    d_norm2 = np.asarray(d_sq.sum(axis=1)).ravel()[None, :]
    denom = _row_norms(q)[:, None] * np.sqrt(alpha * d_norm2 + (1 - alpha) * on_support)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def similarity(q: sp.csr_matrix, d: sp.csr_matrix, name: str, alpha: float) -> np.ndarray:
    if name == "cosine":
        return cosine(q, d)
    if name == "weighted_cosine":
        return weighted_cosine(q, d, alpha)
    raise ValueError(f"unknown similarity {name!r}; expected one of {SIMILARITIES}")


def rank(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rankings best first; equal scores keep database order (stable sort), so runs are repeatable."""
    scores = scores.astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable").astype(np.int32)
    return order, np.take_along_axis(scores, order, axis=1)


def load_ranking(path, gnd: GroundTruth, required: tuple[str, ...] = ("ranks",)) -> dict[str, np.ndarray]:
    """The arrays of a rank or rerank file, checked against the ground truth it claims to rank.

    ``ranks`` must be (n_queries, n_database) database indices; every other required array must
    have one row per query (``scores`` the very shape of ``ranks``).
    """
    arrays = load_npz(path)
    missing = sorted(set(required) - arrays.keys())
    if missing:
        raise InstanceSearchError(f"{path}: missing arrays {missing}; re-run the step that produces it")
    ranks = arrays["ranks"]
    expected = (len(gnd.queries), gnd.n_database)
    if ranks.shape != expected:
        raise InstanceSearchError(
            f"{path}: ranks have shape {ranks.shape} but the ground truth has {expected[0]} queries "
            f"x {expected[1]} database images; re-run the step that produces it")
    if ranks.size and (ranks.min() < 0 or ranks.max() >= gnd.n_database):
        raise InstanceSearchError(f"{path}: ranks hold indices outside the database; re-run the step that produces it")
    for name in required:
        shape = arrays[name].shape
        if shape[:1] != ranks.shape[:1] or (name == "scores" and shape != ranks.shape):
            raise InstanceSearchError(f"{path}: array {name} does not match the ranks' shape; re-run the step that produces it")
    return arrays
