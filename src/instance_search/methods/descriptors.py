"""The global-descriptor family (``gem``): one vector per image, searched by one dense product.

- **Extract** (``features.gem``): multi-scale GeM vectors of every image, and of each benchmark
  query's image cropped to its box (LS; the whole image's vector when the box covers it) and whole (GS).
- **Learn**: an optional PCA-whitening (L2 -> whiten -> L2) of the database vectors (``pca_dim``; 0:
  none), learned on the same dataset's database (the tables say so: ``whitening`` label).
- **Search**: cosine or weighted cosine between the query and database vectors.
- **Re-rank** (``rerank.mode``): ``none``, or ``diffusion`` (Iscen et al., CVPR 2017) on the mutual
  k-NN graph of the database vectors (``retrieval.diffusion``), built once per database and setting.
- **Expand** (``expand.mode``): ``none``, or ``aqe``: alpha-weighted query expansion (Radenovic et al.)
  over the current ranking's top ``neighbours``, then the whole database searched again.

Index files (``index/``): ``vectors.npz`` (the database vectors, prepared), ``queries.npz`` (the
benchmark queries' ls and gs vectors, prepared). Model (``model.npz``): the whitening, or nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from ..retrieval import diffusion, linalg
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking, rank
from .base import Progress, Queries
from .global_features import GemExtraction, covers_image, describe, extractor
from .global_index import GlobalIndexing, prepare

log = logging.getLogger(__name__)


@dataclass(eq=False)
class GlobalDatabase:
    vectors: np.ndarray              # float32 (n_database, D), prepared
    queries: dict[str, np.ndarray]   # the benchmark queries' ls and gs vectors, prepared
    n_database: int
    graphs: dict = field(default_factory=dict)  # diffusion graphs built so far, by setting
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def n_images(self) -> int:
        return len(self.vectors) + len(self.queries["gs"])

    def diffusion(self, d: dict) -> diffusion.Diffusion:
        """The database's diffusion graph for these settings (built once: the web page asks again)."""
        key = (d["k"], d["gamma"], d["alpha"])
        with self.lock:
            if key not in self.graphs:
                self.graphs[key] = diffusion.Diffusion(self.vectors, d["k"], d["gamma"], d["alpha"])
            return self.graphs[key]


class GlobalMethod:
    name = "gem"

    def __init__(self, extraction: GemExtraction, indexing: GlobalIndexing):
        self.extraction = extraction
        self.indexing = indexing

    def labels(self, p: dict) -> dict[str, str]:
        """Where the whitening was learned (the tables say it beside the numbers)."""
        return {"whitening": "same dataset" if p["codebook"]["pca_dim"] else "none"}

    def options(self, p: dict) -> dict[str, dict]:
        """Diffusion re-ranking, and alpha-QE on the first stage."""
        return {"diffusion": {"rerank": {"mode": "diffusion"}, "expand": {"mode": "none"}},
                "aqe": {"rerank": {"mode": "none"}, "expand": {"mode": "aqe"}}}

    def second_stage(self, p: dict) -> str:
        r, e = p["rerank"], p["expand"]
        parts = ["diffusion over the database's k-NN graph"] if r["mode"] == "diffusion" else []
        if e["mode"] == "aqe":
            parts.append(f"alpha-QE over the top {e['neighbours']}")
        return ", then ".join(parts) or "no re-ranking"

    # querying ---------------------------------------------------------------------------------
    def load(self, files: dict[str, dict], n_database: int) -> GlobalDatabase:
        v = files["vectors"]["vectors"]
        if len(v) != n_database:
            raise InstanceSearchError("vectors.npz describes another image list; re-run encode")
        return GlobalDatabase(np.asarray(v, np.float32), files["queries"], n_database)

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
        q = queries.searched(p["search"]["query"])
        return Ranking(*rank(sim.scores(q, db.vectors, similarity, alpha)))

    def rerank(self, db: GlobalDatabase, queries: Queries, first: Ranking, p: dict, similarity: str, alpha: float,
               progress: Progress | None = None) -> Ranking:
        """Diffusion from the searched query over the database's k-NN graph (rerank.mode: diffusion)."""
        r = p["rerank"]
        if r["mode"] == "none":
            return first.with_no_boxes()
        if r["mode"] != "diffusion":
            raise InstanceSearchError(f"gem.rerank.mode={r['mode']!r}: expected none or diffusion")
        d = r["diffusion"]  # each value checked where it is used (retrieval.diffusion)
        q = linalg.l2(np.asarray(queries.searched(p["search"]["query"]), np.float64))
        ranks, scores = db.diffusion(d).rank(q, d["query_k"], d["iterations"], d["tol"])
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
        expanded = diffusion.alpha_qe(q, db.vectors, ranking.ranks, e["neighbours"], e["alpha"])
        got = Ranking(*rank(sim.scores(expanded, db.vectors, similarity, alpha)))
        return Ranking(got.ranks, got.scores, np.zeros((len(q), 0, 4), np.float32))
