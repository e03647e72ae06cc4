"""Local matching, measured so that settings chosen on one half of the objects are reported on the other.

For each bag-of-words method asked (sift, blcf, xfeat) on ukbench-500 (../shared/data/ukbench-500,
each image a whole-image query) and on the embedded benchmark (the demo's data/synthetic, box queries):

1. the first stage of both aggregations, tf-idf bag of words and ASMK* (cosine);
2. spatial verification of each query's top ``--candidates`` under each Hamming check (``hamming``),
   run once; its scores (inliers or significance, each weight, min_inliers) then recombined with the
   first stage offline, so a grid of settings costs one verification pass;
3. per setting, N-S and mAP on half A (ukbench objects 0-62) and half B (63-124), and the demo's mAP;
   the inlier counts of positives and negatives in the verified top (median, 99th percentile).

Settings are chosen on half A (the demo and half B are reported, never used to choose). Run from the
repository root after ``make demo`` (the demo's data):

    python benchmarks/local_matching.py --out build/local-matching --methods sift

Indexes are built under --out with params.yaml (blcf at 340 px on ukbench-500, as tests/test_realdata.py) and
reused.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from instance_search import evaluate, threads
from instance_search.pipeline import steps
from instance_search.datasets.prepare import prepare
from instance_search.engine import retrieve
from instance_search.index import open_index
from instance_search.retrieval import verification

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"
HAMMING = (1.0, 0.4, 0.35, 0.3, 0.25)
WEIGHTS = {"inliers": (0.005, 0.01, 0.015, 0.02, 0.04), "significance": (0.002, 0.005, 0.01, 0.02, 0.04, 0.1)}
MIN_INLIERS = (0, 6, 7, 10)


def build(params: dict, dataset: str, method: str, out: Path) -> tuple[Path, Path]:
    d = out / dataset / method
    gnd = out / dataset / "gnd.json"
    if not gnd.is_file():
        prepare(params, dataset, gnd)
    if not (d / "features").is_dir():
        steps.extract(params, "ukbench500", method, gnd, d / "features")
    if not (d / "model.npz").is_file():
        steps.codebook(params, method, gnd, d / "features", d / "model.npz")
    if not (d / "index" / "asmk.npz").is_file():
        steps.encode(params, "ukbench500", method, gnd, d / "features", d / "model.npz", d / "index")
    return gnd, d / "index"


def halves(gnd, dataset: str) -> dict[str, np.ndarray]:
    if dataset != "ukbench500":
        return {"all": np.ones(len(gnd.queries), bool)}
    objects = np.array([int(q.name.removeprefix("ukbench").split(".")[0]) // 4 for q in gnd.queries])
    return {"A": objects < 63, "B": objects >= 63}


def scores_of(gnd, ranks: np.ndarray, settings: dict, masks: dict) -> dict:
    table = evaluate.evaluate_rankings(gnd, ranks, seed_top=int(settings["seed_top"]),
                                       seed_max_hits=int(settings["seed_max_hits"]))
    ap, ns = table["ap"].to_numpy(float), table["ns4"].to_numpy(float)
    return {h: {"mAP": round(float(ap[m].mean()), 4), "N-S": round(float(ns[m].mean()), 3)} for h, m in masks.items()}


def verify_top(ix, queries, first, sv: dict, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(inliers, significance) (nq, t) of each query's first-stage top t."""
    settings = {k: sv[k] for k in verification.KEYS}
    inl, sig = np.zeros((len(queries), t)), np.zeros((len(queries), t))
    for j, (xy, words, bits, box) in enumerate(queries.extra["points"]):
        cands = [ix.db.maps.features(int(i)) for i in first.ranks[j, :t]]
        got = verification.verify_many(xy, words, box, cands, workers=threads.applied() or 1, seed=sv["seed"],
                                       q_bits=bits, **settings)
        inl[j] = [v.inliers for v in got]
        sig[j] = [v.significance for v in got]
    return inl, sig


def reranked(first, added: np.ndarray) -> np.ndarray:
    t = added.shape[1]
    local = first.scores[:, :t] + added
    order = np.argsort(-local, axis=1, kind="stable")
    ranks = np.asarray(first.ranks).copy()
    ranks[:, :t] = np.take_along_axis(ranks[:, :t], order, axis=1)
    return ranks


def stats(gnd, first, values: np.ndarray, masks: dict) -> dict:
    """Median and 99th percentile of ``values`` (nq, t) over the positives and the negatives of the
    verified top, over all queries and over each half's."""
    pos = np.zeros(values.shape, bool)
    for j, q in enumerate(gnd.queries):
        pos[j] = np.isin(first.ranks[j, :values.shape[1]], q.positives)
    out = {}
    for half, rows in {"all": np.ones(len(values), bool), **masks}.items():
        for name, m in (("positives", pos), ("negatives", ~pos)):
            v = values[m & rows[:, None]]
            entry = {"median": float(np.median(v)) if len(v) else None,
                     "p99": float(np.percentile(v, 99)) if len(v) else None, "n": int(len(v))}
            if half == "all":
                out[name] = entry
            else:
                out.setdefault("halves", {}).setdefault(half, {})[name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--methods", nargs="+", default=["sift"])
    ap.add_argument("--datasets", nargs="+", default=["ukbench500", "synthetic"])
    ap.add_argument("--candidates", type=int, default=0, help="verified a query (0: rerank.candidates; "
                    "ukbench500: 20, its 3 positives lie near the top)")
    ap.add_argument("--hamming", type=float, nargs="+", default=list(HAMMING), help="Hamming checks tried")
    ap.add_argument("--cap", type=int, default=0, help="rerank.sv.cap (0: the params')")
    ap.add_argument("--threads", default="all")
    args = ap.parse_args(argv)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cfg = params["datasets"]["ukbench500"]
    cfg["images"], cfg["groundtruth"] = str(UKBENCH / "jpg"), str(UKBENCH / "groundtruth.csv")
    threads.apply(threads.resolve(int(args.threads) if args.threads.isdigit() else args.threads))
    path = args.out / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}  # earlier runs' datasets and methods kept
    real = copy.deepcopy(params)  # ukbench-500: blcf at the real-photo test's size (the demo's 640 suits its
    real["blcf"]["extract"]["max_side"] = 340  # small objects)
    for dataset, method in itertools.product(args.datasets, args.methods):
        started = time.perf_counter()
        gnd_path, index = build(real if dataset == "ukbench500" else params, dataset, method, args.out)
        built = time.perf_counter() - started
        ix = open_index(index, gnd_path)
        queries = ix.benchmark_queries()
        masks = halves(ix.gnd, dataset)
        p = params[method]
        t = args.candidates or (20 if dataset == "ukbench500" else p["rerank"]["candidates"])
        key = f"{dataset}/{method}" + (f"/cap{args.cap}" if args.cap else "")
        report.setdefault(key, {}).update({"index_s": round(built, 1), "candidates": t,
                                           "cap": args.cap or p["rerank"]["sv"]["cap"]})
        print(f"== {key}: index {built:.0f} s, {len(queries)} queries, top {t} verified", flush=True)
        for aggregation in ("bow", "asmk"):
            run = copy.deepcopy(params)
            run[method]["search"]["aggregation"] = aggregation
            tic = time.perf_counter()
            first = retrieve(ix, queries, run, "cosine", until="first_stage")["first_stage"]
            search_s = (time.perf_counter() - tic) / max(1, len(queries))
            base = scores_of(ix.gnd, np.asarray(first.ranks), params["evaluate"], masks)
            res = report[key].setdefault(aggregation, {"sv": {}})  # another run's Hamming checks kept
            res.update({"first_stage": base, "search_s_per_query": round(search_s, 4)})
            print(f"{aggregation} first stage {base}  ({search_s * 1000:.1f} ms a query)", flush=True)
            win = copy.deepcopy(run)
            win[method]["rerank"]["mode"] = "window"
            win[method]["rerank"]["candidates"] = t
            got = retrieve(ix, queries, win, "cosine", until="rerank", start=("first_stage", first))["rerank"]
            res["window"] = scores_of(ix.gnd, np.asarray(got.ranks), params["evaluate"], masks)
            print(f"{aggregation} window {res['window']}", flush=True)
            for hamming in args.hamming:
                sv = {**p["rerank"]["sv"], "hamming": hamming, "cap": args.cap or p["rerank"]["sv"]["cap"]}
                tic = time.perf_counter()
                inl, sig = verify_top(ix, queries, first, sv, t)
                elapsed = time.perf_counter() - tic
                cell = res["sv"][str(hamming)] = {"verify_s": round(elapsed, 1), "inliers": stats(ix.gnd, first, inl, masks),
                                                  "significance": stats(ix.gnd, first, sig, masks), "grid": []}
                print(f"{aggregation} hamming {hamming}: {elapsed:.0f} s; inliers {cell['inliers']}; "
                      f"significance {cell['significance']}", flush=True)
                for score, min_inliers in itertools.product(("inliers", "significance"), MIN_INLIERS):
                    values = np.where(inl >= min_inliers, inl if score == "inliers" else sig, 0.0)
                    for weight in WEIGHTS[score]:
                        m = scores_of(ix.gnd, reranked(first, weight * values), params["evaluate"], masks)
                        cell["grid"].append({"score": score, "min_inliers": min_inliers, "weight": weight, **m})
        path.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
