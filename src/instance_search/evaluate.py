"""Per-query and mean metrics of a ranking, for both stages (first stage and re-ranked).

Outputs of :func:`write_evaluation`:

- ``metrics.json`` (for ``dvc metrics``)::

    {"dataset": d, "method": m, "similarity": s,
     "first_stage": {"mAP": .., "NDCG": .., "seed_map": .., "seed_ndcg": .., "N-S": .., "queries": n},
     "rerank": {...same keys...}}

  means over queries, rounded to 6 decimals;
- ``per_query.csv``: columns ``stage,query,ap,ndcg,seed_map,seed_ndcg,ns4``, one row per stage and
  query in ground-truth order, floats written as ``%.6f``.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import groundtruth, metrics
from .search import load_ranking
from .groundtruth import GRADES, GroundTruth
from .io import atomic_path, write_json

METRIC_COLUMNS = ["ap", "ndcg", "seed_map", "seed_ndcg", "ns4"]
# Column of the per-query table -> key of the summary (the seed's tables say mAP and NDCG).
# ns4 (positives in the top 4) averages to UKBench's N-S score.
SUMMARY_KEYS = {"ap": "mAP", "ndcg": "NDCG", "seed_map": "seed_map", "seed_ndcg": "seed_ndcg", "ns4": "N-S"}
STAGES = ("first_stage", "rerank")
FLOAT_FORMAT = "%.6f"


def _query_metrics(q: groundtruth.Query, ranks: np.ndarray, seed_top: int, seed_max_hits: int) -> dict:
    grades = {**{i: GRADES["ok"] for i in q.ok}, **{i: GRADES["good"] for i in q.good}}
    return {
        "query": q.name,
        "ap": metrics.average_precision(ranks, q.positives, q.junk),
        "ndcg": metrics.ndcg(ranks, grades, q.junk),
        "seed_map": metrics.seed_map(ranks, q.positives, top=seed_top, max_hits=seed_max_hits),
        "seed_ndcg": metrics.seed_ndcg(ranks, q.good, q.ok, q.junk, top=seed_top),
        "ns4": metrics.ns_score(ranks, q.positives, k=4),
    }


def evaluate_rankings(gnd: GroundTruth, ranks: np.ndarray, *, seed_top: int, seed_max_hits: int) -> pd.DataFrame:
    """One row per query (ground-truth order): ``query, ap, ndcg, seed_map, seed_ndcg, ns4``."""
    rows = [_query_metrics(q, ranks[i], seed_top, seed_max_hits) for i, q in enumerate(gnd.queries)]
    return pd.DataFrame(rows, columns=["query", *METRIC_COLUMNS])


def summarise(table: pd.DataFrame) -> dict:
    """Means over queries (NaN-valued queries, which have no positive, are left out), 6 decimals."""
    summary = {SUMMARY_KEYS[c]: round(float(np.nanmean(table[c].to_numpy(dtype=float))), 6) for c in METRIC_COLUMNS}
    summary["queries"] = int(len(table))
    return summary


def write_evaluation(gnd_path, rank_path, rerank_path, metrics_path, per_query_path, params: dict,
                     dataset: str, method: str, similarity: str) -> dict:
    """Evaluate the first-stage and the re-ranked rankings; write the JSON summary and the per-query CSV.

    Returns the summary written to ``metrics_path``.
    """
    gnd = groundtruth.load(gnd_path)
    settings = params["evaluate"]
    tables = {
        stage: evaluate_rankings(gnd, load_ranking(path, gnd)["ranks"], seed_top=int(settings["seed_top"]),
                                 seed_max_hits=int(settings["seed_max_hits"]))
        for stage, path in zip(STAGES, (rank_path, rerank_path))
    }
    per_query = pd.concat([t.assign(stage=stage) for stage, t in tables.items()], ignore_index=True)
    per_query = per_query[["stage", "query", *METRIC_COLUMNS]]
    summary = {"dataset": dataset, "method": method, "similarity": similarity,
               **{stage: summarise(t) for stage, t in tables.items()}}
    with atomic_path(per_query_path) as tmp:
        per_query.to_csv(tmp, index=False, float_format=FLOAT_FORMAT, lineterminator="\n", na_rep="")
    write_json(metrics_path, summary)
    return summary
