"""One retrieval path: ``retrieve(index, queries, params, similarity)``.

The pipeline's rank, rerank and expand steps, ``instance-search query`` and the web page all call
it; the interactive path is the pipeline's path with one query, never a second copy. The stages:

- ``first_stage``: the method's search of the whole database;
- ``rerank``: its top candidates re-scored locally (windows, proposals);
- ``expand``: query expansion, the candidates re-scored with the expanded query.

A step that starts from a stored ranking passes it as ``start`` with the stage it came from.
"""

from __future__ import annotations

from typing import Callable

from .errors import InstanceSearchError
from .index import Index
from .methods.base import Queries
from .retrieval.ranking import Ranking

STAGES = ("first_stage", "rerank", "expand")


def retrieve(index: Index, queries: Queries, params: dict, similarity: str, *, until: str = "expand",
             start: tuple[str, Ranking] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Ranking]:
    """Rankings of the index's database for ``queries``, one per stage computed, up to ``until``.

    params: the validated params file; the method's section and ``similarity.weight_absent`` are read.
    """
    if until not in STAGES:
        raise InstanceSearchError(f"unknown stage {until!r}; expected one of {', '.join(STAGES)}")
    method, p = index.method, params[index.method.name]
    alpha = params["similarity"]["weight_absent"]
    out: dict[str, Ranking] = {}
    done = -1
    if start is not None:
        stage, ranking = start
        done = STAGES.index(stage)
        out[stage] = ranking
    last = STAGES.index(until)
    if done < 0 <= last:
        out["first_stage"] = method.search(index.db, queries, p, similarity, alpha)
    n = index.n_database  # a stored ranking kept to its top: each stage carries the located positions on
    if done < 1 <= last:
        first = out["first_stage"]
        out["rerank"] = method.rerank(index.db, queries, first, p, similarity, alpha, progress).after(first, n)
    if done < 2 <= last:
        got = out["rerank"]
        out["expand"] = method.expand(index.db, queries, got, p, similarity, alpha).after(got, n)
    return out
