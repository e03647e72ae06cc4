"""Approximate nearest neighbours for gem: exact search against faiss HNSW, IVF-Flat and IVF-PQ (+ exact
re-scoring of the top candidates), on 100k and 1M database vectors. Run from the repository root:

    python benchmarks/ann_speed.py --quick     # 50k vectors, 100 queries, a few settings: ~1-2 minutes
    python benchmarks/ann_speed.py             # 100k and 1M, every setting: ~15 minutes on 2 cores

Data (printed with the results): the gem vectors (params.yaml's gem.extract, 1280-d) of the 500 real
UKBench photos of ../shared/data/ukbench-500 (extracted once by the pipeline's steps, as
query_latency.py does, cached in benchmarks/out/), projected on their top ``--dim`` (256) uncentred
principal directions (the rank-``dim`` approximation that best keeps their inner products: 1M x 1280
float32 would be 5 GB, twice with a copy in an index, on a machine shared with other jobs), then
replicated: each synthetic vector is a random mixture a u + (1 - a) v of two random real ones (a in
U(0, 1)) plus Gaussian noise drawn with the real vectors' covariance, scaled by U(0.25, 0.75),
L2-normalised. The database is the 500 real vectors plus
synthetic ones up to N; the queries are ``--queries`` more synthetic vectors (another seed), held out.

Measured, side by side and against exact search in the same run: recall@100 (the share of the exact
top 100 that the method returns in its top 100), latency one query at a time (median, p90) and batched
(all queries in one call, per query), build time (training + adding) and the index's bytes
(faiss.serialize_index; for the re-scored IVF-PQ, the compressed index without the full vectors, which
the pipeline holds anyway). Exact: numpy (BLAS) and faiss IndexFlatIP, same thread count. Seeds fixed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from instance_search import threads
from instance_search.retrieval import ann
from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / "out" / "ann_speed"
K = 100


def real_vectors(params: dict) -> np.ndarray:
    """The gem vectors of the 500 UKBench photos (L2-normalised, 1280-d), extracted once."""
    cached = CACHE / "ukbench500_gem.npy"
    if cached.is_file():
        return np.load(cached)
    from query_latency import ukbench_index  # the pipeline's steps, as that benchmark builds its index

    from instance_search.io import load_npz

    v = load_npz(ukbench_index("gem", params) / "index" / "vectors.npz")["vectors"].astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cached, v)
    return v


def make_data(real: np.ndarray, n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database (n, dim), queries (n_queries, dim)) float32, L2-normalised (the recipe: module docstring)."""
    _, _, vt = np.linalg.svd(real.astype(np.float64), full_matrices=False)
    basis = vt[:dim].T if dim < real.shape[1] else np.eye(real.shape[1])  # (1280, dim)
    proj = real.astype(np.float64) @ basis
    cov = np.cov(proj, rowvar=False)
    eig, vec = np.linalg.eigh(cov)
    colour = (vec * np.sqrt(np.maximum(eig, 0))).T       # z @ colour ~ N(0, cov)

    def synth(count: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((count, dim), np.float32)
        for s in range(0, count, 100_000):  # in chunks: the float64 temporaries stay small
            m = min(100_000, count - s)
            # a point on the segment between two real vectors: copies of 500 blobs would be an easy
            # clustered set (the k-means cells would be the blobs); mixtures fill the space between
            a = rng.uniform(0, 1, (m, 1))
            centre = a * proj[rng.integers(0, len(proj), m)] + (1 - a) * proj[rng.integers(0, len(proj), m)]
            noise = rng.standard_normal((m, dim)) @ colour
            x = centre + rng.uniform(0.25, 0.75, (m, 1)) * noise
            out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    real_p = (proj / np.linalg.norm(proj, axis=1, keepdims=True)).astype(np.float32)
    db = np.concatenate([real_p, synth(n - len(real_p), np.random.default_rng(seed))])
    return db, synth(n_queries, np.random.default_rng(seed + 1))


def exact_top(xb: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    """Top-k database indices by inner product (numpy BLAS product, argpartition, then sorted)."""
    out = np.empty((len(q), k), np.int64)
    for i in range(0, len(q), 16):  # 16 queries a product: a 1M-wide score matrix stays ~64 MB
        s = q[i:i + 16] @ xb.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        out[i:i + 16] = np.take_along_axis(top, order, axis=1)
    return out


def timed(search, q: np.ndarray) -> tuple[list[float], float, np.ndarray]:
    """(per-query seconds one at a time, batched seconds per query, batched results)."""
    search(q[:1])  # warm-up
    single = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        search(q[i:i + 1])
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    got = search(q)
    return single, (time.perf_counter() - t0) / len(q), got


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(g[:K], t)) / K for g, t in zip(got, truth)]))


def p90(v: list[float]) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(np.ceil(0.9 * len(v))) - 1)]


def build(kind: str, xb: np.ndarray, nlist: int, seed: int, train_n: int):
    """A faiss index of the database (inner product), and its build seconds and bytes."""
    import faiss

    d = xb.shape[1]
    t0 = time.perf_counter()
    if kind.startswith("HNSW"):
        m, ef_c = (int(v) for v in kind[4:].split("_"))
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_c
        index.add(xb)
        base = index
    else:
        spec = kind.replace("IVF", f"IVF{nlist}", 1)
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        sample = np.random.default_rng(seed).choice(len(xb), min(train_n, len(xb)), replace=False)
        index.train(xb[np.sort(sample)])
        index.add(xb)
        base = faiss.downcast_index(index.base_index) if "RFlat" in spec else index
    built = time.perf_counter() - t0
    return index, built, int(faiss.serialize_index(base).size)


def settings(kind: str, quick: bool) -> list[dict]:
    if kind.startswith("HNSW"):
        return [{"efSearch": e} for e in ((64, 128) if quick else (64, 128, 256))]
    probes = (16, 32) if quick else (8, 16, 32, 64)
    if "RFlat" in kind:
        return [{"nprobe": p, "k_factor_rf": f} for p in probes for f in ((4,) if quick else (2, 4, 8))]
    return [{"nprobe": p} for p in probes]


def pipeline(kind: str, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, args) -> list[tuple]:
    """The pipeline's own path (retrieval/ann.py: build, then search = candidates re-scored exactly and
    the whole database ranked), ``pipeline-pq<bytes>``, with gem.search.ann.candidates 1000."""
    import faiss

    pq = int(kind.split("pq")[1])
    t0 = time.perf_counter()
    data = ann.build(xb, {"kind": "ivf", "min_images": 1, "nlist": args.nlist, "pq": pq, "train": args.train})
    built = time.perf_counter() - t0
    index = ann.load(data)
    print(f"  {kind} (nlist {ann.nlist_for({'nlist': args.nlist, 'train': args.train}, len(xb))}): built in "
          f"{built:.1f} s, {data.size / 2**20:.0f} MiB", flush=True)
    rows = []
    for nprobe in ((16, 32) if args.quick else (8, 16, 32)):
        s = {"nprobe": nprobe, "candidates": 1000}
        single, batch, (ranks, _) = timed(lambda q: ann.search(index, q, xb, s, "cosine", 0.8), xq)
        name = f"IVF{faiss.extract_index_ivf(index).nlist},{'PQ' + str(pq) if pq else 'Flat'}"
        rows.append((f"pipeline: {name} + exact re-score",
                     f"nprobe {nprobe}, candidates 1000", recall(ranks, truth), single, batch, built, data.size))
    return rows


def run(n: int, args, real: np.ndarray) -> list[str]:
    import faiss

    xb, xq = make_data(real, n, args.queries, args.dim, args.seed)
    nlist = ann.nlist_for({"nlist": args.nlist, "train": args.train}, n)  # as the pipeline picks it
    truth = exact_top(xb, xq)
    rows = []
    single, batch, got = timed(lambda q: exact_top(xb, q), xq)
    rows.append(("exact (numpy)", "", 1.0, single, batch, 0.0, xb.nbytes))
    flat = faiss.IndexFlatIP(xb.shape[1])
    t0 = time.perf_counter()
    flat.add(xb)
    single, batch, (_, got) = timed(lambda q: flat.search(q, K), xq)
    rows.append(("exact (faiss IndexFlatIP)", "", recall(got, truth), single, batch, time.perf_counter() - t0,
                 xb.nbytes))
    del flat
    kinds = args.kinds or (["HNSW32_40", "IVF,Flat", "IVF,PQ64np,RFlat", "pipeline-pq0"] if args.quick else
                           ["HNSW32_40", "IVF,Flat", "IVF,PQ32np,RFlat", "IVF,PQ64np,RFlat", "pipeline-pq0"])
    ps = faiss.ParameterSpace()
    for kind in kinds:
        if kind.startswith("pipeline"):
            rows += pipeline(kind, xb, xq, truth, args)
            continue
        if kind.startswith("HNSW") and n > args.hnsw_max:
            print(f"  {kind}: skipped at {n:,} (--hnsw-max {args.hnsw_max:,}; build time: docs/benchmarks.md)",
                  flush=True)
            continue
        index, built, nbytes = build(kind, xb, nlist, args.seed, args.train)
        print(f"  {kind} (nlist {nlist}): built in {built:.1f} s, {nbytes / 2**20:.0f} MiB", flush=True)
        for s in settings(kind, args.quick):
            for key, value in s.items():
                ps.set_index_parameter(index, key, value)
            single, batch, (_, got) = timed(lambda q: index.search(q, K), xq)
            label = ", ".join(f"{k} {v}" for k, v in s.items())
            rows.append((kind.replace("IVF", f"IVF{nlist}", 1), label, recall(got, truth), single, batch, built,
                         nbytes))
        del index
    base = statistics.median(rows[0][3])
    out = [f"N = {n:,} database vectors ({args.dim}-d), {args.queries} queries, top {K}, {args.threads} threads",
           f"| index | search setting | recall@{K} | one query median / p90 (ms) | speed-up (median) | "
           f"batched (ms/query) | build (s) | index MiB |",
           "|---|---|---|---|---|---|---|---|"]
    for name, label, r, single, batch, built, nbytes in rows:
        out.append(f"| {name} | {label} | {r:.3f} | {statistics.median(single) * 1e3:.2f} / {p90(single) * 1e3:.2f} | "
                   f"{base / statistics.median(single):.1f}x | {batch * 1e3:.3f} | {built:.1f} | "
                   f"{nbytes / 2**20:.0f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50k vectors, 100 queries, fewer settings")
    ap.add_argument("--sizes", type=int, nargs="+", help="database sizes (default 100000 1000000; quick: 100000)")
    ap.add_argument("--kinds", nargs="+", help="pipeline-pq<bytes> (retrieval/ann.py as gem searches), "
                                               "faiss indexes: HNSW<M>_<efConstruction> or factory strings "
                                               "with a bare IVF (nlist filled in), e.g. IVF,PQ32np,RFlat (np: no "
                                               "polysemous training, minutes no search here uses)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=0, help="0: ~4 sqrt(N), at most train/39 (as the pipeline)")
    ap.add_argument("--train", type=int, default=100_000, help="vectors the IVF k-means trains on")
    ap.add_argument("--hnsw-max", type=int, default=200_000, help="largest N HNSW is built for (slow to build)")
    ap.add_argument("--threads", type=int, default=threads.available())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = args.sizes or ([50_000] if args.quick else [100_000, 1_000_000])
    if args.quick:  # about a minute on 2 cores: fewer queries, a smaller training sample
        args.queries, args.train = min(args.queries, 100), min(args.train, 50_000)
    threads.apply(args.threads)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    import faiss

    print(f"# {hardware()}; faiss {faiss.__version__}, numpy {np.__version__}")
    real = real_vectors(params)
    space = (f"top {args.dim} uncentred principal directions" if args.dim < real.shape[1] else
             "as extracted")
    print(f"# data: {len(real)} real gem vectors (ukbench-500, {real.shape[1]}-d) -> {space}, replicated as "
          f"mixtures of two + the real covariance's noise (scale U(0.25, 0.75)), L2; queries held out; "
          f"seed {args.seed}", flush=True)
    for n in sizes:
        t0 = time.perf_counter()
        lines = run(n, args, real)
        print("\n".join(lines) + f"\n({time.perf_counter() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
