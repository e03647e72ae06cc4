"""Searching: the first-stage ranking, the local re-ranking of its top, query expansion, and every
second-stage option side by side: steps of one :func:`..engine.retrieve`, each writing its ranking."""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
from tqdm import tqdm

from .. import evaluate
from ..engine import retrieve
from ..errors import InstanceSearchError
from ..index import open_index
from ..io import write_json
from ..ranking_files import kept_results, labelled_images, read_ranking, save_ranking
from ..retrieval.ranking import Ranking
from .declare import PathLike, step

log = logging.getLogger(__name__)


def _search(params: dict, similarity: str, gnd, index, until: str, start=None, out=None) -> None:
    ix = open_index(index, gnd)
    if not ix.gnd.queries:  # a photo folder without queries: an empty ranking, so the steps after it still run
        log.info("%s: no queries; the %s ranking is empty", gnd, until)
        empty = np.zeros((0, ix.n_database))
        save_ranking(out, Ranking(empty.astype(np.int32), empty.astype(np.float32), np.zeros((0, 0, 4), np.float32)))
        return
    queries = ix.benchmark_queries()
    keep = kept_results(params, ix.method.name)
    progress = tqdm(total=None, desc=until, unit="img", mininterval=5) if until != "first_stage" else None
    got = retrieve(ix, queries, params, similarity, until=until,
                   start=None if start is None else (start[0], _stored(start[1], ix, _needs(params, ix, start[0]))),
                   progress=None if progress is None else lambda done, total: progress.update(1))
    if progress is not None:
        progress.close()
    r = got[until].kept(keep, labelled_images(ix.gnd), ix.n_database)
    save_ranking(out, r)
    log.info("%s: %d queries over %d images (%s, %s); %d re-ranked each, the top %d stored", until, len(queries),
             ix.n_database, ix.method.name, similarity, r.reranked, r.ranks.shape[1])


def _needs(params: dict, ix, stage: str) -> int:
    """The results of each query that a step starting from ``stage``'s stored ranking reads."""
    p = params[ix.method.name]
    return max(p["rerank"].get("candidates", 0), p["expand"].get("neighbours", 0) if stage == "rerank" else 0)


def _stored(path, ix, need: int) -> Ranking:
    """A stored ranking, refused where it keeps fewer results than the step reads."""
    r = read_ranking(path, ix.gnd)
    if r.ranks.shape[1] < min(need, ix.n_database):
        raise InstanceSearchError(
            f"{path} keeps the top {r.ranks.shape[1]} results but {ix.method.name}'s re-ranking candidates or "
            f"expansion neighbours need {need}; raise rankings.keep to {need} (or re-run the steps after a change)")
    return r


GND = "normalised ground truth (the queries)"
INDEX = "index folder (encode step)"
# what every search reads: rerank.candidates, expand.neighbours decide how many results rank keeps
SEARCH = ("compute.threads", "similarity", "{method}.search", "rankings", "{method}.rerank")


@step(inputs={"gnd": GND, "index": INDEX}, outputs={"rank": "ranks and scores"}, wildcards=("similarity",),
      params=SEARCH, compute=True, method_code="family")
def rank(params: dict, similarity: str, gnd: PathLike, index: PathLike, rank: PathLike) -> None:
    """First-stage ranking of the whole database for every query."""
    _search(params, similarity, gnd, index, "first_stage", out=rank)


@step(inputs={"gnd": GND, "index": INDEX, "rank": "first-stage ranking (rank step)"},
      outputs={"rerank": "re-ranked ranks, scores and best regions"}, wildcards=("similarity",), params=SEARCH,
      compute=True, method_code="family")
def rerank(params: dict, similarity: str, gnd: PathLike, index: PathLike, rank: PathLike, rerank: PathLike) -> None:
    """Each query's top candidates re-scored locally (``rerank.candidates: 0`` passes the ranking through)."""
    _search(params, similarity, gnd, index, "rerank", start=("first_stage", rank), out=rerank)


@step(inputs={"gnd": GND, "index": INDEX, "rerank": "re-ranked ranking (rerank step)"},
      outputs={"expand": "the expanded queries' ranking"}, wildcards=("similarity",),
      params=(*SEARCH, "{method}.expand"), compute=True, method_code="family")
def expand(params: dict, similarity: str, gnd: PathLike, index: PathLike, rerank: PathLike, expand: PathLike) -> None:
    """Query expansion over the re-ranked top (``expand.mode: none`` passes the ranking through)."""
    _search(params, similarity, gnd, index, "expand", start=("rerank", rerank), out=expand)


def _merged(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s values put in, nested dicts merged (a copy: base is left alone)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@step(inputs={"gnd": GND, "index": INDEX, "rank": "first-stage ranking (rank step)"},
      outputs={"options": "each option's mean metrics (JSON)"}, wildcards=("similarity",),
      params=("compute.threads", "similarity", "{method}.search", "{method}.rerank", "{method}.expand", "evaluate"),
      compute=True, method_code="family")
def options(params: dict, similarity: str, gnd: PathLike, index: PathLike, rank: PathLike, options: PathLike) -> None:
    """Every second-stage option of the method (``Method.options``: re-rankings, an expansion), each
    run from the stored first stage with the params' other settings, evaluated side by side.

    Writes ``{"dataset", "method", "similarity", labels..., "first_stage": summary, "options":
    {name: summary}}`` (summaries as :func:`evaluate.summary`); a dataset without ground truth gets
    ``"evaluated": false``.
    """
    ix = open_index(index, gnd)
    m = ix.method
    head = {"dataset": ix.dataset, "method": m.name, "similarity": similarity, **m.labels(params[m.name], ix.dataset)}
    if not ix.gnd.labelled or not ix.gnd.queries:
        log.info("%s: no ground truth: no options to compare", ix.dataset)
        write_json(options, {**head, "evaluated": False})
        return
    queries = ix.benchmark_queries()
    variants = {name: {**params, m.name: _merged(params[m.name], override)}
                for name, override in m.options(params[m.name]).items()}
    first = _stored(rank, ix, max(_needs(p, ix, "first_stage") for p in [params, *variants.values()]))
    result = {**head, "first_stage": evaluate.summary(ix.gnd, first, params["evaluate"]), "options": {}}
    for name, variant in variants.items():
        started = time.perf_counter()
        searches = variant[m.name].get("search") != params[m.name].get("search")  # its own first stage
        got = retrieve(ix, queries, variant, similarity,
                       start=None if searches else ("first_stage", first))["expand"]
        result["options"][name] = evaluate.summary(ix.gnd, got, params["evaluate"])
        log.info("%s/%s/%s %s: mAP %.4f (first stage %.4f), %.1f s", ix.dataset, m.name, similarity, name,
                 result["options"][name]["mAP"], result["first_stage"]["mAP"], time.perf_counter() - started)
    write_json(options, result)
