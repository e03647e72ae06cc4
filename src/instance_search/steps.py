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
from .download import sha256_file
from .engine import retrieve
from .errors import InstanceSearchError
from .index import extraction_settings, open_index, write
from .io import load_npz, save_npz, write_json
from .ranking_files import kept_results, labelled_images, read_ranking, save_ranking
from .retrieval.ranking import Ranking

log = logging.getLogger(__name__)


def extract(params: dict, method: str, gnd: str | os.PathLike, out: str | os.PathLike,
            part: tuple[int, int] | None = None) -> None:
    """Local features (with positions) of every image of the ground truth: database and query-only.
    ``part`` (i, n): only part i of n, into a part folder (:mod:`.features.parts`)."""
    m = methods.get(method)
    m.extract(params[method]["extract"], groundtruth.load(gnd), Path(out), part=part)


def gather_features(params: dict, dataset: str, method: str, gnd: str | os.PathLike, folder: str | os.PathLike,
                    out: str | os.PathLike) -> None:
    """The features one extraction writes, from the ``compute.parts`` part folders of the dataset in
    ``folder`` (named ``<i>-of-<n>``)."""
    n = _parts(params, dataset)
    m = methods.get(method)
    m.gather(params[method]["extract"], groundtruth.load(gnd), [Path(folder) / f"{i}-of-{n}" for i in range(n)],
             Path(out))


def learn(params: dict, method: str, gnd: str | os.PathLike, features: str | os.PathLike,
          out: str | os.PathLike) -> None:
    """The method's model (vocabulary, whitening), learned on the database images' features."""
    m = methods.get(method)
    save_npz(out, **m.learn(params[method]["codebook"], params["seed"], groundtruth.load(gnd), Path(features)))


def encode(params: dict, method: str, gnd: str | os.PathLike, features: str | os.PathLike,
           model: str | os.PathLike, out: str | os.PathLike, part: tuple[int, int] | None = None) -> None:
    """The index: every image encoded with the model, into the files the method searches. ``part`` (i, n):
    only part i of n of the images, into a part folder (methods that encode in parts: bags of words)."""
    m = methods.get(method)
    g = groundtruth.load(gnd)
    p = params[method]["encode"]
    # a codebook with a device (bags of words) assigns the words there too
    device = params[method]["codebook"].get("device")
    on = {} if device is None else {"device": device}
    if part is not None:
        if not getattr(m, "encodes_in_parts", False):
            raise InstanceSearchError(f"{method} encodes in one job (its encoding is a matrix product); "
                                      "leave out --part")
        config = {"model": sha256_file(model), "extraction": extraction_settings(features), "encoding": p}
        m.encode_part(p, g, Path(features), load_npz(model), part, Path(out), config, **on)
        return
    files = m.encode(p, g, Path(features), load_npz(model), **on)
    write(out, m, files, n_images=len(g.images), n_database=g.n_database, model=model,
          extraction=extraction_settings(features), encoding=p)


def gather_index(params: dict, dataset: str, method: str, gnd: str | os.PathLike, features: str | os.PathLike,
                 model: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike) -> None:
    """The index one encoding writes, from the ``compute.parts`` part folders of the dataset in ``folder``."""
    m = methods.get(method)
    g = groundtruth.load(gnd)
    p = params[method]["encode"]
    n = _parts(params, dataset)
    files = m.gather_encoded(p, g, [Path(folder) / f"{i}-of-{n}" for i in range(n)])
    write(out, m, files, n_images=len(g.images), n_database=g.n_database, model=model,
          extraction=extraction_settings(features), encoding=p)


def _parts(params: dict, dataset: str) -> int:
    return int(params["compute"].get("parts", {}).get(dataset, 1))


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
    write_json(out, result)
