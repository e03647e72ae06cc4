"""What compute.threads buys: blcf extraction (images/s) and k-means (iterations/s) at 1 thread vs all
cores, side by side, and whether the two counts give the same bytes.

Each measurement runs in its own process that first calls ``instance_search.threads.apply(n)``, as
every compute step does. Extraction: ``features.cnn.extract_images`` on real photos of
../shared/data/ukbench-500 with params.yaml's blcf settings (max_side, batch_size, workers,
backbone, layer). k-means: ``retrieval.vocabulary.train`` (faiss) on a seeded sample of those
features' whitened rows, with params.yaml's words and PCA dimension. The counts are interleaved
round by round (order reversed every other round) so a drifting load hits both; figures are
medians, the ratio the median of the per-round ratios. Run from the repository root:

    python benchmarks/threads_speed.py                 # 40 images, 3 rounds: a few minutes on 2 cores
    python benchmarks/threads_speed.py --images 16 --rounds 1 --threads 1 4 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"


def measure(n: int, images: int) -> dict:
    """One process, n threads: extraction images/s, k-means iterations/s, digests of both results."""
    import numpy as np
    import yaml
    from PIL import Image

    from instance_search import threads
    from instance_search.features.cnn import Extractor, extract_images
    from instance_search.retrieval import linalg, vocabulary

    threads.apply(n)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    ex, cb = params["blcf"]["extract"], params["blcf"]["codebook"]
    paths = [str(p) for p in sorted(UKBENCH.glob("*.jpg"))[:images]]
    dims = [Image.open(p).size for p in paths]
    extractor = Extractor(ex["backbone"], ex["layer"], "cpu", False)
    extract_images(extractor, paths[:2], dims[:2], max_side=ex["max_side"], batch_size=ex["batch_size"], workers=0)
    t0 = time.perf_counter()
    feats = extract_images(extractor, paths, dims, max_side=ex["max_side"], batch_size=ex["batch_size"],
                           workers=ex["workers"])
    t_extract = time.perf_counter() - t0
    x = np.concatenate([f[1] for f in feats]).astype(np.float32)
    rng = np.random.default_rng(0)
    x = x[np.sort(rng.choice(len(x), size=min(len(x), 100_000), replace=False))]
    xw = linalg.whiten(x, linalg.fit_whitening(x, min(cb["pca_dim"], x.shape[1])))
    iterations = 10
    t0 = time.perf_counter()
    centroids = vocabulary.train(xw, cb["words"], iterations, seed=0)
    t_kmeans = time.perf_counter() - t0
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]  # noqa: E731
    return {"threads": n, "in_use": threads.in_use(), "images_per_s": images / t_extract,
            "kmeans_iter_per_s": iterations / t_kmeans, "features": len(x), "dim": xw.shape[1],
            "words": cb["words"], "features_sha": digest(np.concatenate([f[1] for f in feats])),
            "centroids_sha": digest(centroids)}


def main() -> int:
    from instance_search import threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="counts to compare (default: 1 and all)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.images)))
        return 0
    if not UKBENCH.is_dir():
        sys.exit(f"error: {UKBENCH} not found: the benchmark reads ../shared/data/ukbench-500")
    counts = args.threads or sorted({1, threads.available()})
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for r in range(args.rounds):
        for n in counts if r % 2 == 0 else counts[::-1]:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--images", str(args.images)],
                                 capture_output=True, text=True, check=True).stdout
            runs[n].append(json.loads(out.strip().splitlines()[-1]))
    from machine import hardware  # benchmarks/machine.py, beside this script

    base = counts[0]
    first = runs[base][0]
    print(f"# {hardware()}; {args.images} UKBench photos, blcf as params.yaml; k-means: {first['words']} words on "
          f"{first['features']} whitened {first['dim']}-d features, 10 iterations; median of {args.rounds} rounds")
    print(f"{'threads':>7} {'images/s':>9} {'x':>6} {'k-means it/s':>13} {'x':>6}  libraries report   features  centroids")
    for n in counts:
        ips = statistics.median(m["images_per_s"] for m in runs[n])
        kps = statistics.median(m["kmeans_iter_per_s"] for m in runs[n])
        rx = statistics.median(a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[n], runs[base]))
        rk = statistics.median(a["kmeans_iter_per_s"] / b["kmeans_iter_per_s"] for a, b in zip(runs[n], runs[base]))
        m = runs[n][0]
        print(f"{n:>7} {ips:>9.2f} {rx:>6.2f} {kps:>13.2f} {rk:>6.2f}  {json.dumps(m['in_use'])}  "
              f"{m['features_sha']}  {m['centroids_sha']}")
    same = {k: len({m[k] for n in counts for m in runs[n]}) == 1 for k in ("features_sha", "centroids_sha")}
    print(f"# same bytes at every count: features {same['features_sha']}, centroids {same['centroids_sha']} "
          "(each count is reproducible; see params.yaml compute.threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
