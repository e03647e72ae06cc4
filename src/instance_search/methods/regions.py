"""The region family (Salvador et al., CVPRW 2016): filter by image-wise vectors, re-rank by proposals.

The network runs once per image, in extract (``features.frcnn``); everything after it reads stored
vectors. Per image the extraction keeps the image-wise pooled vector and P proposals (boxes in
original pixels with their region-pooled vectors); each benchmark query image also pools its query
box (LS) and its whole image (GS).

- **Filtering** (:meth:`RegionMethod.search`): cosine or weighted cosine between image-wise vectors,
  optionally PCA-whitened (L2 -> whiten -> L2; the model, learned on the database vectors).
- **Re-ranking** (:meth:`RegionMethod.rerank`): each of a query's top candidates scores the best
  similarity between the query's box vector and the image's proposals; the best box is kept.
- **Query expansion** (:meth:`RegionMethod.expand`): the average of the unit query and the unit
  best-proposal vectors of its top results, then the candidates re-scored by best proposal again.

Feature folder (extract): a sharded store, a shard per ``shard_size`` images holding their vectors,
proposals and the query vectors of its images (:meth:`RegionMethod.extract`). Index files
(``index/``): ``vectors.npz`` (the database's image-wise vectors as the filter compares them),
``proposals.npz`` (every image's proposal boxes and L2-normalised region vectors), ``queries.npz``
(the benchmark queries' box, image and box-region vectors). Model (``model.npz``): the
PCA-whitening, or nothing (``pca_dim: 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..features import frcnn
from ..groundtruth import GroundTruth
from ..retrieval import expansion, linalg
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking, by_image, check_first_stage, pick_best, rank, reorder
from .base import Progress, Queries, learned_on
from .region_features import RegionExtraction, extractor
from .region_index import RegionIndexing, prepare

@dataclass(eq=False)
class RegionDatabase:
    vectors: np.ndarray            # float32 (n_database, C) image-wise vectors, prepared (L2 / whitened)
    proposals: frcnn.RegionFeatures  # every image's proposals (regions L2-normalised, float16)
    queries: dict[str, np.ndarray]   # the benchmark queries' vectors: ls, gs (prepared), ls_region (L2)
    n_database: int

    @property
    def n_images(self) -> int:
        return len(self.proposals.offsets) - 1


class RegionMethod:
    name = "frcnn"

    def __init__(self, extraction: RegionExtraction, indexing: RegionIndexing):
        self.extraction = extraction
        self.indexing = indexing

    def labels(self, p: dict, dataset: str) -> dict[str, str]:
        """What the metrics and tables must say beside the numbers: the proposal source (grid or rpn), and
        where the whitening was learned when there is one."""
        white = {"whitening": learned_on(p, dataset)} if p["codebook"]["pca_dim"] else {}
        return {"proposals": p["extract"]["source"], **white}

    def options(self, p: dict) -> dict[str, dict]:
        """Its one re-ranking, by best proposal, without expansion."""
        return {"regions": {"expand": {"mode": "none"}}}

    def second_stage(self, p: dict) -> str:
        r, e = p["rerank"], p["expand"]
        if r["candidates"] == 0:
            return "no re-ranking"
        expand = "" if e["mode"] == "none" else f", then {e['mode']} over the top {e['neighbours']}"
        return f"top {r['candidates']} re-ranked by best proposal{expand}"

    # querying ---------------------------------------------------------------------------------
    def load(self, files: dict[str, dict], n_database: int) -> RegionDatabase:
        v, pr = files["vectors"]["vectors"], files["proposals"]
        proposals = frcnn.RegionFeatures(np.zeros((len(pr["offsets"]) - 1, 0), np.float32), pr["regions"], pr["boxes"],
                                         pr["offsets"])
        if len(v) != n_database or proposals.offsets[-1] != len(proposals.boxes):
            raise InstanceSearchError("vectors.npz and proposals.npz describe other image lists; re-run encode")
        return RegionDatabase(v, proposals, files["queries"], n_database)

    def benchmark_queries(self, db: RegionDatabase, gnd: GroundTruth) -> Queries:
        q = db.queries
        if len(q["ls"]) != len(gnd.queries):
            raise InstanceSearchError(f"the index holds {len(q['ls'])} query vectors but the ground truth has "
                                      f"{len(gnd.queries)} queries; re-run extract and encode")
        return Queries([x.name for x in gnd.queries], box=q["ls"], image=q["gs"], extra={"box_region": q["ls_region"]},
                       info=[{} for _ in gnd.queries])

    def image_encoder(self, extraction: dict, model: dict, db: RegionDatabase):
        ex = extractor({**extraction, "device": "auto"})
        white = linalg.whitening_from(model)

        def encode(path: str, width: int, height: int, box: Box | None, searched: str | None = None) -> Queries:
            whole = (0.0, 0.0, float(width), float(height))
            got, _ = frcnn.extract_images(ex, [path], [(width, height)], max_side=extraction["max_side"], batch_size=1,
                                          workers=0, extra=[np.array([box or whole, whole], np.float32)])
            ls, gs = got[0].extra[:1], got[0].extra[1:2]
            return Queries([Path(path).name], box=prepare(ls, white).astype(np.float32),
                           image=prepare(gs, white).astype(np.float32),
                           extra={"box_region": linalg.l2(ls).astype(np.float32)},
                           info=[{"features": int(len(got[0].boxes))}])
        return encode

    def search(self, db: RegionDatabase, queries: Queries, p: dict, similarity: str, alpha: float) -> Ranking:
        q = queries.searched(p["search"]["query"])
        # the stored vectors are L2-normalised once more (a no-op up to rounding: as the scores were pinned)
        return Ranking(*rank(sim.scores(linalg.l2(q), linalg.l2(db.vectors), similarity, alpha)))

    def rerank(self, db: RegionDatabase, queries: Queries, first: Ranking, p: dict, similarity: str, alpha: float,
               progress: Progress | None = None) -> Ranking:
        top = p["rerank"]["candidates"]
        if top == 0:
            return first.with_no_boxes()
        return self._proposals(db, queries.extra["box_region"], first, top, similarity, alpha, progress)

    def _proposals(self, db: RegionDatabase, queries: np.ndarray, start: Ranking, top: int, similarity: str,
                   alpha: float, progress: Progress | None = None) -> Ranking:
        """The first ``top`` results of each query re-scored by their best proposal (ranking.reorder)."""
        sim.check(similarity, alpha)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        first_ranks, first_scores = check_first_stage(start.ranks, start.scores, top, len(queries))
        nq, n = first_ranks.shape
        t = min(top, n)
        local = np.zeros((nq, t))
        boxes = np.full((nq, t, 4), np.nan, np.float32)
        groups = by_image(first_ranks[:, :t])
        for k, (image, qi, ri) in enumerate(groups):
            b, v = db.proposals.image(image)
            if len(b):
                s = sim.scores(queries[qi], v, similarity, alpha)
                pick = pick_best(s)
                local[qi, ri] = s[np.arange(len(s)), pick]
                boxes[qi, ri] = b[pick]
            if progress is not None:
                progress(k + 1, len(groups))
        ranks, scores, boxes = reorder(first_ranks, first_scores, local, boxes)
        return Ranking(ranks.astype(np.int32), scores.astype(np.float32), boxes)

    def expand(self, db: RegionDatabase, queries: Queries, ranking: Ranking, p: dict, similarity: str,
               alpha: float) -> Ranking:
        e, top = p["expand"], p["rerank"]["candidates"]
        if e["mode"] == "none":
            return ranking
        if e["mode"] != "lqe" or top == 0:
            raise InstanceSearchError(f"frcnn.expand.mode={e['mode']}: frcnn expands with each result's best region "
                                      "(lqe, after re-ranking: rerank.candidates > 0), or none")
        k = e["neighbours"]
        expansion.check_neighbours(k, "frcnn.expand.neighbours")
        sim.check(similarity, alpha)
        q = np.atleast_2d(np.asarray(queries.extra["box_region"], dtype=np.float64))
        rows, vectors = [], []
        for image, qi, _ in by_image(np.asarray(ranking.ranks, dtype=np.int64)[:, :k]):
            _, v = db.proposals.image(image)
            if len(v):
                pick = pick_best(sim.scores(q[qi], v, similarity, alpha))
                rows.append(qi)
                vectors.append(np.asarray(v[pick], np.float64))
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        vectors = np.concatenate(vectors) if vectors else np.zeros((0, q.shape[1]))
        return self._proposals(db, expansion.average_dense(q, rows, vectors), ranking, top, similarity, alpha)
