"""Visual vocabularies: k-means words learned on a sample of database descriptors, nearest-word assignment.

faiss does both with multi-threaded BLAS distance products, caps the points per centroid, runs on
GPUs and scales with cores. (On this project's 2-core CPU a pass of scikit-learn's MiniBatchKMeans
cost about as much as a faiss iteration at 25k words: benchmarks/codebook_speed.py; both are bound
by the same matrix products.)
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from ..errors import InstanceSearchError
from .linalg import whitening_arrays, whitening_from, whiten

log = logging.getLogger(__name__)


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

    Stored as one file (the method's ``model.npz``): ``centroids`` and, when whitening is on, ``pca_mean`` and
    ``pca_projection``.
    """

    def __init__(self, centroids: np.ndarray, whitening: dict[str, np.ndarray] | None = None, device: str = "cpu"):
        self.centroids, self.whitening = centroids, whitening
        self.assigner = Assigner(centroids, device)

    def __len__(self) -> int:
        return len(self.centroids)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x if self.whitening is None else whiten(x, self.whitening)

    def words(self, x: np.ndarray) -> np.ndarray:
        return self.assigner(self.prepare(x))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, **whitening_arrays(self.whitening)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], device: str = "cpu") -> "Vocabulary":
        return cls(a["centroids"], whitening_from(a), device)
