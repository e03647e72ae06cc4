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

Index files (``index/``): ``vectors.npz`` (the database's image-wise vectors as the filter compares
them), ``proposals.npz`` (every image's proposal boxes and L2-normalised region vectors),
``queries.npz`` (the benchmark queries' box, image and box-region vectors). Model (``model.npz``):
the PCA-whitening, or nothing (``pca_dim: 0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..features import frcnn, parts
from ..groundtruth import GroundTruth
from ..io import load_npz, make_temp_dir, read_json, replace_dir, save_npz, write_json
from ..retrieval import expansion, linalg
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking, by_image, check_first_stage, pick_best, rank, reorder
from .base import Progress, Queries

log = logging.getLogger(__name__)


def prepare(x: np.ndarray, model: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """L2 (-> whiten -> L2 when a whitening model is given), float64; L2 first so that sum- and
    max-pooled vectors of any image size share one scale before the mean is subtracted."""
    x = linalg.l2(x)
    return x if model is None else linalg.whiten(x.astype(np.float32), model).astype(np.float64)


def _extractor(p: dict, model=None) -> frcnn.RegionExtractor:
    return frcnn.RegionExtractor(
        p["source"], detector=p["detector"], level=p["level"] or None, backbone=p["backbone"],
        layer=p["layer"] or None, proposals=p["proposals"], scales=p["scales"], aspect_ratios=p["aspect_ratios"],
        stride=p["stride"], pooling=p["pooling"], roi=p["roi"], roi_size=p["roi_size"], device=p["device"],
        half=p["half"], model=model)


def _features(features_dir) -> tuple[dict, frcnn.RegionFeatures, dict]:
    d = Path(features_dir)
    if not (d / "manifest.json").is_file():
        raise InstanceSearchError(f"{d}: not a finished frcnn feature folder (no manifest.json); re-run the extract step")
    return read_json(d / "manifest.json"), frcnn.RegionFeatures.load(d / "regions.npz"), load_npz(d / "queries.npz")


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
    uses_gpu = True
    encodes_in_parts = False  # its encoding is one matrix product of the stored vectors: one job

    def __init__(self, published: dict[str, float] | None = None):
        self.published = published or {}  # the seed's mAP per dataset (methods.METHODS)

    def labels(self, p: dict) -> dict[str, str]:
        """What the metrics and tables must say beside the numbers: the proposal source (grid or rpn)."""
        return {"proposals": p["extract"]["source"]}

    def options(self, p: dict) -> dict[str, dict]:
        """Its one re-ranking, by best proposal, without expansion."""
        return {"regions": {"expand": {"mode": "none"}}}

    # building ---------------------------------------------------------------------------------
    def extract(self, p: dict, gnd: GroundTruth, out_dir, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None:
        from tqdm import tqdm

        ex = _extractor(p)
        n = len(gnd.images)
        images = parts.image_range(n, p["shard_size"], part)  # whole chunks: the batches of one job
        # each query image also pools its query boxes: [box, whole image] per query (LS and GS)
        boxes: dict[int, list] = {}
        for q in gnd.queries:
            im = gnd.images[q.image]
            boxes.setdefault(q.image, []).extend([q.box, (0.0, 0.0, float(im.width), float(im.height))])
        paths = [str(gnd.image_path(i)) for i in range(n)]
        dims = [(im.width, im.height) for im in gnd.images]
        got, fallbacks = [], 0
        desc = progress_desc or f"{gnd.dataset} frcnn"
        with tqdm(total=len(images), desc=f"{desc} {ex.source_name} ({ex.device})", unit="img", mininterval=5) as bar:
            for lo in range(images.start, images.stop, p["shard_size"]):
                hi = min(images.stop, lo + p["shard_size"])
                extra = [np.array(boxes[i], np.float32) if i in boxes else None for i in range(lo, hi)]
                chunk, fb = frcnn.extract_images(ex, paths[lo:hi], dims[lo:hi], max_side=p["max_side"],
                                                 batch_size=p["batch_size"], workers=p["workers"], extra=extra)
                got += chunk
                fallbacks += fb
                bar.update(hi - lo)
        seen: dict[int, int] = {}
        asked, ls, gs = [], [], []  # the queries whose image is here, their box's and whole image's vectors
        for k, q in enumerate(gnd.queries):
            j = seen.get(q.image, 0)
            seen[q.image] = j + 1
            if q.image in images:
                asked.append(k)
                ls.append(got[q.image - images.start].extra[2 * j])
                gs.append(got[q.image - images.start].extra[2 * j + 1])
        config = {"method": "frcnn", **p, "proposal_source": ex.source_name, "images": [im.path for im in gnd.images],
                  "root": gnd.root}
        if part is None:
            self._write(out_dir, frcnn.RegionFeatures.from_images(got), ls, gs, fallbacks, config)
            return
        tmp = make_temp_dir(out_dir)
        if got:
            dim = got[0].vector.shape[0]
            frcnn.RegionFeatures.from_images(got).save(tmp / "regions.npz")
            save_npz(tmp / "queries.npz", queries=np.array(asked, np.int64),
                     ls=np.array(ls, np.float32).reshape(-1, dim), gs=np.array(gs, np.float32).reshape(-1, dim))
        parts.write_manifest(tmp, part, images, config, fallbacks=fallbacks)
        replace_dir(tmp, out_dir)

    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir) -> None:
        found = [m for m in parts.read_manifests(folders, len(gnd.images)) if m["images"][1] > m["images"][0]]
        feats = [frcnn.RegionFeatures.load(m["folder"] / "regions.npz") for m in found]
        queries = [load_npz(m["folder"] / "queries.npz") for m in found]
        order = np.argsort(np.concatenate([q["queries"] for q in queries]), kind="stable")  # parts: in image order
        counts = np.concatenate([np.diff(f.offsets) for f in feats])
        merged = frcnn.RegionFeatures(np.concatenate([f.vectors for f in feats]),
                                      np.concatenate([f.regions for f in feats]),
                                      np.concatenate([f.boxes for f in feats]),
                                      np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._write(out_dir, merged, np.concatenate([q["ls"] for q in queries])[order],
                    np.concatenate([q["gs"] for q in queries])[order], sum(m["fallbacks"] for m in found),
                    found[0]["config"])

    @staticmethod
    def _write(out_dir, feats, ls, gs, fallbacks: int, config: dict) -> None:
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        feats.save(tmp / "regions.npz")
        dim = feats.vectors.shape[1]
        save_npz(tmp / "queries.npz", ls=np.array(ls, np.float32).reshape(-1, dim),
                 gs=np.array(gs, np.float32).reshape(-1, dim))
        n = len(feats.vectors)
        write_json(tmp / "manifest.json", {"n_images": n, "dim": dim, "fallbacks": fallbacks, "config": config})
        replace_dir(tmp, out_dir)
        log.info("%s: %d images, %d proposals, %d fell back to the whole image (%s source)", out_dir, n,
                 len(feats.boxes), fallbacks, config["proposal_source"])

    def learn(self, p: dict, seed: int, gnd: GroundTruth, features) -> dict[str, np.ndarray]:
        """The PCA-whitening of the L2-normalised database image-wise vectors (or none: pca_dim 0)."""
        _, feats, _ = _features(features)
        if not p["pca_dim"]:
            return {"none": np.zeros(0, np.float32)}
        return linalg.whitening_arrays(linalg.fit_whitening(linalg.l2(feats.vectors[:gnd.n_database]).astype(np.float32),
                                                            p["pca_dim"], key="frcnn.codebook.pca_dim"))

    def encode(self, p: dict, gnd: GroundTruth, features, model: dict) -> dict[str, dict]:
        manifest, feats, q = _features(features)
        if manifest["n_images"] != len(gnd.images):
            raise InstanceSearchError(f"{features}: {manifest['n_images']} images but the ground truth lists "
                                      f"{len(gnd.images)}; re-run extract")
        white = linalg.whitening_from(model)
        return {
            "vectors": {"vectors": prepare(feats.vectors[:gnd.n_database], white).astype(np.float32)},
            "proposals": {"boxes": feats.boxes, "offsets": feats.offsets,
                          "regions": linalg.l2(feats.regions.astype(np.float32)).astype(np.float16)},
            "queries": {"ls": prepare(q["ls"], white).astype(np.float32), "gs": prepare(q["gs"], white).astype(np.float32),
                        "ls_region": linalg.l2(q["ls"]).astype(np.float32)},
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
        ex = _extractor({**extraction, "device": "auto"})
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
