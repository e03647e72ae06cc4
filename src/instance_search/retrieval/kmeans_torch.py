"""k-means and nearest-word assignment as batched torch matrix products: the vocabulary's CUDA path.

Nearest word: argmin_j |c_j|^2 - 2 x.c_j (|x|^2 is the same for every word), over row batches whose
(batch, k) block of distances fits a fixed memory budget; ties go to the lowest word, as torch's
argmin keeps the first minimum.

Lloyd iterations as faiss runs them: k distinct sampled features as the initial centroids (seeded),
then assign / move each centroid to the mean of its features; every feature is used (the codebook
sample is the cap; vocabulary.train sets faiss's max_points_per_centroid so that it uses all of them
too). An emptied word takes half of the largest word (faiss takes a random one, weighted by size):
a copy of its centroid, both pushed apart by a relative 1/1024 in alternate dimensions.

Deterministic for a seed on one device: the centroid sums are accumulated in 64-bit fixed point,
whose additions are exact and so do not depend on the order CUDA's atomic adds happen in; the
distance products are cuBLAS/BLAS matrix products of fixed shapes.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)

EPS = 1.0 / 1024  # faiss's relative push when it splits a word for an empty one (clustering.cpp)
BUDGET = {"cpu": 256 << 20, "cuda": 1 << 30}  # bytes of one batch's (batch, k) float32 distances


def batch_rows(k: int, device: str, budget: int | None = None) -> int:
    """Rows per batch: the (rows, k) float32 distance block within the device's memory budget."""
    budget = budget or BUDGET["cuda" if str(device).startswith("cuda") else "cpu"]
    return max(1, budget // (4 * k))


def _resident(x: np.ndarray, device: str):
    """x as a torch tensor on ``device`` when it fits in half of the free memory there (one copy, no
    transfer per iteration), else on the host (each batch moves when it is used)."""
    import torch

    host = torch.from_numpy(x)
    if not str(device).startswith("cuda"):
        return host
    free, _ = torch.cuda.mem_get_info(device)
    return host.to(device) if x.nbytes < free // 2 else host


def _nearest(xb, c, c_sq):
    """(nearest word, |c|^2 - 2 x.c at it) of each row of the batch xb (on c's device)."""
    import torch

    dist = torch.addmm(c_sq[None, :], xb, c.T, beta=1.0, alpha=-2.0)
    val, idx = torch.min(dist, dim=1)
    return idx, val


def assign(x: np.ndarray, centroids: np.ndarray, device: str = "cpu", batch: int | None = None) -> np.ndarray:
    """Nearest word (int32) of each row of x by exact L2, computed in torch on ``device``."""
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros(0, np.int32)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(device)
    c_sq = (c * c).sum(1)
    batch = batch or batch_rows(len(c), device)
    xs = torch.from_numpy(x)
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            out.append(_nearest(xs[lo:lo + batch].to(device), c, c_sq)[0].cpu())
    return torch.cat(out).numpy().astype(np.int32)


def _fixed_point_exponent(x: np.ndarray) -> int:
    """e such that every word's sum of round(x * 2^e) fits in an int64 (|sum| <= n max|x| < 2^62)."""
    top = float(np.abs(x).max()) * len(x)
    return 0 if top == 0.0 else 62 - math.ceil(math.log2(top)) - 1


def _split_empty(c, counts: np.ndarray) -> int:
    """Give every empty word half of the currently largest word (lowest index on ties); returns how many."""
    import torch

    empty = np.flatnonzero(counts == 0)
    if len(empty) == 0:
        return 0
    sign = torch.ones(c.shape[1], dtype=c.dtype, device=c.device)
    sign[1::2] = -1.0
    counts = counts.copy()
    for ci in map(int, empty):
        cj = int(np.argmax(counts))
        c[ci] = c[cj] * (1.0 + EPS * sign)
        c[cj] = c[cj] * (1.0 - EPS * sign)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]
    return len(empty)


def initial(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The initial centroids: k distinct features drawn with the seed."""
    return x[np.random.default_rng(seed).choice(len(x), size=k, replace=False)]


def train(x: np.ndarray, k: int, iterations: int, seed: int, device: str = "cpu", batch: int | None = None,
          init: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(k-means centroids (k, D) float32, final objective: the summed squared distances of the last
    assignment), on ``device``; deterministic for a seed, an input and a device. ``init``: other
    initial centroids than :func:`initial`'s (to compare with faiss from the same start)."""
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    start = initial(x, k, seed) if init is None else np.ascontiguousarray(init, dtype=np.float32)
    xs = _resident(x, device)
    c = torch.from_numpy(start.copy()).to(device)
    batch = batch or batch_rows(k, device)
    scale = 2.0 ** _fixed_point_exponent(x)
    x_sq = float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    objective = float("nan")
    with torch.no_grad():
        for it in range(iterations):
            t0 = time.perf_counter()
            c_sq = (c * c).sum(1)
            sums = torch.zeros((k, d), dtype=torch.int64, device=device)
            counts = torch.zeros(k, dtype=torch.int64, device=device)
            partial = torch.zeros((), dtype=torch.float64, device=device)
            for lo in range(0, n, batch):
                xb = xs[lo:lo + batch].to(device)
                words, val = _nearest(xb, c, c_sq)
                partial += val.sum(dtype=torch.float64)
                counts += torch.bincount(words, minlength=k)
                sums.index_add_(0, words, torch.round(xb.double() * scale).long())
            objective = x_sq + float(partial)
            counts_host = counts.cpu().numpy()
            mean = sums.double() / scale / counts.clamp(min=1)[:, None].double()
            c = torch.where((counts > 0)[:, None], mean.float(), c)
            split = _split_empty(c, counts_host)
            log.debug("k-means iteration %d/%d on %s: objective %.6g, %d empty words split, %.2f s", it + 1,
                      iterations, device, objective, split, time.perf_counter() - t0)
    return np.ascontiguousarray(c.cpu().numpy(), dtype=np.float32), objective
