"""The second-stage options table on the 500 real UKBench photos (README, "Real photographs").

Runs the pipeline's step functions (prepare, extract, codebook, encode, rank, options, the options
table) on ../shared/data/ukbench-500 for each method asked, with params.yaml and the input sizes of
tests/test_realdata.py (blcf 340 px, gem one scale at 480 px), the cosine similarity, and writes
<out>/options_cosine.{md,csv}. Every image is a whole-image query. Run from the repository root:

    python benchmarks/ukbench_options.py --out /tmp/ukbench-options                 # sift blcf gem
    python benchmarks/ukbench_options.py --out /tmp/ukbench-options --methods frcnn  # ~5 min more here

A method's folder under --out is reused when its index is there (delete it to start again).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from instance_search import report, threads
from instance_search.pipeline import steps
from instance_search.datasets.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"
sys.path.insert(0, str(REPO / "tests"))
from test_realdata import GEM_EXTRACT  # noqa: E402  the real-photo test's sizes, kept in one place


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--methods", nargs="+", default=["sift", "blcf", "gem"])
    ap.add_argument("--threads", default="all", help="compute.threads for the steps (default: all)")
    args = ap.parse_args(argv)
    if not (UKBENCH / "jpg").is_dir():
        sys.exit(f"error: {UKBENCH} is missing: this needs ../shared/data/ukbench-500")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["blcf"]["extract"]["max_side"] = 340
    params["gem"]["extract"].update(GEM_EXTRACT)
    cfg = params["datasets"]["ukbench500"]
    cfg["images"], cfg["groundtruth"] = str(UKBENCH / "jpg"), str(UKBENCH / "groundtruth.csv")
    threads.apply(threads.resolve(int(args.threads) if args.threads.isdigit() else args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    gnd = args.out / "gnd.json"
    prepare(params, "ukbench500", gnd)
    for m in args.methods:
        d = args.out / m
        started = time.perf_counter()
        if not (d / "index").is_dir():
            steps.extract(params, "ukbench500", m, gnd, d / "features")
            steps.codebook(params, m, gnd, d / "features", d / "model.npz")
            steps.encode(params, "ukbench500", m, gnd, d / "features", d / "model.npz", d / "index")
        built = time.perf_counter() - started
        steps.rank(params, "cosine", gnd, d / "index", d / "rank.npz")
        steps.options(params, "cosine", gnd, d / "index", d / "rank.npz", args.out / "options" / f"ukbench500-{m}.json")
        print(f"{m}: index {built:.0f} s, options {time.perf_counter() - started - built:.0f} s", flush=True)
    paths = [args.out / "options" / f"ukbench500-{m}.json" for m in params["run"]["methods"]]
    paths = [p for p in paths if p.is_file()]  # the methods run now or before, in the tables' order
    report.write_options_table(paths, "cosine", args.out / "options_cosine.md", args.out / "options_cosine.csv")
    print((args.out / "options_cosine.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
