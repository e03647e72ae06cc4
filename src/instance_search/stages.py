"""The pipeline's steps as functions of files: each reads its inputs, computes, writes atomically.

The workflow scripts call these with paths and the validated params; nothing here knows about
Snakemake or DVC.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from . import bow, codebook, expand as expand_mod, frcnn_stages, groundtruth, methods, search, whitening
from . import rerank as rerank_mod
from .errors import InstanceSearchError
from .features.store import FeatureStore
from .io import load_npz, save_npz

log = logging.getLogger(__name__)

# The bag-of-words methods (methods.py) share the steps below; frcnn has its own (frcnn_stages.py).
FRCNN = "frcnn"
METHODS = (*methods.METHODS, FRCNN)


def _method_params(params: dict, method: str) -> dict:
    if method != FRCNN:
        methods.get(method)
    return params[method]


def extract(params: dict, method: str, gnd_path: str, out_dir: str) -> None:
    """Local features of every image of the ground truth (database and query-only images)."""
    p = _method_params(params, method)["extract"]
    if method == FRCNN:
        return frcnn_stages.extract(p, groundtruth.load(gnd_path), out_dir)
    methods.get(method).extract(p, groundtruth.load(gnd_path), out_dir)


def _features(store: FeatureStore):
    return methods.get(store.config["method"]).shard_features(store.config)


def train_codebook(params: dict, method: str, features: str, gnd_path: str, out: str) -> None:
    """The vocabulary: optional PCA-whitening and k-means, both learned on one seeded database sample."""
    p = _method_params(params, method)["codebook"]
    gnd = groundtruth.load(gnd_path)
    if method == FRCNN:
        return frcnn_stages.train_codebook(p, gnd, features, out)
    store = FeatureStore(features)
    sample = codebook.sample_descriptors(store, gnd.n_database, p["sample"], params["seed"], _features(store))
    white = None
    if p["pca_dim"]:
        white = whitening.fit(sample, p["pca_dim"], key=f"{method}.codebook.pca_dim")
        sample = whitening.apply(sample, white)
    try:
        centroids = codebook.train(sample, p["words"], p["iterations"], params["seed"])
    except InstanceSearchError as exc:
        raise InstanceSearchError(f"params {method}.{exc}") from None
    save_npz(out, **codebook.Vocabulary(centroids, white).to_arrays())


def encode(params: dict, method: str, gnd_path: str, features: str, codebook_path: str,
           bow_out: str, assign_out: str) -> None:
    """Assign every feature to its word; write the BoW counts, word weights and assignment maps."""
    p = _method_params(params, method)["encode"]
    gnd = groundtruth.load(gnd_path)
    if method == FRCNN:
        return frcnn_stages.encode(gnd, features, codebook_path, bow_out, assign_out)
    store = FeatureStore(features)
    if store.n_images != len(gnd.images):
        raise InstanceSearchError(f"{features}: {store.n_images} images but {gnd_path} lists {len(gnd.images)}; re-run extract")
    vocab = codebook.Vocabulary.from_arrays(load_npz(codebook_path))
    read = _features(store)
    xys, words, counts = [], [], []
    for first, sh in store.shards():
        xy, x, off = read(sh)
        xys.append(xy)
        words.append(vocab.words(x))
        counts.append(np.diff(off))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    maps = bow.AssignmentMaps(
        xy=np.concatenate(xys), words=np.concatenate(words), offsets=offsets,
        width=np.array([im.width for im in gnd.images], np.int32),
        height=np.array([im.height for im in gnd.images], np.int32))
    counts_m = bow.counts_matrix(maps.words, maps.offsets, len(vocab))
    idf = bow.word_weights(counts_m, gnd.n_database, p["weighting"])
    save_npz(bow_out, **bow.save_bow(counts_m, idf, gnd.n_database))
    save_npz(assign_out, **maps.to_arrays())
    log.info("encoded %d features of %d images into %d words (%s)", len(maps.words), len(gnd.images),
             len(vocab), p["weighting"])


def _load_index(gnd_path: str, bow_path: str, assign_path: str):
    gnd = groundtruth.load(gnd_path)
    counts, idf, n_db = bow.load_bow(load_npz(bow_path))
    maps = bow.AssignmentMaps.from_arrays(load_npz(assign_path))
    if counts.shape[0] != len(gnd.images) or n_db != gnd.n_database:
        raise InstanceSearchError(f"{bow_path}: built for another image list than {gnd_path}; re-run encode")
    return gnd, counts, idf, maps


def rank(params: dict, method: str, similarity: str, gnd_path: str, bow_path: str,
         assign_path: str, out: str) -> None:
    """First-stage ranking of the whole database for every query."""
    if method == FRCNN:
        return frcnn_stages.rank(_method_params(params, method), similarity, groundtruth.load(gnd_path), bow_path,
                                 assign_path, out)
    p = _method_params(params, method)["search"]
    gnd, counts, idf, maps = _load_index(gnd_path, bow_path, assign_path)
    q = search.weighted(search.query_counts(gnd, maps, counts.shape[1], p["query"],
                                            methods.get(method).box_fallback), idf)
    d = search.weighted(counts[:gnd.n_database], idf)
    scores = search.similarity(q, d, similarity, p["weight_absent"])
    ranks, ranked_scores = search.rank(scores)
    save_npz(out, ranks=ranks, scores=ranked_scores)
    log.info("ranked %d queries over %d images (%s, %s query)", len(gnd.queries), gnd.n_database,
             similarity, p["query"])


def rerank(params: dict, method: str, similarity: str, gnd_path: str, bow_path: str,
           assign_path: str, rank_path: str, out: str) -> None:
    """Re-score each query's top results by their best sliding window against the query box.

    The window query is always the box (LS), whatever the first stage used: the box is what the
    user asked for. ``top: 0`` turns re-ranking off (the first-stage ranking is passed through).
    """
    p = _method_params(params, method)
    if method == FRCNN:
        return frcnn_stages.rerank(p, similarity, groundtruth.load(gnd_path), bow_path, assign_path, rank_path, out)
    r, s = p["rerank"], p["search"]
    gnd, counts, idf, maps = _load_index(gnd_path, bow_path, assign_path)
    first = search.load_ranking(rank_path, gnd, required=("ranks", "scores"))
    if r["top"] == 0:
        save_npz(out, ranks=first["ranks"], scores=first["scores"], boxes=np.zeros((len(gnd.queries), 0, 4), np.float32),
                 top=np.array(0))
        return
    q = search.weighted(search.query_counts(gnd, maps, counts.shape[1], "ls", methods.get(method).box_fallback), idf)
    progress = tqdm(total=None, desc="rerank", unit="img", mininterval=5)
    ranks, scores, boxes = rerank_mod.rerank(
        first["ranks"], first["scores"], q, maps.image, idf,
        top=r["top"], cell=r["cell"], scales=r["scales"], aspect_ratios=r["aspect_ratios"], stride=r["stride"],
        similarity=similarity, alpha=s["weight_absent"], progress=lambda done, total: progress.update(1))
    progress.close()
    save_npz(out, ranks=ranks.astype(np.int32), scores=scores.astype(np.float32), boxes=boxes,
             top=np.array(boxes.shape[1]))
    log.info("re-ranked the top %d of %d queries by sliding windows (%s)", boxes.shape[1], len(gnd.queries), similarity)


def expand(params: dict, method: str, similarity: str, gnd_path: str, bow_path: str, assign_path: str,
           rerank_path: str, out: str) -> None:
    """Query expansion (expand.mode: none, gqe, lqe) over the top of the re-ranked list.

    The expanded query re-scores the re-ranked top N (rerank.top) by their best windows, as the
    re-ranking did with the plain query; the rest keep their order. ``none`` passes the list through.
    """
    p = _method_params(params, method)
    if method == FRCNN:
        return frcnn_stages.expand(p, similarity, groundtruth.load(gnd_path), bow_path, assign_path, rerank_path, out)
    e, r = p["expand"], p["rerank"]
    gnd, counts, idf, maps = _load_index(gnd_path, bow_path, assign_path)
    prev = search.load_ranking(rerank_path, gnd, required=("ranks", "scores", "boxes"))
    if e["mode"] == "none":
        save_npz(out, ranks=prev["ranks"], scores=prev["scores"], boxes=prev["boxes"])
        return
    if r["top"] == 0:
        raise InstanceSearchError(f"{method}.expand.mode={e['mode']} re-scores the re-ranked top results, but "
                                  f"{method}.rerank.top is 0; raise it or set expand.mode: none")
    fallback = methods.get(method).box_fallback
    q = search.weighted(search.query_counts(gnd, maps, counts.shape[1], p["search"]["query"], fallback), idf)
    d = search.weighted(counts[:gnd.n_database], idf)
    nb = expand_mod.neighbour_vectors(e["mode"], e["top"], prev["ranks"], d, maps=maps, boxes=prev["boxes"], idf=idf)
    ranks, scores, boxes = rerank_mod.rerank(
        prev["ranks"], prev["scores"], expand_mod.expand(q, nb), maps.image, idf,
        top=r["top"], cell=r["cell"], scales=r["scales"], aspect_ratios=r["aspect_ratios"], stride=r["stride"],
        similarity=similarity, alpha=p["search"]["weight_absent"])
    save_npz(out, ranks=ranks.astype(np.int32), scores=scores.astype(np.float32), boxes=boxes)
    log.info("expanded %d queries with their top %d (%s, %s)", len(gnd.queries), e["top"], e["mode"], similarity)
