"""Approximate nearest neighbours for global vectors: a faiss inverted-file index (IVF) that proposes
each query's candidates, whose scores are then computed exactly.

- **Build** (:func:`build`): k-means coarse quantiser of ``nlist`` cells (inner product) trained on
  ``train`` database rows taken at even intervals (no sampling randomness; faiss' k-means seed is its
  fixed default), each row stored in its cell, as is (``pq: 0``, IVF-Flat) or product-quantised to
  ``pq`` bytes (IVF-PQ). The index is stored as its faiss serialisation (a uint8 array): same vectors
  and settings, same bytes (faiss' k-means and IVF adding give the same result on any thread count:
  each thread owns whole centroids / whole lists and walks the rows in order).
- **Search** (:func:`search`): the ``nprobe`` cells nearest the query scanned for the top
  ``candidates`` rows by (approximate) inner product; those candidates scored exactly with the chosen
  similarity against the stored vectors (so the weighted cosine stays the weighted cosine: the
  index only proposes, by the cosine, which it equals wherever the query has no zero coordinate), and
  sorted; the rest of the database follows in database order, its scores below every candidate's
  (the lowest candidate score - 1, as :func:`.ranking.reorder` marks results it did not re-score),
  so a ranking stays a whole ranking and the metrics find every image in it.

With ``nprobe = nlist`` and ``pq: 0`` the scan is exhaustive: the candidates are the exact top
``candidates`` (up to ties).
"""

from __future__ import annotations

import numpy as np

from ..errors import InstanceSearchError
from . import linalg
from . import similarity as sim

KINDS = ("none", "ivf")
BUILD_KEYS = ("kind", "min_images", "nlist", "pq", "train")
SEARCH_KEYS = ("nprobe", "candidates")
FAISS_SEED = 1234  # faiss' ClusteringParameters default, set explicitly so a faiss default change shows here


def _int(s: dict, key: str, prefix: str, low: int) -> int:
    v = s.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InstanceSearchError(f"{prefix}.{key}={v!r}: must be an integer >= {low}")
    return v


def _known_keys(s, prefix: str, keys: tuple[str, ...]) -> None:
    """``s`` is a mapping of ``keys`` only (each value is checked by the caller)."""
    if not isinstance(s, dict):
        raise InstanceSearchError(f"{prefix}={s!r}: must be a mapping with {', '.join(keys)}")
    unknown = sorted(set(s) - set(keys))
    if unknown:
        raise InstanceSearchError(f"{prefix}.{unknown[0]}: unknown setting; expected {', '.join(keys)}")


def check_build(s: dict, prefix: str = "gem.encode.ann") -> dict:
    """The build settings, each checked (a one-line error naming the key)."""
    _known_keys(s, prefix, BUILD_KEYS)
    if s.get("kind") not in KINDS:
        raise InstanceSearchError(f"{prefix}.kind={s.get('kind')!r}: expected one of {', '.join(KINDS)}")
    return {"kind": s["kind"], "min_images": _int(s, "min_images", prefix, 1), "nlist": _int(s, "nlist", prefix, 0),
            "pq": _int(s, "pq", prefix, 0), "train": _int(s, "train", prefix, 1)}


def check_search(s: dict, prefix: str = "gem.search.ann") -> dict:
    _known_keys(s, prefix, SEARCH_KEYS)
    return {"nprobe": _int(s, "nprobe", prefix, 1), "candidates": _int(s, "candidates", prefix, 1)}


def wanted(s: dict, n_database: int) -> bool:
    """Whether these build settings ask for an index over a database of this size."""
    s = check_build(s)
    return s["kind"] != "none" and n_database >= s["min_images"]


def nlist_for(s: dict, n: int) -> int:
    """The cell count: ``nlist``, or (0) ~4 sqrt(N), at most train/39 (faiss' fewest training rows a cell)."""
    return s["nlist"] or max(1, min(int(4 * np.sqrt(n)), min(s["train"], n) // 39))


def build(vectors: np.ndarray, s: dict, prefix: str = "gem.encode.ann") -> np.ndarray:
    """The faiss index of the (L2-normalised) rows of ``vectors``, serialised: uint8 (bytes,)."""
    import faiss

    s = check_build(s, prefix)
    x = np.ascontiguousarray(vectors, np.float32)
    n, d = x.shape
    nlist = nlist_for(s, n)
    if nlist > n:
        raise InstanceSearchError(f"{prefix}.nlist={s['nlist']}: more cells than the {n} database vectors")
    if s["pq"] and d % s["pq"]:
        raise InstanceSearchError(f"{prefix}.pq={s['pq']}: must divide the vector dimension {d}")
    spec = f"IVF{nlist},{'PQ' + str(s['pq']) if s['pq'] else 'Flat'}"
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = FAISS_SEED
    if s["pq"]:
        index.pq.cp.seed = FAISS_SEED
        index.do_polysemous_training = False  # the factory's default: minutes of annealing no search here uses
    train = x[np.linspace(0, n - 1, min(s["train"], n)).astype(np.int64)] if s["train"] < n else x
    if len(train) < nlist:
        raise InstanceSearchError(f"{prefix}.train={s['train']}: fewer training vectors than the {nlist} cells")
    index.train(train)
    index.add(x)
    return faiss.serialize_index(index)


def load(data: np.ndarray):
    import faiss

    return faiss.deserialize_index(np.asarray(data, np.uint8))


def search(index, q: np.ndarray, vectors: np.ndarray, s: dict, similarity: str,
           alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(ranks int32 (nq, N), scores float32 (nq, N)): the index's candidates scored exactly and sorted
    (stable: ties keep the index's order), then the rest of the database (module docstring)."""
    import faiss

    s = check_search(s)
    q = np.atleast_2d(np.asarray(q, np.float32))
    n = len(vectors)
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = min(s["nprobe"], ivf.nlist)
    k = min(s["candidates"], n)
    _, found = index.search(np.ascontiguousarray(linalg.l2(q, np.float32)), k)
    ranks = np.empty((len(q), n), np.int32)
    scores = np.empty((len(q), n), np.float32)
    for j, cand in enumerate(found):
        cand = cand[cand >= 0]  # -1: fewer than k rows in the probed cells
        exact = sim.scores(q[j:j + 1], vectors[cand], similarity, alpha)[0].astype(np.float32)
        order = np.argsort(-exact, kind="stable")
        rest = np.ones(n, bool)
        rest[cand] = False
        m = len(cand)
        ranks[j, :m], scores[j, :m] = cand[order], exact[order]
        ranks[j, m:] = np.flatnonzero(rest)
        scores[j, m:] = (exact.min() - 1.0) if m else -2.0
    return ranks, scores
