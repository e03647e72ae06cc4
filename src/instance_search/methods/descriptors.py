"""The global-descriptor family (``gem``): one vector per image, searched by one dense product.

- **Extract** (``features.gem``): multi-scale GeM vectors of every image, and of each benchmark
  query's image cropped to its box (LS; the whole image's vector when the box covers it) and whole (GS).
- **Learn**: an optional PCA-whitening (L2 -> whiten -> L2) of the database vectors (``pca_dim``; 0:
  none), learned on the same dataset's database (the tables say so: ``whitening`` label).
- **Search**: cosine or weighted cosine between the query and database vectors: all of them, or, where
  the index holds an approximate-nearest-neighbour index (``encode.ann``), its top
  ``search.ann.candidates`` scored exactly, then the rest of the database (:mod:`..retrieval.ann`).
  With ``search.augment: dba`` the query is searched against the database-side augmented vectors
  (alpha-DBA, ``retrieval.diffusion.dba``, exactly: the ANN index holds the stored vectors), computed
  once per database and setting, which every later stage uses.
- **Re-rank** (``rerank.mode``): ``none``, ``diffusion`` (Iscen et al., CVPR 2017) on the mutual
  k-NN graph of the database vectors (``retrieval.diffusion``), or ``kreciprocal`` (Zhong et al.,
  CVPR 2017: Jaccard distance of k-reciprocal sets, ``retrieval.kreciprocal``); each built once per
  database and setting.
- **Expand** (``expand.mode``): ``none``, or ``aqe``: alpha-weighted query expansion (Radenovic et al.)
  over the current ranking's top ``neighbours``, then the whole database searched again.

Index files (``index/``): ``vectors.npz`` (the database vectors, prepared), ``queries.npz`` (the
benchmark queries' ls and gs vectors, prepared), ``ann.npz`` (only above ``encode.ann.min_images``: the
serialised faiss index of the database vectors). Model (``model.npz``): the whitening, or nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from ..retrieval import ann, diffusion, kreciprocal, linalg
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking, rank
from .base import Progress, Queries, learned_on
from .global_features import GemExtraction, covers_image, describe, extractor
from .global_index import GlobalIndexing, prepare

log = logging.getLogger(__name__)


@dataclass(eq=False)
class GlobalDatabase:
    vectors: np.ndarray              # float32 (n_database, D), prepared
    queries: dict[str, np.ndarray]   # the benchmark queries' ls and gs vectors, prepared
    n_database: int
    ann: object = None               # the faiss index proposing candidates (None: exact search)
    graphs: dict = field(default_factory=dict)  # augmented vectors and graphs built so far, by setting
    lock: threading.RLock = field(default_factory=threading.RLock)  # re-entrant: a graph asks for the vectors

    @property
    def n_images(self) -> int:
        return len(self.vectors) + len(self.queries["gs"])

    def _built(self, key: tuple, build):
        with self.lock:  # built once: the web page's threads ask again
            if key not in self.graphs:
                self.graphs[key] = build()
            return self.graphs[key]

    def searched(self, dba: dict | None) -> np.ndarray:
        """The database vectors the query is searched against: as stored (None), or augmented (search.dba)."""
        if dba is None:
            return self.vectors
        return self._built(("dba", dba["k"], dba["alpha"]),
                           lambda: diffusion.dba(self.vectors, dba["k"], dba["alpha"]).astype(np.float32))

    def diffusion(self, d: dict, dba: dict | None = None) -> diffusion.Diffusion:
        """The diffusion graph of the (augmented) database for these settings."""
        return self._built(("diffusion", d["k"], d["gamma"], d["alpha"], *_dba_key(dba)),
                           lambda: diffusion.Diffusion(self.searched(dba), d["k"], d["gamma"], d["alpha"]))

    def kreciprocal(self, r: dict, dba: dict | None = None) -> kreciprocal.KReciprocal:
        """The k-reciprocal sets and V of the (augmented) database for these settings."""
        return self._built(("kreciprocal", r["k1"], r["k2"], *_dba_key(dba)),
                           lambda: kreciprocal.KReciprocal(self.searched(dba), r["k1"], r["k2"]))


def _dba_key(dba: dict | None) -> tuple:
    return ("stored",) if dba is None else ("dba", dba["k"], dba["alpha"])


def _dba(p: dict) -> dict | None:
    """search.dba's settings where search.augment is dba; None: the vectors as stored."""
    mode = p["search"].get("augment", "none")
    if mode == "none":
        return None
    if mode != "dba":
        raise InstanceSearchError(f"gem.search.augment={mode!r}: expected none or dba")
    return p["search"]["dba"]


class GlobalMethod:
    name = "gem"

    def __init__(self, extraction: GemExtraction, indexing: GlobalIndexing):
        self.extraction = extraction
        self.indexing = indexing

    def labels(self, p: dict, dataset: str) -> dict[str, str]:
        """Where the whitening was learned (the tables say it beside the numbers)."""
        return {"whitening": learned_on(p, dataset) if p["codebook"]["pca_dim"] else "none"}

    def options(self, p: dict) -> dict[str, dict]:
        """Diffusion and k-reciprocal re-ranking, alpha-QE on the first stage, and alpha-DBA alone and
        with alpha-QE (a search of its own where search.augment is none)."""
        dba = {"augment": "dba"}
        none, aqe = {"mode": "none"}, {"mode": "aqe"}
        return {"diffusion": {"rerank": {"mode": "diffusion"}, "expand": none},
                "kreciprocal": {"rerank": {"mode": "kreciprocal"}, "expand": none},
                "aqe": {"rerank": none, "expand": aqe},
                "dba": {"search": dba, "rerank": none, "expand": none},
                "dba+aqe": {"search": dba, "rerank": none, "expand": aqe}}

    def second_stage(self, p: dict) -> str:
        r, e, dba = p["rerank"], p["expand"], _dba(p)
        parts = [f"alpha-DBA over the database's {dba['k']} nearest"] if dba else []
        if r["mode"] == "diffusion":
            parts.append("diffusion over the database's k-NN graph")
        elif r["mode"] == "kreciprocal":
            parts.append("k-reciprocal re-ranking (Jaccard distance)")
        if e["mode"] == "aqe":
            parts.append(f"alpha-QE over the top {e['neighbours']}")
        return ", then ".join(parts) or "no re-ranking"

    # querying ---------------------------------------------------------------------------------
    def load(self, files: dict[str, dict], n_database: int) -> GlobalDatabase:
        v = files["vectors"]["vectors"]
        if len(v) != n_database:
            raise InstanceSearchError("vectors.npz describes another image list; re-run encode")
        index = ann.load(files["ann"]["index"]) if "ann" in files else None
        if index is not None and index.ntotal != n_database:
            raise InstanceSearchError("ann.npz indexes another image list; re-run encode")
        return GlobalDatabase(np.asarray(v, np.float32), files["queries"], n_database, index)

    def benchmark_queries(self, db: GlobalDatabase, gnd: GroundTruth) -> Queries:
        if len(db.queries["ls"]) != len(gnd.queries):
            raise InstanceSearchError(f"the index holds {len(db.queries['ls'])} query vectors but the ground truth "
                                      f"has {len(gnd.queries)} queries; re-run extract and encode")
        return Queries([q.name for q in gnd.queries], box=db.queries["ls"], image=db.queries["gs"],
                       info=[{} for _ in gnd.queries])

    def image_encoder(self, extraction: dict, model: dict, db: GlobalDatabase):
        ex = extractor(extraction, device="auto")
        white = linalg.whitening_from(model)
        # one image: decoded here, not in DataLoader worker processes started for it (the same pixels)
        extraction = {**extraction, "workers": 0}

        def encode(path: str, width: int, height: int, box: Box | None, searched: str | None = None) -> Queries:
            # each vector is 3 forward passes: only the one(s) that search, rerank and expand read
            cropped = not covers_image(box, width, height)
            whole = describe(ex, extraction, [path], [None]) if searched != "ls" or not cropped else None
            ls = whole if not cropped else describe(ex, extraction, [path], [box]) if searched != "gs" else None
            return Queries([Path(path).name], box=None if ls is None else prepare(ls, white),
                           image=None if whole is None else prepare(whole, white), info=[{"cropped": cropped}])
        return encode

    def search(self, db: GlobalDatabase, queries: Queries, p: dict, similarity: str, alpha: float) -> Ranking:
        return _search(db, queries.searched(p["search"]["query"]), p, similarity, alpha)

    def rerank(self, db: GlobalDatabase, queries: Queries, first: Ranking, p: dict, similarity: str, alpha: float,
               progress: Progress | None = None) -> Ranking:
        """Diffusion from the searched query over the database's k-NN graph (rerank.mode: diffusion), or
        k-reciprocal re-ranking of the whole database (kreciprocal): both rank every database image."""
        r, dba = p["rerank"], _dba(p)
        if r["mode"] == "none":
            return first.with_no_boxes()
        if r["mode"] not in ("diffusion", "kreciprocal"):
            raise InstanceSearchError(f"gem.rerank.mode={r['mode']!r}: expected none, diffusion or kreciprocal")
        q = linalg.l2(np.asarray(queries.searched(p["search"]["query"]), np.float64))
        if r["mode"] == "diffusion":
            d = r["diffusion"]  # each value checked where it is used (retrieval.diffusion)
            ranks, scores = db.diffusion(d, dba).rank(q, d["query_k"], d["iterations"], d["tol"])
        else:
            k = r["kreciprocal"]  # checked in retrieval.kreciprocal
            ranks, scores = db.kreciprocal(k, dba).rank(q, k["lambda"])
        if progress is not None:
            progress(len(q), len(q))
        return Ranking(ranks.astype(np.int32), scores.astype(np.float32), np.zeros((len(q), 0, 4), np.float32))

    def expand(self, db: GlobalDatabase, queries: Queries, ranking: Ranking, p: dict, similarity: str,
               alpha: float) -> Ranking:
        """alpha-QE over the current ranking's top neighbours, then the whole database searched again."""
        e = p["expand"]
        if e["mode"] == "none":
            return ranking
        if e["mode"] != "aqe":
            raise InstanceSearchError(f"gem.expand.mode={e['mode']!r}: expected none or aqe")
        q = queries.searched(p["search"]["query"])
        expanded = diffusion.alpha_qe(q, db.searched(_dba(p)), ranking.ranks, e["neighbours"], e["alpha"])
        got = _search(db, expanded, p, similarity, alpha)
        return Ranking(got.ranks, got.scores, np.zeros((len(q), 0, 4), np.float32))


def _search(db: GlobalDatabase, q: np.ndarray, p: dict, similarity: str, alpha: float) -> Ranking:
    """The whole database ranked for each query: exactly, or the ANN index's candidates first (the index
    holds the stored vectors, so an augmented database is searched exactly)."""
    dba = _dba(p)
    if db.ann is None or dba is not None:
        return Ranking(*rank(sim.scores(q, db.searched(dba), similarity, alpha)))
    sim.check(similarity, alpha)
    if "ann" not in p["search"]:
        raise InstanceSearchError("gem.search.ann: missing (nprobe, candidates); the index holds an ANN index "
                                  "(gem.encode.ann), so the search needs its settings")
    return Ranking(*ann.search(db.ann, q, db.vectors, p["search"]["ann"], similarity, alpha))
