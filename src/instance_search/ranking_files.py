"""Ranking files (rank.npz, rerank.npz, expand.npz): written by the pipeline's search steps, read by
the next step, evaluation and figures, always checked against the ground truth they claim to rank.

Arrays: ``ranks`` and ``scores`` (queries x K, best first), ``boxes`` after a re-ranking, and where K
is less than the database (``rankings.keep``): ``located`` and ``positions``, where each image the
query's ground truth names lies in the whole ranking (:class:`~.retrieval.ranking.Ranking`). So a
file grows with queries x (K + labels), never with queries x database.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InstanceSearchError
from .groundtruth import GroundTruth
from .io import load_npz, save_npz
from .retrieval.ranking import Ranking


def kept_results(params: dict, method: str) -> int:
    """How many results of each query a stored ranking keeps: rankings.keep, and at least the
    re-ranking's candidates (what the next step reads)."""
    return max(int(params["rankings"]["keep"]), int(params[method]["rerank"].get("candidates", 0)))


def labelled_images(gnd: GroundTruth) -> list[np.ndarray]:
    """Per query, the database images any of its labels names (every protocol's): their positions
    are all the metrics read beyond the stored top."""
    out = []
    for q in gnd.queries:
        names = [*q.good, *q.ok, *q.junk]
        for _, labels in q.protocols:
            names += [*labels.good, *labels.ok, *labels.junk]
        out.append(np.unique(np.asarray(names, dtype=np.int64)))
    return out


def save_ranking(path: str | os.PathLike, ranking: Ranking) -> None:
    arrays = {"ranks": ranking.ranks, "scores": ranking.scores}
    if ranking.boxes is not None:
        arrays["boxes"] = ranking.boxes
    if ranking.located is not None:
        arrays["located"], arrays["positions"] = ranking.located, ranking.positions
    save_npz(path, **arrays)


def _error(path, what: str) -> InstanceSearchError:
    return InstanceSearchError(f"{path}: {what}; re-run the step that produces it")


def load_ranking(path, gnd: GroundTruth, required: tuple[str, ...] = ("ranks",)) -> dict[str, np.ndarray]:
    """The arrays of a ranking file, checked against the ground truth it claims to rank.

    ``ranks`` must be (n_queries, K) database indices, K the whole database or, with ``located`` and
    ``positions``, fewer; every other required array must have one row per query (``scores`` the
    very shape of ``ranks``).
    """
    arrays = load_npz(path)
    missing = sorted(set(required) - arrays.keys())
    if missing:
        raise _error(path, f"missing arrays {missing}")
    ranks = arrays["ranks"]
    n, nq = gnd.n_database, len(gnd.queries)
    if ranks.ndim != 2 or ranks.shape[0] != nq or ranks.shape[1] > n:
        raise _error(path, f"ranks have shape {ranks.shape} but the ground truth has {nq} queries x {n} database images")
    if ranks.size and (ranks.min() < 0 or ranks.max() >= n):
        raise _error(path, "ranks hold indices outside the database")
    located = "located" in arrays and "positions" in arrays
    if ranks.shape[1] < n and nq and not located:
        raise _error(path, f"ranks keep the top {ranks.shape[1]} of {n} images but do not locate the labelled ones")
    if located and (arrays["located"].shape != arrays["positions"].shape or arrays["located"].shape[:1] != (nq,)
                    or (arrays["positions"].size and arrays["positions"].max() >= n)):
        raise _error(path, "located images and positions do not match the ranks")
    for name in required:
        shape = arrays[name].shape
        if shape[:1] != ranks.shape[:1] or (name == "scores" and shape != ranks.shape):
            raise _error(path, f"array {name} does not match the ranks' shape")
    return arrays


def read_ranking(path, gnd: GroundTruth) -> Ranking:
    a = load_ranking(path, gnd, required=("ranks", "scores"))
    return Ranking(a["ranks"], a["scores"], a.get("boxes"), a.get("located"), a.get("positions"))
