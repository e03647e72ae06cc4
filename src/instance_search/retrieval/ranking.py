"""Rankings: sorting scores, re-ordering a re-scored top, grouping a ranking's images.

A ranking of n_queries over N database images is ``ranks`` (nq, N) database indices best first with
their ``scores``; after a local re-ranking it also carries ``boxes`` (nq, T, 4): the best-matching
region (pixels x1, y1, x2, y2; NaN: none) of each of the first T results, in the new order.

A stored ranking keeps only its top K < N results (:meth:`Ranking.kept`) and, for the images the
query's ground truth names, where they lie in the whole ranking (``located`` and ``positions``):
all the metrics need, exactly (:meth:`Ranking.row` puts the pieces back). A stage that starts from
such a ranking re-orders only inside its top; :meth:`Ranking.after` carries the positions on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InstanceSearchError


@dataclass
class Ranking:
    ranks: np.ndarray                # int (nq, K) database indices, best first (K = N: the whole ranking)
    scores: np.ndarray               # float (nq, K)
    boxes: np.ndarray | None = None  # float32 (nq, T, 4): best regions of the first T (re-ranked) results
    # K < N only: images located beyond the top (nq, L) database indices, -1 pads, and their 0-based
    # positions in the whole ranking (nq, L)
    located: np.ndarray | None = None
    positions: np.ndarray | None = None

    @property
    def reranked(self) -> int:
        """How many results of each query were re-scored locally (0: none)."""
        return 0 if self.boxes is None else int(self.boxes.shape[1])

    def with_no_boxes(self) -> "Ranking":
        """The same order, marked as not re-ranked (an empty (nq, 0, 4) box array)."""
        return Ranking(self.ranks, self.scores, np.zeros((len(self.ranks), 0, 4), np.float32),
                       self.located, self.positions)

    def position(self, j: int, images: np.ndarray) -> np.ndarray:
        """0-based positions of ``images`` in query j's whole ranking: in the top, else as located."""
        images = np.asarray(images, dtype=np.int64)
        row = np.asarray(self.ranks[j], dtype=np.int64)
        out = np.full(len(images), -1, np.int64)
        order = np.argsort(row, kind="stable")
        at = np.minimum(np.searchsorted(row[order], images), max(len(row) - 1, 0))
        hit = (row[order][at] == images) if len(row) else np.zeros(len(images), bool)
        out[hit] = order[at[hit]]
        if not hit.all() and self.located is not None:
            known = self.located[j] >= 0
            lookup = dict(zip(self.located[j][known].tolist(), self.positions[j][known].tolist()))
            out[~hit] = [lookup.get(i, -1) for i in images[~hit].tolist()]
        if (out < 0).any():
            raise InstanceSearchError(
                f"query {j}: images {images[out < 0][:5].tolist()} are neither in the stored top {len(row)} nor "
                f"located; re-run the rank step")
        return out

    def kept(self, keep: int, images: list[np.ndarray], n_database: int) -> "Ranking":
        """The top ``keep`` results, with the positions of ``images[j]`` (query j's labelled images) in
        the whole ranking; the ranking itself where it keeps the whole database anyway."""
        k = min(keep, self.ranks.shape[1])
        if k >= n_database:
            return self
        width = max((len(i) for i in images), default=0)
        located = np.full((len(self.ranks), width), -1, np.int32)
        positions = np.full((len(self.ranks), width), -1, np.int64)
        for j, i in enumerate(images):
            located[j, :len(i)] = i
            positions[j, :len(i)] = self.position(j, i)
        boxes = None if self.boxes is None else self.boxes[:, :k]
        return Ranking(self.ranks[:, :k], self.scores[:, :k], boxes, located, positions)

    def after(self, start: "Ranking", n_database: int) -> "Ranking":
        """This ranking, computed from ``start`` by re-ordering inside start's stored top, with the
        positions of start's located images carried on (they moved only where they were in the top)."""
        if self is start or self.ranks.shape[1] >= n_database or start.located is None:
            return self
        if self.ranks.shape != start.ranks.shape:
            raise InstanceSearchError(
                f"a stage turned a ranking kept to its top {start.ranks.shape[1]} into {self.ranks.shape[1]} "
                f"results; it may only re-order inside the top")
        moved = Ranking(self.ranks, self.scores, located=start.located, positions=start.positions)
        positions = np.full(start.positions.shape, -1, np.int64)
        for j in range(len(self.ranks)):
            known = start.located[j] >= 0
            positions[j, known] = moved.position(j, start.located[j][known])
        return Ranking(self.ranks, self.scores, self.boxes, start.located, positions)

    def row(self, j: int, n_database: int) -> np.ndarray:
        """Query j's whole ranking as the metrics read it: the stored top, each located image at its
        position, -1 (an image no label names) everywhere else."""
        if self.located is None:
            return self.ranks[j]
        out = np.full(n_database, -1, np.int64)
        out[:self.ranks.shape[1]] = self.ranks[j]
        known = self.located[j] >= 0
        out[self.positions[j][known]] = self.located[j][known]
        return out


class Rows:
    """The whole rankings of every query, one row at a time (``rows[j]``): what the metrics index."""

    def __init__(self, ranking: Ranking, n_database: int):
        self.ranking, self.n_database = ranking, n_database

    def __len__(self) -> int:
        return len(self.ranking.ranks)

    def __getitem__(self, j: int) -> np.ndarray:
        return self.ranking.row(j, self.n_database)


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
