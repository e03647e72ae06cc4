"""Rankings: sorting scores, re-ordering a re-scored top, grouping a ranking's images.

A ranking of n_queries over N database images is ``ranks`` (nq, N) database indices best first with
their ``scores``; after a local re-ranking it also carries ``boxes`` (nq, T, 4): the best-matching
region (pixels x1, y1, x2, y2; NaN: none) of each of the first T results, in the new order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InstanceSearchError


@dataclass
class Ranking:
    ranks: np.ndarray                # int (nq, N) database indices, best first
    scores: np.ndarray               # float (nq, N)
    boxes: np.ndarray | None = None  # float32 (nq, T, 4): best regions of the first T (re-ranked) results

    @property
    def reranked(self) -> int:
        """How many results of each query were re-scored locally (0: none)."""
        return 0 if self.boxes is None else int(self.boxes.shape[1])

    def with_no_boxes(self) -> "Ranking":
        """The same order, marked as not re-ranked (an empty (nq, 0, 4) box array)."""
        return Ranking(self.ranks, self.scores, np.zeros((len(self.ranks), 0, 4), np.float32))


def rank(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ranks int32, scores float32) best first; equal scores keep database order (a stable sort), so
    runs are repeatable."""
    scores = scores.astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable").astype(np.int32)
    return order, np.take_along_axis(scores, order, axis=1)


def check_first_stage(first_ranks, first_scores, top: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The (ranks int64, scores float64) a re-ranking starts from, checked against its queries and ``top``."""
    first_ranks = np.asarray(first_ranks, dtype=np.int64)
    first_scores = np.asarray(first_scores, dtype=np.float64)
    if first_ranks.ndim != 2 or first_ranks.shape != first_scores.shape:
        raise InstanceSearchError(
            f"first-stage ranks and scores must be (queries, results) arrays of one shape, got "
            f"{first_ranks.shape} and {first_scores.shape}")
    if top < 1:
        raise InstanceSearchError(f"rerank candidates must be >= 1, got {top}")
    if n_queries != len(first_ranks):
        raise InstanceSearchError(f"{n_queries} queries but {len(first_ranks)} first-stage rankings")
    return first_ranks, first_scores


def reorder(first_ranks: np.ndarray, first_scores: np.ndarray, local: np.ndarray,
            boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The re-ranked lists from the local scores (nq, T) of each query's first T results and their
    best regions (nq, T, 4).

    The first T are sorted by local score, descending and stable (ties keep the first-stage order);
    the others follow in first-stage order, their scores shifted to end at (lowest local score - 1),
    so scores never increase along the list and any score below the re-ranked ones marks a result
    that was not re-ranked. Returns (ranks, scores, boxes in the new order).
    """
    t, n = local.shape[1], first_ranks.shape[1]
    new_order = np.argsort(-local, axis=1, kind="stable")
    ranks = first_ranks.copy()
    ranks[:, :t] = np.take_along_axis(first_ranks[:, :t], new_order, axis=1)
    scores = first_scores.copy()
    scores[:, :t] = np.take_along_axis(local, new_order, axis=1)
    if t < n:
        rest = first_scores[:, t:]
        scores[:, t:] = rest - rest.max(axis=1, keepdims=True) + local.min(axis=1, keepdims=True) - 1.0
    return ranks, scores, np.take_along_axis(boxes, new_order[:, :, None], axis=1)


def by_image(ranks: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image, query rows, rank positions) for every distinct image of ``ranks`` (nq, T), in image
    order: a re-ranking prepares each image once for all the queries that retrieved it."""
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


def pick_best(scores: np.ndarray, tie: float = 1e-9) -> np.ndarray:
    """Per row, the index of the best column: the first within ``tie`` (relative) of the maximum, so
    the first window or proposal in order wins even where two equal sums were rounded differently."""
    scores = np.atleast_2d(scores)
    top = scores.max(axis=1, keepdims=True)
    return np.argmax(scores >= top - tie * np.maximum(np.abs(top), 1.0), axis=1)
