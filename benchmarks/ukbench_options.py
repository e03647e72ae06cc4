"""The second-stage options table on the 500 real UKBench photos (README, "Real photographs").

Runs the pipeline's step functions (prepare, extract, codebook, encode, rank, options, the options
table) on ../shared/data/ukbench-500 for each method asked, with params.yaml and the input sizes of
tests/test_realdata.py (blcf 340 px, gem one scale at 480 px), the cosine similarity, and writes
<out>/options_cosine.{md,csv}. Every image is a whole-image query. Run from the repository root:

    python benchmarks/ukbench_options.py --out /tmp/ukbench-options                 # sift blcf gem
    python benchmarks/ukbench_options.py --out /tmp/ukbench-options --methods frcnn  # ~5 min more here

``--gem-settings``: gem's second stages (alpha-QE, alpha-DBA, k-reciprocal, diffusion) over a grid of
settings, each scored on UKBench's objects 0-62 and 63-124 apart (pick a setting on the first half,
report it on the second), written to <out>/gem_settings.md. ``--dataset synthetic`` runs the same on
the embedded benchmark (generated under --out; no halves, and gem at params.yaml's sizes):

    python benchmarks/ukbench_options.py --out /tmp/ukbench-options --methods gem --gem-settings
    python benchmarks/ukbench_options.py --out /tmp/demo-options --dataset synthetic --methods gem --gem-settings

A method's folder under --out is reused when its index is there (delete it to start again).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from instance_search import evaluate, report, threads
from instance_search.engine import retrieve
from instance_search.index import open_index
from instance_search.pipeline import steps
from instance_search.pipeline.search import _merged
from instance_search.datasets.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"
sys.path.insert(0, str(REPO / "tests"))
from test_realdata import GEM_EXTRACT  # noqa: E402  the real-photo test's sizes, kept in one place


# gem's settings compared by --gem-settings: name -> override of params.yaml's gem section
_NONE = {"rerank": {"mode": "none"}, "expand": {"mode": "none"}}


def _dba(k: int, alpha: float = 3) -> dict:
    return {"search": {"augment": "dba", "dba": {"k": k, "alpha": alpha}}}


def _kr(k1: int, k2: int, lam: float) -> dict:
    return {"rerank": {"mode": "kreciprocal", "kreciprocal": {"k1": k1, "k2": k2, "lambda": lam}},
            "expand": {"mode": "none"}}


GEM_SETTINGS = {
    "first stage": _NONE,
    "aqe (n 2)": {"rerank": {"mode": "none"}, "expand": {"mode": "aqe"}},
    "diffusion": {"rerank": {"mode": "diffusion"}, "expand": {"mode": "none"}},
    **{f"dba k {k}, alpha {a}": _merged(_NONE, _dba(k, a)) for k, a in
       [(1, 3), (2, 3), (3, 3), (5, 3), (10, 3), (20, 3), (2, 0), (2, 1), (3, 0), (10, 0)]},
    **{f"dba k {k} + aqe": _merged(_dba(k), {"rerank": {"mode": "none"}, "expand": {"mode": "aqe"}})
       for k in (2, 3, 5, 10)},
    **{f"kreciprocal {k1}/{k2}/{lam}": _kr(k1, k2, lam) for k1, k2, lam in
       [(20, 6, 0.3), (20, 6, 0.6), (20, 6, 0.9), (10, 3, 0.3), (10, 3, 0.6), (10, 3, 0.9), (5, 2, 0.3),
        (5, 2, 0.6), (5, 2, 0.9), (5, 1, 0.3), (5, 1, 0.6), (3, 1, 0.3), (3, 1, 0.6), (3, 2, 0.6), (3, 1, 0.9)]},
    "dba k 2 + kreciprocal 5/2/0.6": _merged(_dba(2), _kr(5, 2, 0.6)),
}


def gem_settings(params: dict, gnd: Path, index: Path, halves: bool) -> str:
    """A Markdown table: each of :data:`GEM_SETTINGS`, mAP and N-S, on every query or on each half of
    UKBench's objects (in the order of their images; every image is a query)."""
    ix = open_index(index, gnd)
    queries = ix.benchmark_queries()
    first = [min(q.positives) for q in ix.gnd.queries]      # an object: its images, the lowest first
    obj = np.searchsorted(sorted(set(first)), first)
    parts = {"objects 0-62": obj < 63, "objects 63-124": obj >= 63} if halves else {"all queries": obj >= 0}
    head = " | ".join(f"{p} mAP | {p} N-S" for p in parts)
    lines = [f"| setting | {head} | s |", "|---|" + "---|" * (2 * len(parts) + 1)]
    for name, override in GEM_SETTINGS.items():
        p = {**params, "gem": _merged(params["gem"], override)}
        started = time.perf_counter()
        got = retrieve(ix, queries, p, "cosine")["expand"]
        took = time.perf_counter() - started
        t = evaluate.evaluate_rankings(ix.gnd, got, seed_top=p["evaluate"]["seed_top"],
                                       seed_max_hits=p["evaluate"]["seed_max_hits"])
        ap_, ns = t["ap"].to_numpy(float), t["ns4"].to_numpy(float)
        cells = " | ".join(f"{np.nanmean(ap_[m]):.4f} | {np.nanmean(ns[m]):.3f}" for m in parts.values())
        lines.append(f"| {name} | {cells} | {took:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--methods", nargs="+", default=["sift", "blcf", "gem"])
    ap.add_argument("--threads", default="all", help="compute.threads for the steps (default: all)")
    ap.add_argument("--dataset", default="ukbench500", choices=["ukbench500", "synthetic"])
    ap.add_argument("--gem-settings", action="store_true", help="gem's second stages over a grid of settings")
    args = ap.parse_args(argv)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    dataset, cfg = args.dataset, params["datasets"][args.dataset]
    args.out.mkdir(parents=True, exist_ok=True)
    threads.apply(threads.resolve(int(args.threads) if args.threads.isdigit() else args.threads))
    if dataset == "ukbench500":
        if not (UKBENCH / "jpg").is_dir():
            sys.exit(f"error: {UKBENCH} is missing: this needs ../shared/data/ukbench-500")
        params["blcf"]["extract"]["max_side"] = 340
        params["gem"]["extract"].update(GEM_EXTRACT)
        cfg["images"], cfg["groundtruth"] = str(UKBENCH / "jpg"), str(UKBENCH / "groundtruth.csv")
    else:  # the embedded benchmark, generated as make demo does
        data = args.out / "data"
        cfg["images"], cfg["groundtruth"] = str(data / dataset / "jpg"), str(data / dataset / "gt")
        if not (data / dataset / "manifest.json").is_file():
            steps.fetch(params, dataset, data / dataset / "manifest.json")
    gnd = args.out / "gnd.json"
    prepare(params, dataset, gnd)
    for m in args.methods:
        d = args.out / m
        started = time.perf_counter()
        if not (d / "index").is_dir():
            steps.extract(params, dataset, m, gnd, d / "features")
            steps.codebook(params, m, gnd, d / "features", d / "model.npz")
            steps.encode(params, dataset, m, gnd, d / "features", d / "model.npz", d / "index")
        built = time.perf_counter() - started
        steps.rank(params, "cosine", gnd, d / "index", d / "rank.npz")
        steps.options(params, "cosine", gnd, d / "index", d / "rank.npz", args.out / "options" / f"{dataset}-{m}.json")
        print(f"{m}: index {built:.0f} s, options {time.perf_counter() - started - built:.0f} s", flush=True)
        if m == "gem" and args.gem_settings:
            table = gem_settings(params, gnd, d / "index", halves=dataset == "ukbench500")
            (args.out / "gem_settings.md").write_text(table, encoding="utf-8")
    paths = [args.out / "options" / f"{dataset}-{m}.json" for m in params["run"]["methods"]]
    paths = [p for p in paths if p.is_file()]  # the methods run now or before, in the tables' order
    report.write_options_table(paths, "cosine", args.out / "options_cosine.md", args.out / "options_cosine.csv")
    print((args.out / "options_cosine.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
