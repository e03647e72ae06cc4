"""The pipeline's steps as functions of files: each reads its inputs, computes, writes atomically.

The workflow scripts call these with paths and the validated params; nothing here knows about
Snakemake or DVC, and nothing here knows a method by name: :mod:`.methods` does the work.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import groundtruth, methods
from .engine import retrieve
from .index import extraction_settings, open_index, write
from .io import load_npz, save_npz
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
