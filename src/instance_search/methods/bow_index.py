"""The bag-of-words family's index: the vocabulary (learn) and every image's words (encode).

Learn: an optional PCA-whitening and k-means, both on one seeded sample of the database's features.
Encode: every feature's nearest word, giving the tf-idf bags (``bow.npz``), the assignment maps with
each feature's binarised residual (``assignments.npz``) and the ASMK* aggregations (``asmk.npz``),
also of each benchmark query's box and whole image (multiple assignment). Part jobs
(compute.parts) compute the nearest words per part of the images; the word weights, which need
every image, when the parts are gathered.

The codebook and encode steps import this module, not the search code (:mod:`.bow`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError
from ..features import parts
from ..features.store import FeatureStore
from ..groundtruth import GroundTruth
from ..io import load_npz, make_temp_dir, replace_dir, save_npz
from ..retrieval import asmk, bow, linalg, vocabulary
from ..retrieval.geometry import Box, in_box
from .local_features import LocalFeatures, ShardReader

log = logging.getLogger(__name__)


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


@dataclass(eq=False)
class Encoded:
    """What encode computes for a list of images: assignment maps, ASMK* aggregations, and the ASMK* of
    the benchmark queries whose images are among them (their numbers in ``query_index``)."""
    maps: bow.AssignmentMaps
    k: int
    aggregated: asmk.Aggregated
    query_index: np.ndarray
    query_box: asmk.Aggregated
    query_image: asmk.Aggregated
    query_words: int

    def asmk_arrays(self) -> dict[str, np.ndarray]:
        return {**self.aggregated.to_arrays(), **self.query_box.to_arrays("box_"),
                **self.query_image.to_arrays("image_"), "query_index": self.query_index,
                "query_words": np.array(self.query_words, np.int64)}

    @classmethod
    def from_arrays(cls, maps: bow.AssignmentMaps, k: int, a: dict) -> "Encoded":
        return cls(maps, k, asmk.Aggregated.from_arrays(a), np.asarray(a["query_index"], np.int64),
                   asmk.Aggregated.from_arrays(a, "box_"), asmk.Aggregated.from_arrays(a, "image_"),
                   int(a["query_words"]))

    @classmethod
    def concatenate(cls, parts: list["Encoded"]) -> "Encoded":
        return cls(bow.AssignmentMaps.concatenate([e.maps for e in parts]), parts[0].k,
                   asmk.Aggregated.concatenate([e.aggregated for e in parts]),
                   np.concatenate([e.query_index for e in parts]),
                   asmk.Aggregated.concatenate([e.query_box for e in parts]),
                   asmk.Aggregated.concatenate([e.query_image for e in parts]), parts[0].query_words)


def asmk_query_words(p: dict, method: str) -> int:
    n = p.get("asmk", {}).get("query_words", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InstanceSearchError(f"{method}.encode.asmk.query_words={n!r}: must be an integer >= 1 (the references: 5)")
    return n


def bow_arrays(counts: sp.csr_matrix, idf: np.ndarray, n_database: int) -> dict[str, np.ndarray]:
    return dict(data=counts.data, indices=counts.indices.astype(np.int32), indptr=counts.indptr.astype(np.int64),
                shape=np.array(counts.shape, np.int64), idf=idf, n_database=np.array(n_database, np.int64))


class BowIndexing:
    """Learns the vocabulary of one kind of local features and encodes images with it."""

    def __init__(self, features: LocalFeatures):
        self.features = features
        self.name = features.name

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
        """Every feature's word: the word counts, word weights, assignment maps and ASMK* aggregations of
        every image. ``device``: codebook.device, where the nearest words are computed (exact L2 either way)."""
        enc = self._assign(p, gnd, features, model, device, None)
        log.info("encoded %d features of %d images into %d words (%s)", len(enc.maps.words), len(gnd.images),
                 enc.k, p["weighting"])
        return self._files(enc, gnd.n_database, p)

    def _assign(self, p: dict, gnd: GroundTruth, features, model: dict, device: str,
                part: tuple[int, int] | None) -> "Encoded":
        """The assignment maps and ASMK* aggregations of the images of ``part`` (all for None), and of the
        benchmark queries whose images lie there."""
        device = self._device(device)
        query_words = asmk_query_words(p, self.name)
        store = FeatureStore(features)
        if store.n_images != len(gnd.images):
            raise InstanceSearchError(f"{features}: {store.n_images} images but the ground truth lists "
                                      f"{len(gnd.images)}; re-run extract")
        images = parts.image_range(store.n_images, store.shard_size, part)  # whole shards
        vocab = vocabulary.Vocabulary.from_arrays(model, device)
        read = self.features.reader(store.config)
        dims = vocab.centroids.shape[1]
        xys, words, bits, counts, aggs = [], [], [], [np.zeros(0, np.int64)], []
        queries = {"index": [], "box": [], "image": []}
        for first, sh in store.shards():
            if images.start <= first < images.stop:
                xy, x, off = read(sh)
                x = vocab.prepare(x)
                w = vocab.assigner(x)
                xys.append(xy)
                words.append(w)
                bits.append(asmk.residual_bits(x, w, vocab.centroids))
                counts.append(np.diff(off))
                aggs.append(asmk.aggregate(x, w, off, vocab.centroids))
                for j, q in enumerate(gnd.queries):
                    if first <= q.image < first + len(off) - 1:
                        a, b = off[q.image - first], off[q.image - first + 1]
                        box, image = self.query_aggregates(xy[a:b], x[a:b], q.box, vocab, query_words)
                        queries["index"].append(j)
                        queries["box"].append(box)
                        queries["image"].append(image)
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
        shown = gnd.images[images.start:images.stop]
        maps = bow.AssignmentMaps(
            xy=np.concatenate(xys) if xys else np.zeros((0, 2), np.float32),
            words=np.concatenate(words) if words else np.zeros(0, np.int32), offsets=offsets,
            width=np.array([im.width for im in shown], np.int32), height=np.array([im.height for im in shown], np.int32),
            bits=np.concatenate(bits) if bits else np.zeros((0, (dims + 7) // 8), np.uint8))
        empty = asmk.Aggregated.empty(dims)
        return Encoded(maps, len(vocab), asmk.Aggregated.concatenate([empty, *aggs]),
                        np.array(queries["index"], np.int64), asmk.Aggregated.concatenate([empty, *queries["box"]]),
                        asmk.Aggregated.concatenate([empty, *queries["image"]]), query_words)

    def query_aggregates(self, xy, x, box: Box | None, vocab: vocabulary.Vocabulary,
                          query_words: int) -> tuple[asmk.Aggregated, asmk.Aggregated]:
        """A query's ASMK* (box, whole image) from its prepared features, each assigned to its
        ``query_words`` nearest words; the box's features as the bag's (geometry.in_box, fallback)."""
        ma = vocab.assigner.nearest(x, query_words)
        keep = np.arange(len(xy)) if box is None else in_box(xy, box, self.features.box_fallback)[0]
        whole = asmk.aggregate(x, ma, np.array([0, len(x)]), vocab.centroids)
        inside = asmk.aggregate(x[keep], ma[keep], np.array([0, len(keep)]), vocab.centroids)
        return inside, whole

    # Encoding in part jobs (compute.parts): the nearest words, the costly part, per part of the images;
    # the word weights, which need every image, when they are gathered.

    def encode_part(self, p: dict, gnd: GroundTruth, features, model: dict, part: tuple[int, int], out_dir,
                    config: dict, device: str = "cpu") -> None:
        enc = self._assign(p, gnd, features, model, device, part)
        tmp = make_temp_dir(out_dir)
        save_npz(tmp / "assignments.npz", **enc.maps.to_arrays(), vocabulary=np.array(enc.k, np.int64))
        save_npz(tmp / "asmk.npz", **enc.asmk_arrays())
        parts.write_manifest(tmp, part, parts.image_range(len(gnd.images), FeatureStore(features).shard_size, part),
                             config)
        replace_dir(tmp, out_dir)

    def gather_encoded(self, p: dict, gnd: GroundTruth, folders: list[Path]) -> dict[str, dict]:
        found = parts.read_manifests(folders, len(gnd.images))
        got = [load_npz(m["folder"] / "assignments.npz") for m in found]
        encoded = [Encoded.from_arrays(bow.AssignmentMaps.from_arrays(a), int(a["vocabulary"]),
                                        load_npz(m["folder"] / "asmk.npz")) for a, m in zip(got, found)]
        return self._files(Encoded.concatenate(encoded), gnd.n_database, p)

    def _files(self, enc: "Encoded", n_database: int, p: dict) -> dict[str, dict]:
        counts = bow.counts_matrix(enc.maps.words, enc.maps.offsets, enc.k)
        idf = bow.word_weights(counts, n_database, p["weighting"])
        return {"bow": bow_arrays(counts, idf, n_database), "assignments": enc.maps.to_arrays(),
                "asmk": enc.asmk_arrays()}

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        """One index of database images from several encoded parts (``index --add``); the word weights
        are computed again over all of them, the vocabulary is kept. Benchmark queries are not joined
        (a photo folder has none)."""
        encoded = [Encoded.from_arrays(bow.AssignmentMaps.from_arrays(f["assignments"]), int(f["bow"]["shape"][1]),
                                        f["asmk"]) for f in parts]
        joined = Encoded.concatenate(encoded)
        dims = joined.aggregated.dims
        joined.query_index = np.zeros(0, np.int64)
        joined.query_box = joined.query_image = asmk.Aggregated.empty(dims)
        return self._files(joined, n_database, p)
