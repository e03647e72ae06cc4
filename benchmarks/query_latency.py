"""Latency of one interactive query: from the HTTP request to the JSON answer, split into feature
extraction, first-stage ranking, window re-ranking and query expansion (as params say: none for
sift), with each index loaded once at start-up.

Indexes: the embedded benchmark's (``results/synthetic/sift``, from ``make demo``) and ukbench500's
(500 real photos of ../shared/data/ukbench-500). A ukbench500 index that the pipeline has not built
(``results/ukbench500/<method>``) is built once by the pipeline's step functions (``steps.extract``,
``steps.learn``, ``steps.encode``) into ``benchmarks/out/query_latency/`` and reused. Queries: the
datasets' own (image + box; UKBench's box is the whole image), sent through the web app's API
(Flask's test client: no network in the way) with the params file's search, re-ranking and expansion
settings.
Run from the repository root:

    python benchmarks/query_latency.py                         # sift on both datasets
    python benchmarks/query_latency.py --methods sift blcf     # also blcf (mobilenet_v2) on ukbench500
    python benchmarks/query_latency.py --index results/oxford5k/sift --queries 10
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from instance_search.pipeline import steps
from instance_search.config import load_params, schema_path
from instance_search.datasets.prepare import prepare
from instance_search.index import load_index
from instance_search.web.app import create_app
from machine import cpu_model  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"
CACHE = REPO / "benchmarks" / "out" / "query_latency"
PARTS = ("extract", "rank", "rerank", "expand", "answer")


def machine() -> str:
    import cv2
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
            f"torch {torch.__version__} ({'CUDA' if torch.cuda.is_available() else 'no GPU'})")


def built(index: Path) -> bool:
    """Whether an index folder (features/, model.npz, index/) is finished."""
    return (index / "index" / "manifest.json").is_file()


def ukbench_index(method: str, params: dict) -> Path:
    """results/ukbench500/<method> if the pipeline built it, else one built here once (minutes)."""
    pipeline = REPO / "results" / "ukbench500" / method
    if built(pipeline):
        return pipeline
    out = CACHE / "ukbench500"
    index = out / method
    if built(index):
        return index
    if not (UKBENCH / "jpg").is_dir():
        raise SystemExit(f"{UKBENCH}: missing; the ukbench500 index needs ../shared/data/ukbench-500")
    params = copy.deepcopy(params)
    cfg = params["datasets"]["ukbench500"]
    cfg["images"], cfg["groundtruth"] = str(UKBENCH / "jpg"), str(UKBENCH / "groundtruth.csv")
    gnd = out / "gnd.json"
    print(f"building the ukbench500 {method} index in {index} (once) ...", flush=True)
    start = time.perf_counter()
    if not gnd.is_file():
        prepare(params, "ukbench500", gnd)
    steps.extract(params, "ukbench500", method, gnd, index / "features")
    steps.codebook(params, method, gnd, index / "features", index / "model.npz")
    steps.encode(params, "ukbench500", method, gnd, index / "features", index / "model.npz", index / "index")
    print(f"  built in {time.perf_counter() - start:.0f} s", flush=True)
    return index


def measure(index_dir: Path, params: dict, params_file: Path, n_queries: int, similarity: str,
            torch_threads: int = 0) -> dict:
    start = time.perf_counter()
    index = load_index(index_dir)
    load_s = time.perf_counter() - start
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    # its (unused) upload folder is a temporary one
    client = create_app([index], params=params, params_source=str(params_file)).test_client()
    queries = index.gnd.queries
    picked = [queries[round(k)] for k in np.linspace(0, len(queries) - 1, min(n_queries, len(queries)))]
    rows, first = [], None
    for k, q in enumerate([picked[0]] + picked):  # the first run warms caches (faiss, torch, OpenCV) and is kept apart
        t0 = time.perf_counter()
        r = client.post("/api/query", json={"image": {"id": q.image}, "box": list(q.box), "similarity": similarity,
                                            "results": 20})
        total = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"{index_dir}: query {q.name} failed: {r.get_json()}")
        t = r.get_json()["timings"]
        row = {"extract": t["extract"], "rank": t["rank"], "rerank": t["rerank"], "expand": t.get("expand", 0.0)}
        row.update(answer=total - sum(row.values()), total=total, reranked=r.get_json()["reranked"])
        if k == 0:
            first = row
            if torch_threads:  # the first query loaded the extractor, which may set its own thread count
                torch.set_num_threads(torch_threads)
        else:
            rows.append(row)
    maps = getattr(index.db, "maps", None)  # bags of words: their features and words; other methods have none
    return {"index": str(index_dir), "name": index.name, "n_database": index.n_database,
            "vocabulary": getattr(index.db, "vocabulary", None),
            "features": None if maps is None else int(len(maps.words)), "load_s": load_s,
            "similarity": similarity, "torch_threads": torch.get_num_threads(), "queries": len(rows), "reranked": rows[0]["reranked"], "first_query": first,
            "rows": rows}


def summary(result: dict) -> list[str]:
    def stat(key: str) -> str:
        v = sorted(r[key] for r in result["rows"])
        p90 = v[min(len(v) - 1, int(np.ceil(0.9 * len(v))) - 1)]
        return f"{statistics.median(v) * 1e3:7.0f} {p90 * 1e3:7.0f} {v[-1] * 1e3:7.0f}"

    words = (f", {result['features']:,} features, {result['vocabulary']} words" if result["features"] is not None
             else "")
    lines = [f"{result['name']} ({result['index']}): {result['n_database']} images{words}; "
             f"index loaded in {result['load_s']:.2f} s; "
             f"{result['queries']} queries, {result['similarity']}, top {result['reranked']} re-ranked, "
             f"{result['torch_threads']} torch threads; "
             f"first query {result['first_query']['total'] * 1e3:.0f} ms",
             f"  {'ms':<10} {'median':>7} {'p90':>7} {'max':>7}"]
    lines += [f"  {key:<10} {stat(key)}" for key in PARTS + ("total",)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", default=None,
                    help="an index folder (repeat); default: results/synthetic/sift and ukbench500 of --methods")
    ap.add_argument("--methods", nargs="+", default=["sift"],
                    help="ukbench500 indexes to measure (sift, blcf, frcnn, gem, xfeat)")
    ap.add_argument("--queries", type=int, default=20, help="queries per index (default 20)")
    ap.add_argument("--similarity", default="cosine", choices=["cosine", "weighted_cosine"])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch threads for CNN features (default: as the index's CNN extractor sets them when the "
                         "first query loads it: half the cores)")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    params_file = Path(args.params)
    params = load_params(params_file, schema_path(params_file))

    indexes = [Path(p) for p in args.index] if args.index else []
    if not args.index:
        demo = REPO / "results" / "synthetic" / "sift"
        if built(demo):
            indexes.append(demo)
        else:
            print(f"{demo}: not built (make demo); skipped")
        indexes += [ukbench_index(m, params) for m in args.methods]

    print(f"machine: {machine()}")
    # other work on the machine slows every step (and torch's threads the most): say how busy it was
    print("load average at start: " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    results = []
    for index_dir in indexes:
        result = measure(index_dir, params, params_file, args.queries, args.similarity, args.torch_threads)
        result["load_average"] = os.getloadavg()[0]
        results.append(result)
        print("\n".join(summary(result)) + f"\n  load average after: {result['load_average']:.1f}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
