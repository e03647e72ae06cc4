"""Region features (Salvador et al., CVPRW 2016): filtering by image-wise vectors, re-ranking by proposals.

Pure numpy: the network runs once per image in ``features.frcnn``; everything here works on what it
stored, so re-ranking and query expansion never re-run it.

Per image the extraction stores (:class:`ImageRegions`, gathered into :class:`RegionFeatures`):
the image-wise pooled vector (C,), and P proposals: boxes (P, 4) in original pixels (x1, y1, x2, y2)
with their region-pooled vectors (P, C).

- **Filtering** (:func:`filter_rank`): cosine or weighted cosine between image-wise vectors, optionally
  after PCA-whitening (L2 -> whiten -> L2).
- **Spatial re-ranking** (:func:`rerank`): each of a query's top N images scores the best similarity
  between the query's region vector and the image's proposals; the best box is kept.
- **Query expansion** (:func:`expand` / :func:`rerank_expanded`): the mean of the unit query and the unit
  best-region vectors of its top k, then the top N re-scored by best proposal again.

Weighted cosine, as the reproduced system defined it (reference.md section 1): w_i = 1 where q_i != 0,
alpha elsewhere, in both norms: s = sum w q d / (sqrt(sum w q^2) sqrt(sum w d^2)). Since q vanishes
where w = alpha, s = q.d / (|q| sqrt(alpha |d|^2 + (1 - alpha) sum_{i: q_i != 0} d_i^2)): two dense
matrix products. It differs from the cosine only on the channels where the query is exactly zero, so
it is meant for non-negative vectors with zeros (pooled post-ReLU activations: a channel that never
fires in the query region). On dense vectors it *is* the cosine: signed maps (an FPN level, the linear
bottleneck of MobileNetV2) pool to vectors without zeros, and so do whitened vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import whitening as pcaw
from .errors import InstanceSearchError
from .io import load_npz, save_npz
from .rerank import check_first_stage, reorder
from .search import SIMILARITIES, rank

# Ties between proposals: scores within this relative distance of the maximum count as equal, so the
# first proposal (the higher-ranked RPN box, the coarser grid window) wins deterministically.
_TIE = 1e-9

# get_regions(i) -> (boxes (P, 4), region vectors (P, C)) of database image i
GetRegions = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass
class ImageRegions:
    """What the extraction keeps of one image."""

    vector: np.ndarray                  # (C,) float32 image-wise pooled vector
    boxes: np.ndarray                   # (P, 4) float32 proposals, original pixels (x1, y1, x2, y2)
    regions: np.ndarray                 # (P, C) float32 region-pooled vectors of the proposals
    extra: np.ndarray                   # (m, C) float32 pooled vectors of the caller's boxes (query boxes)
    fallback: bool = False              # the source proposed nothing: boxes is the whole image
    extent: tuple[float, float] = (0.0, 0.0)   # original-pixel extent the map tiles (pool_box)
    map: np.ndarray | None = field(default=None, repr=False)  # (C, gh, gw) float32, only if asked


@dataclass
class RegionFeatures:
    """All images' region features in flat arrays (what a stage writes and re-ranking reads).

    vectors (n, C) float32; regions (M, C) float16 and boxes (M, 4) float32 of all proposals, image i
    owning rows offsets[i]:offsets[i + 1]; offsets (n + 1,) int64.
    """

    vectors: np.ndarray
    regions: np.ndarray
    boxes: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_images(cls, images: Sequence[ImageRegions]) -> "RegionFeatures":
        if not images:
            raise InstanceSearchError("no images to gather region features from")
        counts = [len(r.boxes) for r in images]
        return cls(np.stack([r.vector for r in images]).astype(np.float32),
                   np.concatenate([r.regions for r in images]).astype(np.float16),
                   np.concatenate([r.boxes for r in images]).astype(np.float32),
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (P, 4) float32, region vectors (P, C) float16) of image i: a ``GetRegions``."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.boxes[lo:hi], self.regions[lo:hi]

    def save(self, path) -> None:
        save_npz(path, vectors=self.vectors, regions=self.regions, boxes=self.boxes, offsets=self.offsets)

    @classmethod
    def load(cls, path) -> "RegionFeatures":
        a = load_npz(path)
        missing = sorted({"vectors", "regions", "boxes", "offsets"} - a.keys())
        if missing or len(a["offsets"]) != len(a["vectors"]) + 1 or not (
                a["offsets"][-1] == len(a["regions"]) == len(a["boxes"])):
            raise InstanceSearchError(f"{path}: not a complete region-feature file (missing {missing or 'nothing'} "
                                      f"or inconsistent lengths); re-run the extract step")
        return cls(a["vectors"], a["regions"], a["boxes"], a["offsets"])


# ---------------------------------------------------------------------------------------------- filtering

def l2(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def fit_whitening(vectors: np.ndarray, dim: int, key: str = "frcnn.filter.pca_dim") -> dict[str, np.ndarray]:
    """PCA-whitening learned on the L2-normalised database image-wise vectors."""
    return pcaw.fit(l2(vectors).astype(np.float32), dim, key=key)


def prepare(x: np.ndarray, model: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """L2 (-> whiten -> L2 when a whitening model is given); L2 first so that sum- and max-pooled
    vectors of any image size share one scale before the mean is subtracted.

    Whitened vectors are centred and rotated, hence signed and dense: no coordinate is zero, so the
    weighted cosine computed on them equals the plain cosine (module docstring). With whitening the
    similarity choice therefore only matters for unwhitened vectors.
    """
    x = l2(x)
    return x if model is None else pcaw.apply(x.astype(np.float32), model).astype(np.float64)


def _check_similarity(name: str, alpha: float) -> None:
    if name not in SIMILARITIES:
        raise InstanceSearchError(f"similarity {name!r} is unknown; choose one of {', '.join(SIMILARITIES)}")
    if name == "weighted_cosine" and not 0 <= alpha <= 1:
        raise InstanceSearchError(f"weight_absent={alpha}: must be between 0 and 1")


def similarity(q: np.ndarray, d: np.ndarray, name: str = "cosine", alpha: float = 0.8) -> np.ndarray:
    """Dense (nq, n) float64 cosine or weighted cosine (module docstring); 0 where a norm is 0."""
    _check_similarity(name, alpha)
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


def filter_rank(q: np.ndarray, d: np.ndarray, name: str = "cosine", alpha: float = 0.8,
                whitening: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First stage: (ranks int32 (nq, n), scores float32 (nq, n)) of image-wise vectors, best first."""
    return rank(similarity(prepare(q, whitening), prepare(d, whitening), name, alpha))


# ------------------------------------------------------------------------------------------- re-ranking

def _best(q: np.ndarray, vectors: np.ndarray, name: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(best score, best proposal index) of each query row against one image's proposals."""
    s = similarity(q, vectors, name, alpha)                      # (m, P): one product for all queries
    top = s.max(axis=1, keepdims=True)
    pick = np.argmax(s >= top - _TIE * np.maximum(np.abs(top), 1.0), axis=1)
    return s[np.arange(len(s)), pick], pick


def _by_image(ranks: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image, query rows, rank positions) for every distinct image of ``ranks`` (image-major order)."""
    t = ranks.shape[1]
    flat = ranks.ravel()
    order = np.argsort(flat, kind="stable")
    images, first = np.unique(flat[order], return_index=True)
    bounds = np.append(first, len(flat))
    out = []
    for k, image in enumerate(images):
        qi, ri = np.divmod(order[bounds[k]:bounds[k + 1]], t)
        out.append((int(image), qi, ri))
    return out


def rerank(first_ranks, first_scores, queries: np.ndarray, get_regions: GetRegions, *, top: int = 100,
           similarity: str = "cosine", alpha: float = 0.8,
           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-score each query's first ``top`` results by their best proposal; returns (ranks, scores, boxes).

    queries: (nq, C) region vectors of the queries (the box: LS; the whole-image box: GS).
    get_regions(i) -> (boxes, vectors) of database image i, called once per distinct image.
    Same conventions as :func:`instance_search.rerank.rerank`: the first T = min(top, N) results are
    sorted by best-proposal score, descending and stable; the others keep first-stage order with their
    scores shifted to end at (lowest proposal score - 1). ranks int64 (nq, N), scores float64 (nq, N),
    boxes float32 (nq, T, 4) of the best proposals in the new order (NaN: an image without proposals).
    """
    _check_similarity(similarity, alpha)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    first_ranks, first_scores = check_first_stage(first_ranks, first_scores, top, len(queries))
    nq, n = first_ranks.shape
    t = min(top, n)
    cand = first_ranks[:, :t]
    local = np.zeros((nq, t))
    boxes = np.full((nq, t, 4), np.nan, np.float32)
    groups = _by_image(cand)
    for k, (image, qi, ri) in enumerate(groups):
        b, v = get_regions(image)
        if len(b):
            local[qi, ri], pick = _best(queries[qi], v, similarity, alpha)
            boxes[qi, ri] = b[pick]
        if progress is not None:
            progress(k + 1, len(groups))

    return reorder(first_ranks, first_scores, local, boxes)


# ------------------------------------------------------------------------------------- query expansion

def expand(queries: np.ndarray, ranks: np.ndarray, get_regions: GetRegions, *, k: int = 5,
           similarity: str = "cosine", alpha: float = 0.8) -> np.ndarray:
    """(nq, C) float64 expanded queries: mean of the unit query and the unit best-proposal vectors of its
    top ``k`` results (the proposals that :func:`rerank` picks for the same query)."""
    _check_similarity(similarity, alpha)
    if k < 1:
        raise InstanceSearchError(f"frcnn expand top={k}: must be at least 1")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    ranks = np.asarray(ranks, dtype=np.int64)[:, :k]
    total = l2(queries)
    count = np.ones(len(queries))
    for image, qi, _ in _by_image(ranks):
        _, v = get_regions(image)
        if len(v):
            _, pick = _best(queries[qi], v, similarity, alpha)
            np.add.at(total, qi, l2(np.asarray(v[pick], np.float64)))
            np.add.at(count, qi, 1)
    return total / count[:, None]


def rerank_expanded(first_ranks, first_scores, queries: np.ndarray, get_regions: GetRegions, *, top: int = 100,
                    k: int = 5, similarity: str = "cosine",
                    alpha: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-rank, expand each query with its new top ``k`` best regions, re-rank the same top N again."""
    ranks, scores, _ = rerank(first_ranks, first_scores, queries, get_regions, top=top,
                              similarity=similarity, alpha=alpha)
    expanded = expand(queries, ranks, get_regions, k=k, similarity=similarity, alpha=alpha)
    return rerank(ranks, scores, expanded, get_regions, top=top, similarity=similarity, alpha=alpha)
