"""Ranking files (rank.npz, rerank.npz, expand.npz): written by the pipeline's search steps, read by
the next step, evaluation and figures, always checked against the ground truth they claim to rank."""

from __future__ import annotations

import os

import numpy as np

from .errors import InstanceSearchError
from .groundtruth import GroundTruth
from .io import load_npz, save_npz
from .retrieval.ranking import Ranking


def save_ranking(path: str | os.PathLike, ranking: Ranking) -> None:
    arrays = {"ranks": ranking.ranks, "scores": ranking.scores}
    if ranking.boxes is not None:
        arrays["boxes"] = ranking.boxes
    save_npz(path, **arrays)


def load_ranking(path, gnd: GroundTruth, required: tuple[str, ...] = ("ranks",)) -> dict[str, np.ndarray]:
    """The arrays of a ranking file, checked against the ground truth it claims to rank.

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


def read_ranking(path, gnd: GroundTruth) -> Ranking:
    a = load_ranking(path, gnd, required=("ranks", "scores"))
    return Ranking(a["ranks"], a["scores"], a.get("boxes"))
