"""Per-query and mean metrics of a method's rankings, one per stage (first stage, re-ranked, ...).

Outputs of :func:`write_evaluation`:

- ``metrics.json`` (for ``dvc metrics``)::

    {"dataset": d, "method": m, "similarity": s,
     "first_stage": {"mAP": .., "NDCG": .., "mP@1": .., "mP@5": .., "mP@10": .., "seed_map": ..,
                     "seed_ndcg": .., "N-S": .., "queries": n},
     "rerank": {...same keys...}, ...one entry per stage given}

  means over queries, rounded to 6 decimals. A dataset with protocols (ROxford5k / RParis6k) adds
  ``"protocols": {"easy": {"first_stage": {..}, "rerank": {..}}, "medium": {..}, "hard": {..}}``;
  its top-level stages are then those of the queries' own labels (for the revisited datasets, the
  Medium protocol), so every metrics file has the same top-level keys;
- ``per_query.csv``: columns ``stage,query,ap,ndcg,p1,p5,p10,seed_map,seed_ndcg,ns4``, one row per stage (in the
  order given) and query in ground-truth order, floats written as ``%.6f``. A dataset with protocols has a
  ``protocol`` column after ``stage`` and one row per stage, protocol and query instead;
- ``pr.csv`` (optional, for ``dvc plots``): ``stage,recall,precision``, the 11-point interpolated
  precision-recall curve (precision at recall r = the best precision at any recall >= r), averaged
  over the queries' own labels.

A dataset without ground truth (a photo folder) is not evaluated: its metrics file says
``"evaluated": false`` (the tables leave it out) and its CSVs hold only their headers.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import numpy as np
import pandas as pd

from . import groundtruth, metrics
from .groundtruth import GRADES, GroundTruth
from .io import atomic_path, write_json
from .ranking_files import read_ranking
from .retrieval.ranking import Ranking, Rows

log = logging.getLogger(__name__)

PRECISION_AT = (1, 5, 10)  # revisitop's mP@k
METRIC_COLUMNS = ["ap", "ndcg", *(f"p{k}" for k in PRECISION_AT), "seed_map", "seed_ndcg", "ns4"]
# Column of the per-query table -> key of the summary (the seed's tables say mAP and NDCG).
# ns4 (positives in the top 4) averages to UKBench's N-S score.
SUMMARY_KEYS = {"ap": "mAP", "ndcg": "NDCG", **{f"p{k}": f"mP@{k}" for k in PRECISION_AT}, "seed_map": "seed_map",
                "seed_ndcg": "seed_ndcg", "ns4": "N-S"}
STAGES = ("first_stage", "rerank")  # the stages every method has; callers may add more (query expansion)
FLOAT_FORMAT = "%.6f"
RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


def _query_metrics(q: groundtruth.Query, ranks: np.ndarray, seed_top: int, seed_max_hits: int) -> dict:
    if not q.positives:
        # Only under a protocol (a revisited query with no easy image under Easy): every metric is
        # undefined, so the query is left out of every mean alike (revisitop skips it too).
        return {"query": q.name, **{c: np.nan for c in METRIC_COLUMNS}}
    grades = {**{i: GRADES["ok"] for i in q.ok}, **{i: GRADES["good"] for i in q.good}}
    return {
        "query": q.name,
        "ap": metrics.average_precision(ranks, q.positives, q.junk),
        "ndcg": metrics.ndcg(ranks, grades, q.junk),
        **{f"p{k}": metrics.precision_at(ranks, q.positives, k, q.junk) for k in PRECISION_AT},
        "seed_map": metrics.seed_map(ranks, q.positives, top=seed_top, max_hits=seed_max_hits),
        "seed_ndcg": metrics.seed_ndcg(ranks, q.good, q.ok, q.junk, top=seed_top),
        "ns4": metrics.ns_score(ranks, q.positives, k=4),
    }


def _rows(gnd: GroundTruth, ranks: Ranking | np.ndarray):
    """Each query's whole ranking: a (nq, N) array as it is, a stored ranking row by row."""
    return Rows(ranks, gnd.n_database) if isinstance(ranks, Ranking) else ranks


def evaluate_rankings(gnd: GroundTruth, ranks: Ranking | np.ndarray, *, seed_top: int, seed_max_hits: int,
                      protocol: str | None = None) -> pd.DataFrame:
    """One row per query (ground-truth order): ``query`` and :data:`METRIC_COLUMNS`.

    ``ranks``: (nq, N) database indices, or a :class:`Ranking` (kept to its top, with the located
    images). ``protocol``: evaluate with that protocol's labels (:meth:`Query.under`); None: the
    queries' own.
    """
    ranks = _rows(gnd, ranks)
    queries = gnd.queries if protocol is None else [q.under(protocol) for q in gnd.queries]
    rows = [_query_metrics(q, ranks[i], seed_top, seed_max_hits) for i, q in enumerate(queries)]
    table = pd.DataFrame(rows, columns=["query", *METRIC_COLUMNS])
    return table.astype({"ns4": "Int64"})  # a count: written as an integer, empty where undefined


def summarise(table: pd.DataFrame) -> dict:
    """Means over queries (NaN-valued queries, which have no positive, are left out), 6 decimals."""
    summary = {SUMMARY_KEYS[c]: round(float(np.nanmean(table[c].to_numpy(dtype=float, na_value=np.nan))), 6)
               for c in METRIC_COLUMNS}
    summary["queries"] = int(len(table))
    return summary


def _evaluate(gnd: GroundTruth, ranks: Ranking | np.ndarray, settings: dict, protocol: str | None = None) -> pd.DataFrame:
    """:func:`evaluate_rankings` with the params' ``evaluate`` settings."""
    return evaluate_rankings(gnd, ranks, seed_top=int(settings["seed_top"]),
                             seed_max_hits=int(settings["seed_max_hits"]), protocol=protocol)


def summary(gnd: GroundTruth, ranks: Ranking | np.ndarray, settings: dict) -> dict:
    """The mean metrics of one ranking (params ``evaluate`` settings), and each protocol's where the
    dataset has them (under ``protocols``)."""
    out = summarise(_evaluate(gnd, ranks, settings))
    if gnd.protocols:
        out["protocols"] = {p: summarise(_evaluate(gnd, ranks, settings, p)) for p in gnd.protocols}
    return out


def interpolated_pr(gnd: GroundTruth, ranks: Ranking | np.ndarray, levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """Mean over queries (with a positive) of the interpolated precision at each recall level."""
    ranks = _rows(gnd, ranks)
    curves = []
    for i, q in enumerate(gnd.queries):
        if not q.positives:
            continue
        precision, recall = metrics.precision_recall(ranks[i], q.positives, q.junk)
        # best precision at any recall >= r: a running maximum from the end of the ranking
        best = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, levels, side="left")
        curves.append(np.where(at < len(best), best[np.minimum(at, len(best) - 1)], 0.0))
    return np.mean(curves, axis=0) if curves else np.zeros(len(levels))


def _not_evaluated(gnd: GroundTruth, metrics_path, per_query_path, pr_path, dataset, method, similarity,
                   labels) -> dict:
    """A dataset without ground truth (a photo folder): a metrics file that says so, empty CSVs."""
    log.info("%s: no ground truth (a photo folder): nothing to evaluate, and no row in the tables", dataset)
    summary = {"dataset": dataset, "method": method, "similarity": similarity, **(labels or {}), "evaluated": False,
               "queries": len(gnd.queries)}
    with atomic_path(per_query_path) as tmp:
        pd.DataFrame(columns=["stage", "query", *METRIC_COLUMNS]).to_csv(tmp, index=False, lineterminator="\n")
    if pr_path is not None:
        with atomic_path(pr_path) as tmp:
            pd.DataFrame(columns=["stage", "recall", "precision"]).to_csv(tmp, index=False, lineterminator="\n")
    write_json(metrics_path, summary)
    return summary


def write_evaluation(gnd_path, rankings: Mapping[str, str | os.PathLike], metrics_path, per_query_path,
                     params: dict, dataset: str, method: str, similarity: str, pr_path=None,
                     labels: Mapping[str, str] | None = None) -> dict:
    """Evaluate each ranking of ``rankings`` (stage name -> rank file, in stage order: first_stage,
    rerank, ...); write the JSON summary, the per-query CSV and, if ``pr_path`` is given, the
    precision-recall curves. ``labels`` (e.g. frcnn's proposal source) are added to the summary.
    Returns the summary written.
    """
    gnd = groundtruth.load(gnd_path)
    if not gnd.labelled:
        return _not_evaluated(gnd, metrics_path, per_query_path, pr_path, dataset, method, similarity, labels)
    settings = params["evaluate"]
    ranks = {stage: read_ranking(path, gnd) for stage, path in rankings.items()}

    def tables(protocol: str | None) -> dict[str, pd.DataFrame]:
        return {stage: _evaluate(gnd, r, settings, protocol) for stage, r in ranks.items()}

    own = tables(None)
    summary = {"dataset": dataset, "method": method, "similarity": similarity, **(labels or {}),
               **{stage: summarise(t) for stage, t in own.items()}}
    if gnd.protocols:
        by_protocol = {p: tables(p) for p in gnd.protocols}
        summary["protocols"] = {p: {stage: summarise(t) for stage, t in ts.items()} for p, ts in by_protocol.items()}
        per_query = pd.concat([by_protocol[p][stage].assign(stage=stage, protocol=p)
                               for stage in ranks for p in gnd.protocols], ignore_index=True)
        per_query = per_query[["stage", "protocol", "query", *METRIC_COLUMNS]]
    else:
        per_query = pd.concat([t.assign(stage=stage) for stage, t in own.items()], ignore_index=True)
        per_query = per_query[["stage", "query", *METRIC_COLUMNS]]
    with atomic_path(per_query_path) as tmp:
        per_query.to_csv(tmp, index=False, float_format=FLOAT_FORMAT, lineterminator="\n", na_rep="")
    if pr_path is not None:
        pr = pd.concat([pd.DataFrame({"stage": stage, "recall": RECALL_LEVELS, "precision": interpolated_pr(gnd, r)})
                        for stage, r in ranks.items()], ignore_index=True)
        with atomic_path(pr_path) as tmp:
            pr.to_csv(tmp, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    write_json(metrics_path, summary)
    return summary
