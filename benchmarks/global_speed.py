"""Speed of the newer re-ranking and descriptor steps: spatial verification of 100 candidates, diffusion
on 8,000 images, GeM extraction images/s. Run from the repository root:

    python benchmarks/global_speed.py            # about a minute on 2 cores
    python benchmarks/global_speed.py --images 8 --database 2000

- sv: one query of 1,500 features (1,000 words) against 100 candidates of 1,500 features, one of which
  holds 300 of the query's features under a known affine map (the others: random positions), with
  params.yaml's sift.rerank.sv settings, on 1 worker and on all cores; the planted candidate's inliers.
- diffusion: the mutual k-NN graph of N random L2-normalised 1280-d vectors (gem's dimension) with
  params.yaml's gem.rerank.diffusion settings, then 50 queries ranked.
- gem: features.gem.describe on real UKBench photos with params.yaml's gem.extract (scales, p) at
  max_side 340, on the CPU (or CUDA when present).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

from instance_search import threads
from instance_search.retrieval import diffusion, verification
from instance_search.retrieval.linalg import l2
from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"


def sv(params: dict, workers: int) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    n, k = 1500, 1000
    q_xy, q_w = rng.uniform(0, 640, (n, 2)), rng.integers(0, k, n)
    a = np.array([[0.9, -0.1, 40.0], [0.1, 0.9, 20.0]])
    cands = []
    for c in range(100):
        xy, w = rng.uniform(0, 640, (n, 2)), rng.integers(0, k, n)
        if c == 37:
            xy[:300] = q_xy[:300] @ a[:, :2].T + a[:, 2]
            w[:300] = q_w[:300]
        cands.append((xy, w))
    s = params["sift"]["rerank"]["sv"]
    settings = {key: s[key] for key in verification.KEYS}
    t0 = time.perf_counter()
    got = verification.verify_many(q_xy, q_w, (0, 0, 640, 480), cands, workers=workers, seed=s["seed"], **settings)
    return time.perf_counter() - t0, got[37].inliers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", type=int, default=8000)
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cores = threads.available()
    print(f"# {hardware()}")
    for n in sorted({1, cores}):
        threads.apply(n)
        dt, inliers = sv(params, n)
        print(f"sv: 1 query x 100 candidates, {n} worker(s): {dt:.2f} s ({dt * 10:.1f} ms a candidate); "
              f"the planted candidate: {inliers} inliers of 300")
    threads.apply(cores)
    d = params["gem"]["rerank"]["diffusion"]
    x = l2(np.random.default_rng(1).standard_normal((args.database, 1280)))
    t0 = time.perf_counter()
    graph = diffusion.Diffusion(x, d["k"], d["gamma"], d["alpha"])
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph.rank(x[:50] + 0.05 * np.random.default_rng(2).standard_normal((50, 1280)), d["query_k"], d["iterations"], d["tol"])
    print(f"diffusion: graph of {args.database} images (k={d['k']}): {built:.1f} s; 50 queries ranked: "
          f"{time.perf_counter() - t0:.2f} s")
    if not UKBENCH.is_dir():
        print(f"gem: skipped, {UKBENCH} is missing")
        return
    from instance_search.features import gem
    from instance_search.features.cnn import Extractor

    g = params["gem"]["extract"]
    ex = Extractor(g["backbone"], g["layer"] or None, "auto", g["half"])
    paths = [str(p) for p in sorted(UKBENCH.glob("*.jpg"))[:args.images]]
    gem.describe(ex, paths[:2], [None, None], scales=g["scales"], p=g["p"], max_side=340, workers=0)  # warm-up
    t0 = time.perf_counter()
    gem.describe(ex, paths, [None] * len(paths), scales=g["scales"], p=g["p"], max_side=340, workers=g["workers"])
    dt = time.perf_counter() - t0
    print(f"gem: {len(paths)} UKBench photos at 340 px, scales {g['scales']}, on {ex.device}: "
          f"{len(paths) / dt:.1f} images/s")


if __name__ == "__main__":
    main()
