"""Visual vocabularies: k-means words learned on a sample of database descriptors, nearest-word assignment.

On the CPU faiss does both with multi-threaded BLAS distance products and scales with cores
(against scikit-learn's MiniBatchKMeans: docs/settings.md).
On CUDA (``codebook.device``) both are torch matrix products (:mod:`.kmeans_torch`): the pip faiss
wheels are CPU-only, and torch is there already.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from ..devices import runs_on_gpu  # noqa: F401 (re-exported: the tests ask it here)
from ..errors import InstanceSearchError
from .linalg import whitening_arrays, whitening_from, whiten

log = logging.getLogger(__name__)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, key: str) -> str:
    """``codebook.device`` as the device to run on: auto = cuda when torch sees a CUDA device, else cpu."""
    if device not in DEVICES:
        raise InstanceSearchError(f"{key}={device!r}: expected auto, cpu or cuda")
    if device == "cpu":
        return "cpu"  # no torch import: the CPU path is faiss alone
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InstanceSearchError(f"{key}=cuda but no CUDA device is visible; use auto or cpu")
    return "cuda"


def train(x: np.ndarray, k: int, iterations: int, seed: int, device: str = "cpu") -> np.ndarray:
    """k-means centroids (k, D) float32; deterministic for a given seed, input and device (a resolved
    one: cpu = faiss, else torch on that device)."""
    if len(x) < k:
        raise InstanceSearchError(
            f"codebook.words={k} is larger than the {len(x)} sampled descriptors; lower codebook.words or raise codebook.sample")
    if device != "cpu":
        from . import kmeans_torch

        centroids, objective = kmeans_torch.train(x, k, iterations, seed, device)
        log.info("k-means (torch, %s): %d words from %d descriptors, final objective %.4g", device, k, len(x),
                 objective)
        return centroids
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, len(x) // k + 1))
    km.train(x)
    log.info("k-means: %d words from %d descriptors, final objective %.4g", k, len(x), km.obj[-1])
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


class Assigner:
    """Nearest word (hard assignment) by exact L2 search over the centroids.

    On the CPU faiss does it; on another (resolved) device, such as ``"cuda"``, batched matrix
    products in torch (:func:`.kmeans_torch.assign`), seconds for millions of features against 25k words.
    """

    def __init__(self, centroids: np.ndarray, device: str = "cpu"):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.device = device
        self.index = None  # exact faiss search on the CPU: the assignment there, multiple assignment anywhere
        if device == "cpu":
            self.index = faiss.IndexFlatL2(centroids.shape[1])
            self.index.add(self.centroids)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.int32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.device == "cpu":
            return self.index.search(x, 1)[1][:, 0].astype(np.int32)
        from . import kmeans_torch

        return kmeans_torch.assign(x, self.centroids, self.device)

    def nearest(self, x: np.ndarray, k: int) -> np.ndarray:
        """The k nearest words of each row, nearest first: (n, k) int32 (multiple assignment of the few
        query features: exact faiss on the CPU, whatever the device)."""
        k = min(k, len(self.centroids))
        if len(x) == 0:
            return np.zeros((0, k), np.int32)
        if self.index is None:  # another device: a CPU index of the centroids, built once
            self.index = faiss.IndexFlatL2(self.centroids.shape[1])
            self.index.add(self.centroids)
        return self.index.search(np.ascontiguousarray(x, dtype=np.float32), k)[1].astype(np.int32)


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
