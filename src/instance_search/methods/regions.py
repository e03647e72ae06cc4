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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..features import frcnn
from ..features.store import FeatureStore
from ..groundtruth import GroundTruth
from ..retrieval import expansion, linalg
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking, by_image, check_first_stage, pick_best, rank, reorder
from .base import Progress, Queries
from .region_features import RegionExtraction, extractor

log = logging.getLogger(__name__)


def prepare(x: np.ndarray, model: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """L2 (-> whiten -> L2 when a whitening model is given), float64; L2 first so that sum- and
    max-pooled vectors of any image size share one scale before the mean is subtracted."""
    x = linalg.l2(x)
    return x if model is None else linalg.whiten(x.astype(np.float32), model).astype(np.float64)


def _store(features_dir, gnd: GroundTruth) -> FeatureStore:
    d = Path(features_dir)
    if (d / "regions.npz").is_file():
        raise InstanceSearchError(f"{d}: frcnn features in the format of an earlier version (one regions.npz, not "
                                  "shards); re-run the extract step")
    store = FeatureStore(d)
    if store.n_images != len(gnd.images):
        raise InstanceSearchError(f"{d}: {store.n_images} images but the ground truth lists {len(gnd.images)}; "
                                  "re-run extract")
    return store


def _unit_half(regions: np.ndarray, out: np.ndarray, block: int = 16384) -> None:
    """``out`` = the rows L2-normalised (in float64, as :func:`linalg.l2`), in float16; a block of rows
    at a time, so the float64 temporaries stay ~0.5 GB whatever the database (row-wise: same values)."""
    for lo in range(0, len(regions), block):
        out[lo:lo + block] = linalg.l2(regions[lo:lo + block].astype(np.float32)).astype(np.float16)


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

    def __init__(self, extraction: RegionExtraction):
        self.extraction = extraction

    def labels(self, p: dict) -> dict[str, str]:
        """What the metrics and tables must say beside the numbers: the proposal source (grid or rpn)."""
        return {"proposals": p["extract"]["source"]}

    def options(self, p: dict) -> dict[str, dict]:
        """Its one re-ranking, by best proposal, without expansion."""
        return {"regions": {"expand": {"mode": "none"}}}

    def second_stage(self, p: dict) -> str:
        r, e = p["rerank"], p["expand"]
        if r["candidates"] == 0:
            return "no re-ranking"
        expand = "" if e["mode"] == "none" else f", then {e['mode']} over the top {e['neighbours']}"
        return f"top {r['candidates']} re-ranked by best proposal{expand}"

    # building ---------------------------------------------------------------------------------
    def learn(self, p: dict, seed: int, gnd: GroundTruth, features) -> dict[str, np.ndarray]:
        """The PCA-whitening of the L2-normalised database image-wise vectors (or none: pca_dim 0)."""
        store = _store(features, gnd)
        if not p["pca_dim"]:
            return {"none": np.zeros(0, np.float32)}
        vectors = np.concatenate([sh["vectors"] for _, sh in store.shards(gnd.n_database)])[:gnd.n_database]
        return linalg.whitening_arrays(linalg.fit_whitening(linalg.l2(vectors).astype(np.float32), p["pca_dim"],
                                                            key="frcnn.codebook.pca_dim"))

    def encode(self, p: dict, gnd: GroundTruth, features, model: dict) -> dict[str, dict]:
        store = _store(features, gnd)
        white = linalg.whitening_from(model)
        kept = ("vectors", "boxes", "fallback", "queries", "ls", "gs")
        got: dict[str, list] = {k: [] for k in ("counts", *kept)}
        regions, at = np.empty((store.n_features, store.dim), np.float16), 0
        for _, sh in store.shards():  # a shard at a time, into the one output array
            _unit_half(sh["regions"], regions[at:at + len(sh["regions"])])
            at += len(sh["regions"])
            got["counts"].append(np.diff(sh["offsets"]))
            for k in kept:
                got[k].append(sh[k])
        vectors, asked = np.concatenate(got["vectors"]), np.concatenate(got["queries"])
        order = np.argsort(asked, kind="stable")
        if not np.array_equal(asked[order], np.arange(len(gnd.queries))):
            raise InstanceSearchError(f"{features}: the shards hold the vectors of {len(asked)} queries, not of the "
                                      f"ground truth's {len(gnd.queries)}; re-run extract")
        ls, gs = (np.concatenate(got[k]).reshape(-1, vectors.shape[1])[order] for k in ("ls", "gs"))
        log.info("%s: %d images, %d proposals, %d fell back to the whole image (%s source)", features, len(vectors),
                 store.n_features, int(np.concatenate(got["fallback"]).sum()), store.config["proposal_source"])
        return {
            "vectors": {"vectors": prepare(vectors[:gnd.n_database], white).astype(np.float32)},
            "proposals": {"boxes": np.concatenate(got["boxes"]),
                          "offsets": np.concatenate([[0], np.cumsum(np.concatenate(got["counts"]))]).astype(np.int64),
                          "regions": regions},
            "queries": {"ls": prepare(ls, white).astype(np.float32), "gs": prepare(gs, white).astype(np.float32),
                        "ls_region": linalg.l2(ls).astype(np.float32)},
        }

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        counts = np.concatenate([np.diff(f["proposals"]["offsets"]) for f in parts])
        dim = parts[0]["vectors"]["vectors"].shape[1]
        return {
            "vectors": {"vectors": np.concatenate([f["vectors"]["vectors"] for f in parts])},
            "proposals": {"boxes": np.concatenate([f["proposals"]["boxes"] for f in parts]),
                          "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                          "regions": np.concatenate([f["proposals"]["regions"] for f in parts])},
            "queries": {k: np.zeros((0, dim), np.float32) for k in ("ls", "gs", "ls_region")},
        }

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

        def encode(path: str, width: int, height: int, box: Box | None) -> Queries:
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
