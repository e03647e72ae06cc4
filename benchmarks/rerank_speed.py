"""Speed of sliding-window re-ranking: the fast scorer against the re-counting oracle, then full rerank.

Synthetic but realistic input: K = 1000 words with a Zipf-like frequency, 640x480 images with 1500
keypoints (a third of them in a few bursts, as on textured objects), tf-idf weights, queries of
~200 words, the default window parameters of params.yaml. Run from the repository root:

    python benchmarks/rerank_speed.py            # about a minute
    python benchmarks/rerank_speed.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from instance_search.retrieval import windows as rr
from instance_search.retrieval.geometry import cell_windows, grid_size
from instance_search.retrieval.similarity import SIMILARITIES

K, WIDTH, HEIGHT, N_FEATURES, QUERY_WORDS = 1000, 640, 480, 1500, 200
PARAMS = dict(cell=16, scales=[0.2, 0.3, 0.45, 0.65, 0.85, 1.0], aspect_ratios=[0.5, 1.0, 2.0], stride=0.25)


def make_map(rng: np.random.Generator, p_words: np.ndarray):
    n_burst = N_FEATURES // 3
    centres = rng.uniform([0, 0], [WIDTH, HEIGHT], (5, 2))
    burst = centres[rng.integers(0, 5, n_burst)] + rng.normal(0, 25, (n_burst, 2))
    spread = rng.uniform([0, 0], [WIDTH, HEIGHT], (N_FEATURES - n_burst, 2))
    xy = np.clip(np.concatenate([burst, spread]), 0, [WIDTH - 1e-3, HEIGHT - 1e-3]).astype(np.float32)
    words = rng.choice(K, N_FEATURES, p=p_words).astype(np.int32)
    return xy, words, WIDTH, HEIGHT


def make_query(rng: np.random.Generator, p_words: np.ndarray, idf: np.ndarray):
    words = np.unique(rng.choice(K, QUERY_WORDS, replace=False, p=p_words))
    return words, rng.integers(1, 4, len(words)) * idf[words]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = ap.parse_args()
    n_side, n_db, n_queries = (3, 60, 3) if args.quick else (30, 1000, 20)

    rng = np.random.default_rng(0)
    p_words = 1.0 / np.arange(1, K + 1) ** 0.8
    p_words /= p_words.sum()
    idf = rng.uniform(0.5, 5.0, K).astype(np.float32)
    maps = [make_map(rng, p_words) for _ in range(n_db)]
    queries = [make_query(rng, p_words, idf) for _ in range(n_queries)]
    gw, gh = grid_size(WIDTH, HEIGHT, PARAMS["cell"])
    windows = cell_windows(gw, gh, PARAMS["scales"], PARAMS["aspect_ratios"], PARAMS["stride"])

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    print(f"input: K={K}, {WIDTH}x{HEIGHT} images, {N_FEATURES} features, ~{QUERY_WORDS}-word queries, "
          f"{len(windows)} windows per image (cell {PARAMS['cell']})")

    q_idx, q_val = queries[0]
    oracle_per_pair = {}
    for similarity in SIMILARITIES:
        kw = dict(windows=windows, cell=PARAMS["cell"], similarity=similarity, alpha=0.8)
        fast, t_fast = timed(lambda: [rr.score_windows(*m, q_idx, q_val, idf, **kw) for m in maps[:n_side]])
        slow, t_slow = timed(lambda: [rr.score_windows_recount(*m, q_idx, q_val, idf, **kw) for m in maps[:n_side]])
        diff = max(np.abs(a - b).max() for a, b in zip(fast, slow))
        n_win = n_side * len(windows)
        oracle_per_pair[similarity] = t_slow / n_side
        print(f"{similarity:>15}: fast {n_win / t_fast:12,.0f} windows/s ({t_fast / n_side * 1e3:6.2f} ms/image)"
              f" | oracle {n_win / t_slow:10,.0f} windows/s ({t_slow / n_side * 1e3:6.1f} ms/image)"
              f" | x{t_slow / t_fast:.0f} | max |diff| {diff:.1e}")

    # Full rerank. First stages share popular images (as real ones do), so lists overlap.
    popularity = rng.uniform(0, 1, n_db)
    first_ranks = np.stack([np.argsort(-(popularity + rng.uniform(0, 1, n_db)), kind="stable")
                            for _ in range(n_queries)])
    first_scores = np.sort(rng.uniform(0, 1, first_ranks.shape), axis=1)[:, ::-1]
    top = min(100, n_db)
    images = len(np.unique(first_ranks[:, :top]))
    print(f"rerank: {n_queries} queries x top {top}, {images} distinct images among {n_db}")
    for similarity in SIMILARITIES:
        kw = dict(top=top, similarity=similarity, alpha=0.8, **PARAMS)
        _, t_all = timed(lambda: rr.rerank(first_ranks, first_scores, queries, maps.__getitem__, idf, **kw))
        _, t_one = timed(lambda: [rr.rerank(first_ranks[j:j + 1], first_scores[j:j + 1], queries[j:j + 1],
                                            maps.__getitem__, idf, **kw) for j in range(n_queries)])
        # The oracle has nothing to share between queries: its cost is per (query, image) pair.
        t_oracle = oracle_per_pair[similarity] * n_queries * top
        print(f"{similarity:>15}: all queries at once {t_all:.2f} s ({t_all / (n_queries * top) * 1e3:.2f} ms per"
              f" query x image) | one query at a time {t_one:.2f} s ({t_one / (n_queries * top) * 1e3:.2f} ms)"
              f" | oracle (estimated from the per-image time) {t_oracle:.0f} s: x{t_oracle / t_all:.0f}")


if __name__ == "__main__":
    main()
