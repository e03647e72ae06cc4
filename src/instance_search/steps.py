"""The pipeline's steps as functions of files: each reads its inputs, computes, writes atomically.

The workflow scripts call these with paths and the validated params; nothing here knows about
Snakemake or DVC, and nothing here knows a method by name: :mod:`.methods` does the work.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import evaluate, groundtruth, methods
from .engine import retrieve
from .index import extraction_settings, open_index, write
from .io import load_npz, save_npz, write_json
from .ranking_files import read_ranking, save_ranking
from .retrieval.ranking import Ranking

log = logging.getLogger(__name__)


def extract(params: dict, method: str, gnd: str | os.PathLike, out: str | os.PathLike) -> None:
    """Local features (with positions) of every image of the ground truth: database and query-only."""
    m = methods.get(method)
    m.extract(params[method]["extract"], groundtruth.load(gnd), Path(out))


def learn(params: dict, method: str, gnd: str | os.PathLike, features: str | os.PathLike,
          out: str | os.PathLike) -> None:
    """The method's model (vocabulary, whitening), learned on the database images' features."""
    m = methods.get(method)
    save_npz(out, **m.learn(params[method]["codebook"], params["seed"], groundtruth.load(gnd), Path(features)))


def encode(params: dict, method: str, gnd: str | os.PathLike, features: str | os.PathLike,
           model: str | os.PathLike, out: str | os.PathLike) -> None:
    """The index: every image encoded with the model, into the files the method searches."""
    m = methods.get(method)
    g = groundtruth.load(gnd)
    p = params[method]["encode"]
    files = m.encode(p, g, Path(features), load_npz(model))
    write(out, m, files, n_images=len(g.images), n_database=g.n_database, model=model,
          extraction=extraction_settings(features), encoding=p)


def _search(params: dict, similarity: str, gnd, index, until: str, start=None, out=None) -> None:
    ix = open_index(index, gnd)
    if not ix.gnd.queries:  # a photo folder without queries: an empty ranking, so the steps after it still run
        log.info("%s: no queries; the %s ranking is empty", gnd, until)
        empty = np.zeros((0, ix.n_database))
        save_ranking(out, Ranking(empty.astype(np.int32), empty.astype(np.float32), np.zeros((0, 0, 4), np.float32)))
        return
    queries = ix.benchmark_queries()
    progress = tqdm(total=None, desc=until, unit="img", mininterval=5) if until != "first_stage" else None
    got = retrieve(ix, queries, params, similarity, until=until,
                   start=None if start is None else (start[0], read_ranking(start[1], ix.gnd)),
                   progress=None if progress is None else lambda done, total: progress.update(1))
    if progress is not None:
        progress.close()
    save_ranking(out, got[until])
    r = got[until]
    log.info("%s: %d queries over %d images (%s, %s); %d re-ranked each", until, len(queries), ix.n_database,
             ix.method.name, similarity, r.reranked)


def rank(params: dict, similarity: str, gnd, index, out) -> None:
    """First-stage ranking of the whole database for every query."""
    _search(params, similarity, gnd, index, "first_stage", out=out)


def rerank(params: dict, similarity: str, gnd, index, rank, out) -> None:
    """Each query's top candidates re-scored locally (``rerank.candidates: 0`` passes the ranking through)."""
    _search(params, similarity, gnd, index, "rerank", start=("first_stage", rank), out=out)


def expand(params: dict, similarity: str, gnd, index, rerank, out) -> None:
    """Query expansion over the re-ranked top (``expand.mode: none`` passes the ranking through)."""
    _search(params, similarity, gnd, index, "expand", start=("rerank", rerank), out=out)


def _merged(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s values put in, nested dicts merged (a copy: base is left alone)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def options(params: dict, similarity: str, gnd, index, rank, out) -> None:
    """Every second-stage option of the method (``Method.options``: re-rankings, an expansion), each
    run from the stored first stage with the params' other settings, evaluated side by side.

    Writes ``{"dataset", "method", "similarity", labels..., "first_stage": summary, "options":
    {name: summary}}`` (summaries as :func:`evaluate.summary`); a dataset without ground truth gets
    ``"evaluated": false``.
    """
    ix = open_index(index, gnd)
    m = ix.method
    head = {"dataset": ix.dataset, "method": m.name, "similarity": similarity, **m.labels(params[m.name])}
    if not ix.gnd.labelled or not ix.gnd.queries:
        log.info("%s: no ground truth: no options to compare", ix.dataset)
        write_json(out, {**head, "evaluated": False})
        return
    queries = ix.benchmark_queries()
    first = read_ranking(rank, ix.gnd)
    result = {**head, "first_stage": evaluate.summary(ix.gnd, first.ranks, params["evaluate"]), "options": {}}
    for name, override in m.options(params[m.name]).items():
        started = time.perf_counter()
        got = retrieve(ix, queries, {**params, m.name: _merged(params[m.name], override)}, similarity,
                       start=("first_stage", first))["expand"]
        result["options"][name] = evaluate.summary(ix.gnd, got.ranks, params["evaluate"])
        log.info("%s/%s/%s %s: mAP %.4f (first stage %.4f), %.1f s", ix.dataset, m.name, similarity, name,
                 result["options"][name]["mAP"], result["first_stage"]["mAP"], time.perf_counter() - started)
    write_json(out, result)
