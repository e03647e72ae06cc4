"""The bag-of-words family: local features -> visual words -> tf-idf bags, window re-ranking, QE.

sift and blcf are the same method with different local features (:class:`SiftFeatures`,
:class:`CnnFeatures`): each says how to extract an image's raw features into the store, how to read
them back as the vectors the vocabulary sees (RootSIFT; CNN map upsampling and L2), and what a query
box holding no feature falls back to.

Index files (``index/``): ``bow.npz`` (word counts of every image, word weights, n_database) and
``assignments.npz`` (every image's assignment map: positions and words). Model (``model.npz``): the
vocabulary (centroids, and the PCA-whitening when on).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .. import threads
from ..errors import InstanceSearchError
from ..features import parts, sift
from ..features.store import FeatureStore, build_store, gather_store
from ..groundtruth import GroundTruth
from ..io import load_npz, make_temp_dir, replace_dir, save_npz
from ..retrieval import bow, expansion, linalg, verification, vocabulary, windows
from ..retrieval import similarity as sim
from ..retrieval.geometry import Box, in_box
from ..retrieval.ranking import Ranking, check_first_stage, rank, reorder
from .base import Progress, Queries

log = logging.getLogger(__name__)

# stored shard arrays (xy, desc, offsets) -> (xy, x float32, offsets) as the vocabulary sees them
ShardReader = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]
# (image path, width, height) -> raw (xy, desc) of one image, as the store holds them
RawExtract = Callable[[str, int, int], tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------ local features

class SiftFeatures:
    name = "sift"
    uses_gpu = False
    box_fallback = "image"  # sparse keypoints: an empty box uses the whole image

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        config = {"method": "sift", **p, "images": [im.path for im in gnd.images], "root": gnd.root}
        build_store(out_dir, len(gnd.images),
                    # one detector per image: cheap, and OpenCV objects are not promised to be thread-safe
                    lambda i: sift.extract(str(gnd.image_path(i)),
                                           sift.make_detector(p["max_features"], p["contrast_threshold"]),
                                           p["max_side"]),
                    shard_size=p["shard_size"], config=config, desc=desc, workers=os.cpu_count() or 1, part=part)

    def reader(self, config: dict) -> ShardReader:
        return lambda sh: (sh["xy"], sift.descriptors(sh["desc"], config["rootsift"]), sh["offsets"])

    def one_image(self, config: dict) -> RawExtract:
        max_features, contrast, max_side = config["max_features"], config["contrast_threshold"], config["max_side"]
        return lambda path, width, height: sift.extract(path, sift.make_detector(max_features, contrast), max_side)


class CnnFeatures:
    name = "blcf"
    uses_gpu = True
    box_fallback = "nearest"  # a CNN map covers the whole image: a box between cell centres takes its nearest cell

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        from ..features import cnn

        extractor = cnn.Extractor(p["backbone"], p["layer"] or None, p["device"], p["half"])
        # What determines the stored values (not device, batch size or workers: they do not change them).
        config = {"method": "blcf", "backbone": p["backbone"], "layer": extractor.layer, "max_side": p["max_side"],
                  "upsample": p["upsample"], "half": extractor.half, "stride": extractor.stride,
                  "images": [im.path for im in gnd.images], "root": gnd.root}
        paths = [str(gnd.image_path(i)) for i in range(len(gnd.images))]
        dims = [(im.width, im.height) for im in gnd.images]

        def shard(images: range):
            return cnn.extract_images(extractor, paths[images.start:images.stop], dims[images.start:images.stop],
                                      max_side=p["max_side"], batch_size=p["batch_size"], workers=p["workers"])

        build_store(out_dir, len(gnd.images), shard, shard_size=p["shard_size"], config=config,
                    desc=f"{desc} {p['backbone']} ({extractor.device})", batched=True, part=part)

    def reader(self, config: dict) -> ShardReader:
        from ..features import cnn

        factor = config["upsample"]

        def read(sh):
            off = sh["offsets"]
            xys, xs, counts = [], [], []
            for j in range(len(off) - 1):
                xy, x = cnn.local_features(sh["xy"][off[j]:off[j + 1]], sh["desc"][off[j]:off[j + 1]], factor)
                xys.append(xy)
                xs.append(x)
                counts.append(len(xy))
            return (np.concatenate(xys).reshape(-1, 2), np.concatenate(xs),
                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

        return read

    def one_image(self, config: dict) -> RawExtract:
        from ..features import cnn

        extractor = cnn.Extractor(config["backbone"], config["layer"], "auto", config["half"])  # loaded once
        if extractor.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            _share_cores()

        def extract(path: str, width: int, height: int):
            return cnn.extract_images(extractor, [path], [(width, height)], max_side=config["max_side"],
                                      batch_size=1, workers=0)[0]
        return extract


class XfeatFeatures:
    """XFeat's learned keypoints and 64-d descriptors (features/xfeat.py), in place of SIFT's."""

    name = "xfeat"
    uses_gpu = True  # a CNN: extract.device auto runs it on CUDA where there is one
    box_fallback = "image"  # sparse keypoints, as SIFT's: an empty box uses the whole image

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        from ..features import xfeat

        extractor = xfeat.Extractor(p["device"])  # loaded once
        # What determines the stored values (not the device: it does not change the settings).
        config = {"method": "xfeat", **{k: v for k, v in p.items() if k != "device"},
                  "images": [im.path for im in gnd.images], "root": gnd.root}
        build_store(out_dir, len(gnd.images),
                    # one image at a time in this thread: torch's own pool holds compute.threads
                    lambda i: extractor.extract(str(gnd.image_path(i)), p["max_side"], p["max_features"],
                                                p["detection_threshold"]),
                    shard_size=p["shard_size"], config=config, desc=f"{desc} ({extractor.device})", part=part)

    def reader(self, config: dict) -> ShardReader:
        from ..features import xfeat

        return lambda sh: (sh["xy"], xfeat.descriptors(sh["desc"]), sh["offsets"])

    def one_image(self, config: dict) -> RawExtract:
        from ..features import xfeat

        extractor = xfeat.Extractor("auto")  # loaded once
        if extractor.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            _share_cores()
        max_side, max_features, threshold = config["max_side"], config["max_features"], config["detection_threshold"]
        return lambda path, width, height: extractor.extract(path, max_side, max_features, threshold)


def _share_cores() -> None:
    """One query's CNN uses half the cores (2 cores: one thread), unless OMP_NUM_THREADS says otherwise.

    torch's default, a spinning OpenMP thread per core, collapses when anything else runs: on this
    project's busy 2-core machine, one thread ran mobilenet_v2 on a 340-px image 5x faster than two
    (benchmarks/query_latency.py); the web server's requests run in parallel threads anyway.
    """
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2)))


def sample_descriptors(store: FeatureStore, n_database: int, size: int, seed: int, read: ShardReader) -> np.ndarray:
    """A uniform sample (without replacement, seeded) of the database images' local features; the
    query-only images after the database are never sampled."""
    counts = []
    for first, sh in store.shards(n_database):
        off = read(sh)[2]
        counts.append(int(off[min(len(off) - 1, n_database - first)]))
    total = sum(counts)
    if total == 0:
        raise InstanceSearchError(f"{store.path}: the database images have no local features; check the images and "
                                  "the extract parameters")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for (first, sh), n in zip(store.shards(n_database), counts):
        sel = chosen[(chosen >= start) & (chosen < start + n)] - start
        parts.append(read(sh)[1][sel])
        start += n
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


# ------------------------------------------------------------------------------------------ database

@dataclass(eq=False)
class BowDatabase:
    counts: sp.csr_matrix          # (n_images, K) word counts of every image (database, then query-only)
    idf: np.ndarray                # float64 (K,) word weights
    n_database: int
    maps: bow.AssignmentMaps       # every image's words with their positions

    def __post_init__(self):
        self.database = bow.weighted(self.counts[:self.n_database], self.idf)

    @property
    def n_images(self) -> int:
        return self.counts.shape[0]

    @property
    def vocabulary(self) -> int:
        return self.counts.shape[1]


def _bow_arrays(counts: sp.csr_matrix, idf: np.ndarray, n_database: int) -> dict[str, np.ndarray]:
    return dict(data=counts.data, indices=counts.indices.astype(np.int32), indptr=counts.indptr.astype(np.int64),
                shape=np.array(counts.shape, np.int64), idf=idf, n_database=np.array(n_database, np.int64))


def _box_or_whole(box: Box | None, width: int, height: int) -> Box:
    """The query box, or the whole image for a query without one."""
    return (0.0, 0.0, float(width), float(height)) if box is None else box


# -------------------------------------------------------------------------------------------- method

class BagOfWords:
    """A :class:`~instance_search.methods.base.Method` over one kind of local features."""

    def __init__(self, features: SiftFeatures | CnnFeatures, published: dict[str, float] | None = None):
        self.features = features
        self.name, self.uses_gpu = features.name, features.uses_gpu
        self.published = published or {}

    def labels(self, p: dict) -> dict[str, str]:
        """What the metrics and tables must say beside the numbers (nothing for bags of words)."""
        return {}

    def options(self, p: dict) -> dict[str, dict]:
        """Re-ranking by best sliding window or by spatial verification, without expansion."""
        return {mode: {"rerank": {"mode": mode}, "expand": {"mode": "none"}} for mode in ("window", "sv")}

    def second_stage(self, p: dict) -> str:
        r, e = p["rerank"], p["expand"]
        if r["candidates"] == 0:
            return "no re-ranking"
        how = {"window": "best sliding window", "sv": "spatial verification"}[r["mode"]]
        expand = "" if e["mode"] == "none" else f", then {e['mode']} over the top {e['neighbours']}"
        return f"top {r['candidates']} re-ranked by {how}{expand}"

    # building ---------------------------------------------------------------------------------
    def extract(self, p: dict, gnd: GroundTruth, out_dir, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None:
        self.features.build(p, gnd, out_dir, progress_desc or f"{gnd.dataset} {self.name}", part)

    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir) -> None:
        gather_store(folders, len(gnd.images), out_dir)

    def learn(self, p: dict, seed: int, gnd: GroundTruth, features) -> dict[str, np.ndarray]:
        """The vocabulary: optional PCA-whitening and k-means, both learned on one seeded database sample."""
        device = self._device(p.get("device", "cpu"))  # a params file without the key: faiss on the CPU, as before
        store = FeatureStore(features)
        sample = sample_descriptors(store, gnd.n_database, p["sample"], seed, self.features.reader(store.config))
        white = None
        if p["pca_dim"]:
            white = linalg.fit_whitening(sample, p["pca_dim"], key=f"{self.name}.codebook.pca_dim")
            sample = linalg.whiten(sample, white)
        try:
            centroids = vocabulary.train(sample, p["words"], p["iterations"], seed, device)
        except InstanceSearchError as exc:
            raise InstanceSearchError(f"params {self.name}.{exc}") from None
        return vocabulary.Vocabulary(centroids, white).to_arrays()

    def _device(self, device: str) -> str:
        """codebook.device resolved (auto: CUDA when present); the error names this method's key."""
        return vocabulary.resolve_device(device, f"{self.name}.codebook.device")

    def encode(self, p: dict, gnd: GroundTruth, features, model: dict, device: str = "cpu") -> dict[str, dict]:
        """Every feature's word: the word counts, word weights and assignment maps of every image.
        ``device``: codebook.device, where the nearest words are computed (exact L2 either way)."""
        maps, k = self._assign(gnd, features, model, device, None)
        log.info("encoded %d features of %d images into %d words (%s)", len(maps.words), len(gnd.images), k,
                 p["weighting"])
        return self._files(maps, k, gnd.n_database, p["weighting"])

    def _assign(self, gnd: GroundTruth, features, model: dict, device: str,
                part: tuple[int, int] | None) -> tuple[bow.AssignmentMaps, int]:
        """The assignment maps of the images of ``part`` (all for None), and the vocabulary's size."""
        device = self._device(device)
        store = FeatureStore(features)
        if store.n_images != len(gnd.images):
            raise InstanceSearchError(f"{features}: {store.n_images} images but the ground truth lists "
                                      f"{len(gnd.images)}; re-run extract")
        images = parts.image_range(store.n_images, store.shard_size, part)  # whole shards
        vocab = vocabulary.Vocabulary.from_arrays(model, device)
        read = self.features.reader(store.config)
        xys, words, counts = [], [], [np.zeros(0, np.int64)]
        for first, sh in store.shards():
            if images.start <= first < images.stop:
                xy, x, off = read(sh)
                xys.append(xy)
                words.append(vocab.words(x))
                counts.append(np.diff(off))
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
        shown = gnd.images[images.start:images.stop]
        maps = bow.AssignmentMaps(
            xy=np.concatenate(xys) if xys else np.zeros((0, 2), np.float32),
            words=np.concatenate(words) if words else np.zeros(0, np.int32), offsets=offsets,
            width=np.array([im.width for im in shown], np.int32), height=np.array([im.height for im in shown], np.int32))
        return maps, len(vocab)

    # Encoding in part jobs (compute.parts): the nearest words, the costly part, per part of the images;
    # the word weights, which need every image, when they are gathered.
    encodes_in_parts = True

    def encode_part(self, p: dict, gnd: GroundTruth, features, model: dict, part: tuple[int, int], out_dir,
                    config: dict, device: str = "cpu") -> None:
        maps, k = self._assign(gnd, features, model, device, part)
        tmp = make_temp_dir(out_dir)
        save_npz(tmp / "assignments.npz", **maps.to_arrays(), vocabulary=np.array(k, np.int64))
        parts.write_manifest(tmp, part, parts.image_range(len(gnd.images), FeatureStore(features).shard_size, part),
                             config)
        replace_dir(tmp, out_dir)

    def gather_encoded(self, p: dict, gnd: GroundTruth, folders: list[Path]) -> dict[str, dict]:
        found = parts.read_manifests(folders, len(gnd.images))
        got = [load_npz(m["folder"] / "assignments.npz") for m in found]
        maps = bow.AssignmentMaps.concatenate([bow.AssignmentMaps.from_arrays(a) for a in got])
        return self._files(maps, int(got[0]["vocabulary"]), gnd.n_database, p["weighting"])

    def _files(self, maps: bow.AssignmentMaps, k: int, n_database: int, weighting: str) -> dict[str, dict]:
        counts = bow.counts_matrix(maps.words, maps.offsets, k)
        idf = bow.word_weights(counts, n_database, weighting)
        return {"bow": _bow_arrays(counts, idf, n_database), "assignments": maps.to_arrays()}

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        """One index of database images from several encoded parts (``index --add``); the word weights
        are computed again over all of them, the vocabulary is kept."""
        maps = bow.AssignmentMaps.concatenate([bow.AssignmentMaps.from_arrays(f["assignments"]) for f in parts])
        return self._files(maps, int(parts[0]["bow"]["shape"][1]), n_database, p["weighting"])

    # querying ---------------------------------------------------------------------------------
    def load(self, files: dict[str, dict], n_database: int) -> BowDatabase:
        b = files["bow"]
        counts = sp.csr_matrix((b["data"], b["indices"], b["indptr"]), shape=tuple(b["shape"]))
        maps = bow.AssignmentMaps.from_arrays(files["assignments"])
        if int(b["n_database"]) != n_database or len(maps) != counts.shape[0]:
            raise InstanceSearchError("bow.npz and assignments.npz describe other image lists; re-run encode")
        return BowDatabase(counts, np.asarray(b["idf"], np.float64), n_database, maps)

    def benchmark_queries(self, db: BowDatabase, gnd: GroundTruth) -> Queries:
        """The ground truth's queries: the words inside each box (LS) and of the whole query image (GS),
        read from the query images' assignment maps."""
        boxes, images, points, fallbacks, info = [], [], [], [], []
        for q in gnd.queries:
            xy, words, width, height = db.maps.image(q.image)
            keep, fell_back = in_box(xy, q.box, self.features.box_fallback)
            if fell_back:
                fallbacks.append(q.name)
            boxes.append(words[keep])
            images.append(words)
            points.append((xy[keep], words[keep], _box_or_whole(q.box, width, height)))
            info.append({"features": len(words), "box_features": len(keep), "box_fallback": fell_back})
        if fallbacks:
            log.warning("%d queries have no feature inside their box; they use %s: %s", len(fallbacks),
                        "the whole image" if self.features.box_fallback == "image"
                        else "the feature nearest the box centre", ", ".join(fallbacks))
        return self._queries([q.name for q in gnd.queries], boxes, images, points, db, info)

    def _queries(self, names, boxes, images, points, db: BowDatabase, info) -> Queries:
        """``points``: each query's (xy, words) inside its box, and the box: what spatial verification
        matches and maps into each candidate."""
        return Queries(names, box=bow.weighted(bow.bag(boxes, db.vocabulary), db.idf),
                       image=bow.weighted(bow.bag(images, db.vocabulary), db.idf), extra={"points": points},
                       info=info)

    def image_encoder(self, extraction: dict, model: dict, db: BowDatabase):
        """(path, width, height, box or None) -> the Queries of one image, computed as extract and
        encode computed the database's (the same extractor, reader and vocabulary)."""
        raw = self.features.one_image(extraction)
        read = self.features.reader(extraction)
        vocab = vocabulary.Vocabulary.from_arrays(model)

        def encode(path: str, width: int, height: int, box: Box | None) -> Queries:
            xy, desc = raw(path, width, height)
            shard = {"xy": np.asarray(xy, np.float32).reshape(-1, 2), "desc": desc,
                     "offsets": np.array([0, len(xy)], np.int64)}
            xy, x, _ = read(shard)
            words = vocab.words(x)
            if len(words) == 0:
                raise InstanceSearchError(f"{path}: no local feature found in the image; use a more textured image")
            keep, fell_back = (np.arange(len(words)), False) if box is None else in_box(
                xy, box, self.features.box_fallback)
            info = {"features": int(len(words)), "box_features": int(len(keep)), "box_fallback": fell_back}
            points = [(xy[keep], words[keep], _box_or_whole(box, width, height))]
            return self._queries([Path(path).name], [words[keep]], [words], points, db, [info])
        return encode

    def search(self, db: BowDatabase, queries: Queries, p: dict, similarity: str, alpha: float) -> Ranking:
        q = queries.searched(p["search"]["query"])
        return Ranking(*rank(sim.scores(q, db.database, similarity, alpha)))

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
        first-stage score + weight x the inlier count (counted 0 below min_inliers), ties in first-stage
        order (a stable sort); the region is the query box mapped into the candidate. The first-stage
        score stays in: on whole-image queries (UKBench) inliers alone let repeated texture outrank
        true matches. Candidates run in parallel on compute.threads threads."""
        sv = r["sv"]
        verification.check(sv, f"{self.name}.rerank.sv")
        ranks, scores = check_first_stage(first.ranks, first.scores, r["candidates"], len(queries))
        t = min(r["candidates"], ranks.shape[1])
        inliers = np.zeros((len(queries), t))
        boxes = np.full((len(queries), t, 4), np.nan, np.float32)
        settings = {k: sv[k] for k in verification.KEYS}
        for j, (xy, words, box) in enumerate(queries.extra["points"]):
            candidates = [db.maps.image(int(i))[:2] for i in ranks[j, :t]]
            found = verification.verify_many(xy, words, box, candidates, workers=threads.applied() or 1,
                                             seed=sv["seed"], **settings)
            for k, v in enumerate(found):
                if v.inliers >= sv["min_inliers"]:
                    inliers[j, k] = v.inliers
                    if v.box is not None:
                        boxes[j, k] = v.box
            if progress is not None:
                progress(j + 1, len(queries))
        ranks, scores, boxes = reorder(ranks, scores, scores[:, :t] + sv["weight"] * inliers, boxes)
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
