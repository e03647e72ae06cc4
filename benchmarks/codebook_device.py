"""The vocabulary on each device (codebook.device): faiss k-means and assignment on the CPU against the torch path
(retrieval/kmeans_torch.py) on CUDA, or on the CPU, side by side at equal iterations.

Input: codebook_speed.py's seeded features (a Gaussian mixture, rectified and L2-normalised like CNN local
features). Both k-means run ``--iterations`` Lloyd iterations from their own seeded starts (as the pipeline
runs them); the torch side is timed after a small warm-up run (CUDA context, cuBLAS handles). Quality: the
mean squared distance of the features to their nearest word, for each side's words. Assignment: the features
assigned to faiss's words by faiss (IndexFlatL2) and by torch on the device, their rates and the share of
features given the same word. Run from the repository root:

    python benchmarks/codebook_device.py --device cuda                      # a GPU machine: 1M x 512, 25k words
    python benchmarks/codebook_device.py --device cpu --n 200000 --dim 128 --k 1000   # torch on the CPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from codebook_speed import (
    SEED,
    busy,
    cpu_seconds,
    distortion,
    faiss_train,
    features,
    fmt_s,
    machine,
)

from instance_search.retrieval import kmeans_torch, vocabulary


def torch_train(x: np.ndarray, k: int, iterations: int, device: str):
    """(centroids, seconds, CPU seconds) of kmeans_torch.train on ``device``, after a warm-up on a slice."""
    kmeans_torch.train(x[: max(4 * k, 1024)], k, 1, SEED, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    c0, start = cpu_seconds(), time.perf_counter()
    centroids, _ = kmeans_torch.train(x, k, iterations, SEED, device)  # returns host arrays: synchronised
    return centroids, time.perf_counter() - start, cpu_seconds() - c0


def timed_assign(centroids: np.ndarray, x: np.ndarray, device: str) -> tuple[np.ndarray, float]:
    a = vocabulary.Assigner(centroids, device)
    a(x[:1024])  # warm-up
    start = time.perf_counter()
    words = a(x)
    return words, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the torch side runs")
    ap.add_argument("--n", type=int, default=1_000_000, help="features")
    ap.add_argument("--k", type=int, default=25_000, help="words")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--extrapolate", type=int, default=20, help="iterations the extrapolated times are for")
    ap.add_argument("--assign-n", type=int, default=None, help="features assigned (default: --n)")
    ap.add_argument("--eval-n", type=int, default=20_000, help="features the mean squared distance is measured on")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here; use --device cpu")
    n, k, dim, iters, device = args.n, args.k, args.dim, args.iterations, args.device
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    gflop = 2.0 * n * k * dim / 1e9
    print(f"machine: {machine()}")
    print(f"input: N={n:,} x D={dim} float32, k={k:,} words, {iters} iteration(s) "
          f"({gflop:,.0f} GFLOP of distance products per iteration)", flush=True)
    x = features(n, dim, SEED)
    x_eval = x[:: max(1, n // args.eval_n)][: args.eval_n]

    c0 = cpu_seconds()
    c_faiss, f_total, f_iter, _ = faiss_train(x, k, iters)
    f_cpu = cpu_seconds() - c0
    f_mean = float(np.mean(f_iter))
    f_dist = distortion(c_faiss, x_eval)
    print(f"faiss k-means (CPU):          {fmt_s(f_total)}, {f_mean:.2f} s per iteration, {gflop / f_mean:,.0f} GFLOP/s"
          f" ({busy(f_cpu, f_total)}); mean squared distance {f_dist:.5f}", flush=True)

    c_torch, t_total, t_cpu = torch_train(x, k, iters, device)
    t_mean = t_total / iters  # includes the seeded start and any copy of x to the device
    t_dist = distortion(c_torch, x_eval)
    peak = f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
    print(f"torch k-means ({gpu}): {fmt_s(t_total)}, {t_mean:.2f} s per iteration, {gflop / t_mean:,.0f} GFLOP/s"
          f" ({busy(t_cpu, t_total)}){peak}; mean squared distance {t_dist:.5f}", flush=True)
    print(f"  ratio faiss / torch: x{f_total / t_total:.2f} in total, x{f_mean / t_mean:.2f} per iteration; "
          f"{args.extrapolate} iterations: faiss {fmt_s(args.extrapolate * f_mean)}, torch "
          f"{fmt_s(args.extrapolate * t_mean)} (extrapolated)", flush=True)

    xa = x[: min(args.assign_n or n, n)]
    w_faiss, a_faiss = timed_assign(c_faiss, xa, "cpu")
    w_torch, a_torch = timed_assign(c_faiss, xa, device)
    print(f"assignment of {len(xa):,} features to faiss's words: faiss {fmt_s(a_faiss)} ({len(xa) / a_faiss:,.0f}/s), "
          f"torch {gpu} {fmt_s(a_torch)} ({len(xa) / a_torch:,.0f}/s): x{a_faiss / a_torch:.2f}; "
          f"same word for {100 * float(np.mean(w_faiss == w_torch)):.4f}% of the features")


if __name__ == "__main__":
    main()
