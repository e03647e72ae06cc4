"""The bag-of-words family: local features -> visual words -> tf-idf bags, window re-ranking, QE.

sift, blcf and xfeat are the same method with different local features (:mod:`.local_features`):
each says how to extract an image's raw features into the store, how to read them back as the
vectors the vocabulary sees (RootSIFT; CNN map upsampling and L2), and what a query box holding no
feature falls back to.

Two aggregations of the same words (``search.aggregation``): the tf-idf bag of words, and ASMK*
(:mod:`..retrieval.asmk`: binarised residuals aggregated per word, the selective match kernel, an
inverted file). Both feed the same re-rankings.

Index files (``index/``): ``bow.npz`` (word counts of every image, word weights, n_database),
``assignments.npz`` (every image's assignment map: positions, words and each feature's binarised
residual) and ``asmk.npz`` (every image's ASMK* words and bits; each benchmark query's, from its
box's features and its whole image's, with multiple assignment). Model (``model.npz``): the
vocabulary (centroids, and the PCA-whitening when on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .. import threads
from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from ..retrieval import asmk, bow, expansion, verification, vocabulary, windows
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box, in_box
from ..retrieval.ranking import Ranking, check_first_stage, rank, reorder
from .base import Progress, Queries, learned_on
from .bow_index import BowIndexing, Encoded
from .local_features import LocalFeatures

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ database

@dataclass(eq=False)
class BowDatabase:
    counts: sp.csr_matrix          # (n_images, K) word counts of every image (database, then query-only)
    idf: np.ndarray                # float64 (K,) word weights
    n_database: int
    maps: bow.AssignmentMaps       # every image's words with their positions
    aggregated: asmk.Aggregated | None = None  # every image's ASMK* words and bits (None: bags only)
    query_words: int = 1           # words a query feature is assigned to in ASMK* (multiple assignment)
    # the benchmark queries' ASMK* (box, whole image), as encode computed them, by query number
    query_box: asmk.Aggregated | None = None
    query_image: asmk.Aggregated | None = None

    def __post_init__(self):
        self.database = bow.weighted(self.counts[:self.n_database], self.idf)
        self.inverted = None if self.aggregated is None else asmk.InvertedFile(self.aggregated, self.idf,
                                                                                self.n_database)

    @property
    def n_images(self) -> int:
        return self.counts.shape[0]

    @property
    def vocabulary(self) -> int:
        return self.counts.shape[1]


def _box_or_whole(box: Box | None, width: int, height: int) -> Box:
    """The query box, or the whole image for a query without one."""
    return (0.0, 0.0, float(width), float(height)) if box is None else box


# -------------------------------------------------------------------------------------------- method

class BagOfWords:
    """A :class:`~instance_search.methods.base.Method` over one kind of local features."""

    def __init__(self, features: LocalFeatures, indexing: BowIndexing):
        self.extraction = features
        self.indexing = indexing
        self.name = features.name

    def labels(self, p: dict, dataset: str) -> dict[str, str]:
        """What the metrics and tables must say beside the numbers: where the words (and their optional
        PCA-whitening) were learned."""
        return {"words": learned_on(p, dataset)}

    def options(self, p: dict) -> dict[str, dict]:
        """Each aggregation's first stage, then re-ranked by best sliding window or by spatial
        verification, without expansion (an option that sets ``search`` searches again)."""
        out = {}
        for aggregation in ("bow", "asmk"):
            search = {"search": {"aggregation": aggregation}}
            out[aggregation] = {**search, "rerank": {"candidates": 0}, "expand": {"mode": "none"}}
            for mode in ("window", "sv"):
                out[f"{aggregation}+{mode}"] = {**search, "rerank": {"mode": mode}, "expand": {"mode": "none"}}
        return out

    def second_stage(self, p: dict) -> str:
        r, e = p["rerank"], p["expand"]
        if r["candidates"] == 0:
            return "no re-ranking"
        how = {"window": "best sliding window", "sv": "spatial verification"}[r["mode"]]
        if p["search"].get("aggregation", "bow") == "asmk":
            how += " (first stage: ASMK*)"
        expand = "" if e["mode"] == "none" else f", then {e['mode']} over the top {e['neighbours']}"
        return f"top {r['candidates']} re-ranked by {how}{expand}"

    # querying ---------------------------------------------------------------------------------
    def load(self, files: dict[str, dict], n_database: int) -> BowDatabase:
        b = files["bow"]
        counts = sp.csr_matrix((b["data"], b["indices"], b["indptr"]), shape=tuple(b["shape"]))
        maps = bow.AssignmentMaps.from_arrays(files["assignments"])
        if "asmk" not in files:
            raise InstanceSearchError("the index has no asmk.npz (an index of an older release); re-run encode")
        enc = Encoded.from_arrays(maps, counts.shape[1], files["asmk"])
        if int(b["n_database"]) != n_database or len(maps) != counts.shape[0] or len(enc.aggregated) != len(maps):
            raise InstanceSearchError("bow.npz, assignments.npz and asmk.npz describe other image lists; re-run encode")
        order = np.argsort(enc.query_index, kind="stable")  # part jobs find them in image order
        if not np.array_equal(enc.query_index[order], np.arange(len(order))):
            raise InstanceSearchError("asmk.npz holds another list of queries; re-run encode")
        return BowDatabase(counts, np.asarray(b["idf"], np.float64), n_database, maps, enc.aggregated, enc.query_words,
                           enc.query_box.take(order), enc.query_image.take(order))

    def benchmark_queries(self, db: BowDatabase, gnd: GroundTruth) -> Queries:
        """The ground truth's queries: the words inside each box (LS) and of the whole query image (GS),
        read from the query images' assignment maps."""
        boxes, images, points, fallbacks, info = [], [], [], [], []
        for q in gnd.queries:
            xy, words, width, height = db.maps.image(q.image)
            keep, fell_back = in_box(xy, q.box, self.extraction.box_fallback)
            if fell_back:
                fallbacks.append(q.name)
            boxes.append(words[keep])
            images.append(words)
            bits = db.maps.features(q.image)[2]
            points.append((xy[keep], words[keep], None if bits is None else bits[keep],
                           _box_or_whole(q.box, width, height)))
            info.append({"features": len(words), "box_features": len(keep), "box_fallback": fell_back})
        if fallbacks:
            log.warning("%d queries have no feature inside their box; they use %s: %s", len(fallbacks),
                        "the whole image" if self.extraction.box_fallback == "image"
                        else "the feature nearest the box centre", ", ".join(fallbacks))
        if db.query_box is not None and len(db.query_box) != len(gnd.queries):
            raise InstanceSearchError(f"the index holds the ASMK* of {len(db.query_box)} queries but the ground "
                                      f"truth has {len(gnd.queries)}; re-run encode")
        return self._queries([q.name for q in gnd.queries], boxes, images, points, db, info,
                             None if db.query_box is None else (db.query_box, db.query_image))

    def _queries(self, names, boxes, images, points, db: BowDatabase, info,
                 aggregated: tuple[asmk.Aggregated, asmk.Aggregated] | None) -> Queries:
        """``points``: each query's (xy, words, bits) inside its box, and the box: what spatial
        verification matches and maps into each candidate. ``aggregated``: the queries' ASMK* (box, image)."""
        return Queries(names, box=bow.weighted(bow.bag(boxes, db.vocabulary), db.idf),
                       image=bow.weighted(bow.bag(images, db.vocabulary), db.idf),
                       extra={"points": points,
                              "asmk": None if aggregated is None else {"ls": aggregated[0], "gs": aggregated[1]}},
                       info=info)

    def image_encoder(self, extraction: dict, model: dict, db: BowDatabase):
        """(path, width, height, box or None) -> the Queries of one image, computed as extract and
        encode computed the database's (the same extractor, reader and vocabulary)."""
        raw = self.extraction.one_image(extraction)
        read = self.extraction.reader(extraction)
        vocab = vocabulary.Vocabulary.from_arrays(model)
        centroids = vocab.centroids

        def encode(path: str, width: int, height: int, box: Box | None, searched: str | None = None) -> Queries:
            xy, desc = raw(path, width, height)
            shard = {"xy": np.asarray(xy, np.float32).reshape(-1, 2), "desc": desc,
                     "offsets": np.array([0, len(xy)], np.int64)}
            xy, x, _ = read(shard)
            x = vocab.prepare(x)
            words = vocab.assigner(x)
            if len(words) == 0:
                raise InstanceSearchError(f"{path}: no local feature found in the image; use a more textured image")
            keep, fell_back = (np.arange(len(words)), False) if box is None else in_box(
                xy, box, self.extraction.box_fallback)
            info = {"features": int(len(words)), "box_features": int(len(keep)), "box_fallback": fell_back}
            bits = asmk.residual_bits(x, words, centroids)
            points = [(xy[keep], words[keep], bits[keep], _box_or_whole(box, width, height))]
            aggregated = self.indexing.query_aggregates(xy, x, box, vocab, db.query_words)
            return self._queries([Path(path).name], [words[keep]], [words], points, db, [info], aggregated)
        return encode

    def search(self, db: BowDatabase, queries: Queries, p: dict, similarity: str, alpha: float) -> Ranking:
        s = p["search"]
        aggregation = s.get("aggregation", "bow")
        if aggregation == "bow":
            return Ranking(*rank(sim.scores(queries.searched(s["query"]), db.database, similarity, alpha)))
        if aggregation != "asmk":
            raise InstanceSearchError(f"{self.name}.search.aggregation={aggregation!r}: expected bow or asmk")
        sim.check(similarity, alpha)
        kernel = s["asmk"]
        asmk.check_kernel(kernel, f"{self.name}.search.asmk")
        if db.inverted is None or queries.extra.get("asmk") is None:
            raise InstanceSearchError(f"{self.name}.search.aggregation=asmk but the index has no ASMK*; re-run encode")
        agg = queries.extra["asmk"]["ls" if s["query"] == "ls" else "gs"]
        absent = alpha if similarity == "weighted_cosine" else 1.0
        scores = np.stack([db.inverted.scores(*agg.image(j), kernel["alpha"], kernel["threshold"], absent)
                           for j in range(len(queries))]) if len(queries) else np.zeros((0, db.n_database))
        return Ranking(*rank(scores))

    def rerank(self, db: BowDatabase, queries: Queries, first: Ranking, p: dict, similarity: str, alpha: float,
               progress: Progress | None = None) -> Ranking:
        """Each query's top candidates re-scored by their best sliding window against the box's words
        (LS, whatever the first stage used: the box is what the user asked for)."""
        r = p["rerank"]
        if r["candidates"] == 0:
            return first.with_no_boxes()
        if r["mode"] == "sv":
            return self._verified(db, queries, first, r, progress)
        if r["mode"] != "window":
            raise InstanceSearchError(f"{self.name}.rerank.mode={r['mode']!r}: expected window or sv")
        return self._windows(db, queries.box, first, r, similarity, alpha, progress)

    def _verified(self, db: BowDatabase, queries: Queries, first: Ranking, r: dict,
                  progress: Progress | None = None) -> Ranking:
        """Spatial verification of each query's top candidates (retrieval.verification): score = the
        first-stage score + weight x the verification's score (``score``: significance, how far the
        inliers exceed chance; or the inlier count), 0 below min_inliers; ties in first-stage order (a
        stable sort); the region is the query box mapped into the candidate. The first-stage score
        stays in: on whole-image queries (UKBench) inliers alone let repeated texture outrank true
        matches. Candidates run in parallel on compute.threads threads."""
        sv = r["sv"]
        verification.check(sv, f"{self.name}.rerank.sv")
        ranks, scores = check_first_stage(first.ranks, first.scores, r["candidates"], len(queries))
        t = min(r["candidates"], ranks.shape[1])
        score = sv.get("score", "inliers")
        if score not in ("inliers", "significance"):
            raise InstanceSearchError(f"{self.name}.rerank.sv.score={score!r}: expected significance or inliers")
        added = np.zeros((len(queries), t))
        boxes = np.full((len(queries), t, 4), np.nan, np.float32)
        settings = {k: sv[k] for k in verification.KEYS}
        for j, (xy, words, bits, box) in enumerate(queries.extra["points"]):
            candidates = [db.maps.features(int(i)) for i in ranks[j, :t]]
            found = verification.verify_many(xy, words, box, candidates, workers=threads.applied() or 1,
                                             seed=sv["seed"], q_bits=bits, **settings)
            for k, v in enumerate(found):
                if v.inliers >= sv["min_inliers"]:
                    added[j, k] = v.significance if score == "significance" else v.inliers
                    if v.box is not None:
                        boxes[j, k] = v.box
            if progress is not None:
                progress(j + 1, len(queries))
        ranks, scores, boxes = reorder(ranks, scores, scores[:, :t] + sv["weight"] * added, boxes)
        return Ranking(ranks.astype(np.int32), scores.astype(np.float32), boxes)

    def _windows(self, db: BowDatabase, q, start: Ranking, r: dict, similarity: str, alpha: float,
                 progress: Progress | None = None) -> Ranking:
        ranks, scores, boxes = windows.rerank(
            start.ranks, start.scores, q, db.maps.image, db.idf, top=r["candidates"], cell=r["cell"],
            scales=r["scales"], aspect_ratios=r["aspect_ratios"], stride=r["stride"], similarity=similarity,
            alpha=alpha, progress=progress)
        return Ranking(ranks.astype(np.int32), scores.astype(np.float32), boxes)

    def expand(self, db: BowDatabase, queries: Queries, ranking: Ranking, p: dict, similarity: str,
               alpha: float) -> Ranking:
        """Average query expansion over the re-ranked top (gqe: whole-image bags; lqe: the best windows'
        bags, as the BLCF paper), then the re-ranked top re-scored by best window again."""
        e, r = p["expand"], p["rerank"]
        if e["mode"] == "none":
            return ranking
        if r["candidates"] == 0:
            raise InstanceSearchError(f"{self.name}.expand.mode={e['mode']} re-scores the re-ranked candidates, but "
                                      f"{self.name}.rerank.candidates is 0; raise it or set expand.mode: none")
        k = e["neighbours"]
        expansion.check_neighbours(k, f"{self.name}.expand.neighbours")
        q = queries.searched(p["search"]["query"])
        if e["mode"] == "gqe":
            nb = [db.database[ranking.ranks[j, :k]] for j in range(len(ranking.ranks))]
        elif e["mode"] == "lqe":
            if ranking.reranked < k:
                raise InstanceSearchError(
                    f"{self.name}.expand.mode=lqe needs the best windows of the top {k} results but re-ranking kept "
                    f"{ranking.reranked}; raise rerank.candidates to at least expand.neighbours or use gqe")
            nb = [bow.window_vectors(db.maps, ranking.ranks[j, :k], ranking.boxes[j, :k], db.idf)
                  for j in range(len(ranking.ranks))]
        else:
            raise InstanceSearchError(f"{self.name}.expand.mode={e['mode']!r}: expected none, gqe or lqe")
        return self._windows(db, expansion.average_sparse(q, nb), ranking, r, similarity, alpha)
