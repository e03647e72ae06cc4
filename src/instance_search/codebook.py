"""Visual vocabularies: k-means on a seeded sample of database descriptors, nearest-word assignment.

faiss does both (multi-threaded BLAS distance products), which is what makes the large vocabularies
of the CNN method practical; scikit-learn's KMeans is far slower at 10^4-10^5 words.
"""

from __future__ import annotations

import logging
from typing import Callable

import faiss
import numpy as np

from .errors import InstanceSearchError
from .features.store import FeatureStore

log = logging.getLogger(__name__)


def sample_descriptors(store: FeatureStore, n_database: int, size: int, seed: int,
                       transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A uniform sample (without replacement, seeded) of the database images' descriptors."""
    counts = []
    for first, sh in store.shards(n_database):
        off = sh["offsets"]
        last = min(len(off) - 1, n_database - first)
        counts.append(int(off[last]))
    total = sum(counts)
    if total == 0:
        raise InstanceSearchError(f"{store.path}: the database images have no local features; check the images and the extract parameters")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for (first, sh), n in zip(store.shards(n_database), counts):
        sel = chosen[(chosen >= start) & (chosen < start + n)] - start
        parts.append(transform(sh["desc"][sel]))
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
    """Nearest word (hard assignment) by exact L2 search over the centroids."""

    def __init__(self, centroids: np.ndarray):
        self.index = faiss.IndexFlatL2(centroids.shape[1])
        self.index.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.int32)
        _, idx = self.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return idx[:, 0].astype(np.int32)
