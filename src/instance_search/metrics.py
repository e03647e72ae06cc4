"""Retrieval metrics for one query, written as the protocols state them.

Every function takes ``ranks``: the database indices of one query, best first. The ranking given
defines the order; ties in score must already be broken by the caller (the rank step uses a
stable sort on the database index), so the metrics never reorder anything.

Two families:

- standard: :func:`average_precision` (official Oxford/Paris ``compute_ap``), :func:`ndcg`,
  :func:`precision_at` (revisitop's mP@k), :func:`precision_recall`, :func:`ns_score` (UKBench);
- seed-comparable: :func:`seed_map` and :func:`seed_ndcg`, the definitions the reproduced student
  system used (reference.md, section 1), kept only so each of its numbers has a counterpart.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# The seed graded junk as relevant (grade 1) in its NDCG; the standard NDCG removes junk instead.
SEED_GRADES = {"good": 3, "ok": 2, "junk": 1}


def _without_junk(ranks, junk) -> np.ndarray:
    """The junk-free ranking: junk images neither count nor advance the rank."""
    ranks, junk = np.asarray(ranks), np.asarray(junk)
    return ranks[~np.isin(ranks, junk)] if junk.size else ranks


def _hit_positions(ranks, positives) -> np.ndarray:
    """0-based positions in ``ranks`` that hold a positive."""
    return np.flatnonzero(np.isin(np.asarray(ranks), np.asarray(positives)))


def _grade_table(grades) -> tuple[np.ndarray, np.ndarray]:
    """A ``{index: grade}`` mapping or an ``(indices, grades)`` pair -> (sorted indices, grades)."""
    if isinstance(grades, Mapping):
        indices, values = list(grades.keys()), list(grades.values())
    else:
        indices, values = grades
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(indices, kind="stable")
    return indices[order], values[order]


def _grades_along(ranks, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The grade of each ranked image (0 for ungraded ones), via a sorted lookup table."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if indices.size == 0 or ranks.size == 0:
        return np.zeros(ranks.shape, dtype=np.float64)
    pos = np.minimum(np.searchsorted(indices, ranks), indices.size - 1)
    return np.where(indices[pos] == ranks, values[pos], 0.0)


def _dcg(rel: np.ndarray) -> float:
    """DCG = sum_i (2^rel_i - 1) / log2(i + 1), i the 1-based position; only graded positions add."""
    nz = np.flatnonzero(rel)
    return float(np.sum((2.0 ** rel[nz] - 1.0) / np.log2(nz + 2.0)))


def average_precision(ranks, positives, junk=()) -> float:
    """Official Oxford/Paris average precision (``compute_ap``).

    Junk is removed from the ranking first. With npos = number of distinct positives (retrieved or
    not) and r the 0-based junk-free rank of the k-th positive found (k = 1, 2, ...), the trapezoid
    rule over the precision-recall curve gives::

        AP = (1 / npos) * sum_k ((k - 1) / r + k / (r + 1)) / 2,   with (k - 1) / r := 1 when r = 0

    i.e. at each positive, recall grows by 1/npos and the area added is that step times the mean of
    the precision before it and the precision at it (precision before the first position = 1).
    Positives never retrieved add nothing but still count in npos. Returns NaN when npos = 0
    (undefined; revisitop skips such queries).
    """
    npos = np.unique(np.asarray(positives)).size
    if npos == 0:
        return float("nan")
    r = _hit_positions(_without_junk(ranks, junk), positives).astype(np.float64)
    k = np.arange(1, r.size + 1, dtype=np.float64)
    precision_before = np.where(r == 0, 1.0, (k - 1) / np.maximum(r, 1.0))
    precision_at = k / (r + 1)
    return float(np.sum((precision_before + precision_at) / 2) / npos)


def precision_at(ranks, positives, k: int, junk=()) -> float:
    """Precision at ``k`` as revisitop's ``compute_map`` computes it (its mP@1, 5, 10).

    Junk is removed from the ranking first. With p_1 < p_2 < ... the 1-based junk-free positions of
    the positives found and kq = min(k, p_last), the position of the last positive::

        P@k = |{p_i <= kq}| / kq

    So a query whose positives all sit within the top k is not charged for k beyond the last of
    them (one positive at rank 1 gives P@5 = 1, not 0.2): revisitop's choice, kept so the numbers
    compare with the published ones. NaN when the query has no positive or none is ranked.
    """
    if k < 1:
        raise ValueError(f"precision at k needs k >= 1, got {k}")
    pos = _hit_positions(_without_junk(ranks, junk), positives) + 1
    if np.unique(np.asarray(positives)).size == 0 or pos.size == 0:
        return float("nan")
    kq = min(k, int(pos[-1]))
    return float(np.count_nonzero(pos <= kq) / kq)


def precision_recall(ranks, positives, junk=()) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each position of the junk-free ranking.

    precision[i] = hits in the first i + 1 / (i + 1);  recall[i] = hits in the first i + 1 / npos.
    """
    clean = _without_junk(ranks, junk)
    npos = np.unique(np.asarray(positives)).size
    hits = np.cumsum(np.isin(clean, np.asarray(positives)), dtype=np.float64)
    precision = hits / np.arange(1, clean.size + 1)
    recall = hits / npos if npos else np.zeros_like(hits)
    return precision, recall


def ndcg(ranks, grades: Mapping[int, int] | tuple[Sequence[int], Sequence[int]], junk=()) -> float:
    """Normalised discounted cumulative gain over the full junk-free ranking.

    DCG = sum_i (2^rel_i - 1) / log2(i + 1) with i the 1-based junk-free position and rel_i the grade
    of the image there (0 if ungraded; good = 3, ok = 2 in :data:`groundtruth.GRADES`).
    NDCG = DCG / IDCG, where IDCG is the DCG of *all* graded images of the query sorted by grade,
    retrieved or not. Returns NaN when the query has no graded image.
    """
    indices, values = _grade_table(grades)
    ideal = _dcg(np.sort(values[values > 0])[::-1])
    if ideal == 0:
        return float("nan")
    return _dcg(_grades_along(_without_junk(ranks, junk), indices, values)) / ideal


def seed_map(ranks, positives, top: int = 100, max_hits: int = 20) -> float:
    """The seed's "mAP" for one query (not average precision; reference.md, section 1).

    Over the first ``top`` results (junk NOT removed, so it counts as a miss), take the positions
    r_1 < r_2 < ... (0-based) of the first h <= ``max_hits`` positives and return::

        seed_map = (1 / h) * sum_{k=1..h} k / (r_k + 1)        (0 when h = 0)

    It divides by the hits found, not by the number of positives, so missing positives cost nothing.
    """
    r = _hit_positions(np.asarray(ranks)[:top], positives)[:max_hits]
    if r.size == 0:
        return 0.0
    return float(np.mean(np.arange(1, r.size + 1) / (r + 1.0)))


def seed_ndcg(ranks, good, ok=(), junk=(), top: int = 100) -> float:
    """The seed's "NDCG" for one query (reference.md, section 1).

    Grades good = 3, ok = 2, junk = 1 (:data:`SEED_GRADES`; an image in several lists gets its
    highest grade). With rel_i the grades of the first ``top`` results (junk kept)::

        seed_ndcg = DCG(rel) / DCG(rel sorted descending),   DCG = sum_i (2^rel_i - 1) / log2(i + 1)

    The ideal ordering is that of the *same* top list, so relevant images never retrieved do not
    count. 0 when the list holds no graded image.
    """
    grades: dict[int, int] = {}
    for kind, members in (("junk", junk), ("ok", ok), ("good", good)):  # ascending: higher grade wins
        grades.update((int(i), SEED_GRADES[kind]) for i in members)
    rel = _grades_along(np.asarray(ranks)[:top], *_grade_table(grades))
    ideal = _dcg(np.sort(rel)[::-1])
    return _dcg(rel) / ideal if ideal > 0 else 0.0


def ns_score(ranks, positives, k: int = 4) -> int:
    """UKBench N-S score of one query: the number of positives among the first ``k`` results."""
    return int(np.isin(np.asarray(ranks)[:k], np.asarray(positives)).sum())
