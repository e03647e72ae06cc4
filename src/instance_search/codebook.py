"""Visual vocabularies: k-means on a seeded sample of database descriptors, nearest-word assignment.

faiss does both with multi-threaded BLAS distance products, caps the points per centroid, runs on
GPUs and scales with cores. (On this project's 2-core CPU a pass of scikit-learn's MiniBatchKMeans
cost about as much as a faiss iteration at 25k words: benchmarks/codebook_speed.py; both are bound
by the same matrix products.)
"""

from __future__ import annotations

import logging
from typing import Callable

import faiss
import numpy as np

from .errors import InstanceSearchError
from .features.store import FeatureStore

log = logging.getLogger(__name__)


# A shard's local features as the codebook sees them: shard arrays -> (xy, x float32, offsets).
ShardFeatures = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


def sample_descriptors(store: FeatureStore, n_database: int, size: int, seed: int,
                       features: ShardFeatures) -> np.ndarray:
    """A uniform sample (without replacement, seeded) of the database images' local features."""
    counts = []
    for first, sh in store.shards(n_database):
        off = features(sh)[2]
        counts.append(int(off[min(len(off) - 1, n_database - first)]))
    total = sum(counts)
    if total == 0:
        raise InstanceSearchError(f"{store.path}: the database images have no local features; check the images and the extract parameters")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for (first, sh), n in zip(store.shards(n_database), counts):
        sel = chosen[(chosen >= start) & (chosen < start + n)] - start
        parts.append(features(sh)[1][sel])
        start += n
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def train(x: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """k-means centroids (k, D) float32; deterministic for a given seed and input."""
    if len(x) < k:
        raise InstanceSearchError(
            f"codebook.words={k} is larger than the {len(x)} sampled descriptors; lower codebook.words or raise codebook.sample")
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, len(x) // k + 1))
    km.train(x)
    log.info("k-means: %d words from %d descriptors, final objective %.4g", k, len(x), km.obj[-1])
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


class Assigner:
    """Nearest word (hard assignment) by exact L2 search over the centroids.

    On the CPU faiss does it; with ``device="cuda"`` it is a batched matrix product in torch
    (argmin |c|^2 - 2 x.c), seconds for millions of features against 25k words.
    """

    def __init__(self, centroids: np.ndarray, device: str = "cpu", batch: int = 65536):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.device, self.batch = device, batch
        if device == "cpu":
            self.index = faiss.IndexFlatL2(centroids.shape[1])
            self.index.add(self.centroids)
        else:
            import torch

            self.c = torch.from_numpy(self.centroids).to(device)
            self.c_sq = (self.c * self.c).sum(1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.int32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.device == "cpu":
            return self.index.search(x, 1)[1][:, 0].astype(np.int32)
        import torch

        out = []
        for lo in range(0, len(x), self.batch):
            xb = torch.from_numpy(x[lo:lo + self.batch]).to(self.device)
            out.append(torch.argmin(self.c_sq[None, :] - 2.0 * xb @ self.c.T, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.int32)


class Vocabulary:
    """Everything that maps a local feature to its word: optional whitening, then the centroids.

    Stored as one file (``codebook.npz``): ``centroids`` and, when whitening is on, ``pca_mean`` and
    ``pca_projection``.
    """

    def __init__(self, centroids: np.ndarray, whitening: dict[str, np.ndarray] | None = None, device: str = "cpu"):
        self.centroids, self.whitening = centroids, whitening
        self.assigner = Assigner(centroids, device)

    def __len__(self) -> int:
        return len(self.centroids)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        from . import whitening

        return x if self.whitening is None else whitening.apply(x, self.whitening)

    def words(self, x: np.ndarray) -> np.ndarray:
        return self.assigner(self.prepare(x))

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"centroids": self.centroids}
        if self.whitening is not None:
            out.update(pca_mean=self.whitening["mean"], pca_projection=self.whitening["projection"])
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], device: str = "cpu") -> "Vocabulary":
        w = {"mean": a["pca_mean"], "projection": a["pca_projection"]} if "pca_mean" in a else None
        return cls(a["centroids"], w, device)
