"""How much the demo's numbers move under a pixel-level change of its images, with all of each object's
queries against one a object.

A JPEG encoder change moved the demo's mAP by up to 0.02 when it had one query a object (issue 24).
This re-runs the whole demo (Snakemake, the checkout's params.yaml) in a copy of the checkout under
benchmarks/out/stability/<change>/, with its generated images changed after the fetch step, and
compares every method x similarity x stage's mAP with the checkout's own finished demo (run `make
demo` first), twice: over all the queries, and over each object's first query only (objNN_1: the old
demo's queries, which rank exactly as they did alone: a query's ranking depends on no other query).
The changes (each image decoded, changed, encoded again at the generator's JPEG quality):

- ``pillow``: encoded by Pillow instead of OpenCV (another encoder: 0.13 levels a pixel on average);
- ``ditherN``: +-1 level of seeded noise (seed N) on every pixel, encoded by OpenCV;
- ``jpegQ`` (by hand): generated at JPEG quality Q instead (other quantisation tables: a coarser change).

Run from the repository root, in the environment:

    python benchmarks/demo_stability.py                       # pillow, dither0, dither1: three demo runs
    python benchmarks/demo_stability.py --changes jpeg84 jpeg86
    python benchmarks/demo_stability.py --compare DIR ...     # finished runs elsewhere (e.g. make drift's)
    python benchmarks/demo_stability.py --time-queries 1 5    # the demo's time at 1 and 5 queries an object
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "stability"
sys.path.insert(0, str(Path(__file__).parent))
from machine import hardware  # noqa: E402

STAGES = ("first_stage", "rerank", "expand")


def _copy_checkout(root: Path) -> None:
    """Tracked and untracked files of the checkout (no results, no earlier benchmark output) into root."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if name.startswith(("results/", "benchmarks/out/")) or not (REPO / name).is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)


def _change_images(folder: Path, change: str, quality: int) -> None:
    import cv2
    import numpy as np
    from PIL import Image

    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if change == "pillow":
            Image.fromarray(image[:, :, ::-1]).save(path, "JPEG", quality=quality)
            continue
        rng = np.random.default_rng([int(change.removeprefix("dither")), len(path.name), *path.name.encode()])
        noisy = np.clip(image.astype(np.int16) + rng.integers(-1, 2, image.shape), 0, 255).astype(np.uint8)
        path.write_bytes(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())


def changed_run(change: str, queries: int | None = None) -> Path:
    """The demo from scratch in a copy of the checkout, its images changed (``change``: pillow, ditherN,
    jpegQ, or none) and ``queries`` an object when given, with this environment and the copy's code; timed."""
    root = OUT / (change + (f"-queries{queries}" if queries else ""))
    _copy_checkout(root)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    generator = params["datasets"]["synthetic"]["generator"]
    if change.startswith("jpeg"):
        generator["jpeg_quality"] = int(change.removeprefix("jpeg"))
    if queries:
        generator["queries"] = queries
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    options = ["--cores", str(os.cpu_count()), "--resources", "gpu=1", "--quiet", "all"]  # targets go first
    print(f"{change}: the demo in {root.relative_to(REPO)}", flush=True)
    start = time.perf_counter()
    if change == "pillow" or change.startswith("dither"):
        subprocess.run(["snakemake", "data/synthetic/manifest.json", *options], cwd=root, env=env, check=True)
        _change_images(root / params["datasets"]["synthetic"]["images"], change, generator["jpeg_quality"])
    subprocess.run(["snakemake", "all", *options], cwd=root, env=env, check=True)
    print(f"{change}: the demo took {time.perf_counter() - start:.0f} s", flush=True)
    return root


def maps(root: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """{(run, stage): (mAP over every query, mAP over each object's first query)} of a finished demo."""
    out = {}
    for path in sorted((root / "results/per_query").glob("*/synthetic.csv")):
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        for stage in STAGES:
            aps = [(r["query"], float(r["ap"])) for r in rows if r["stage"] == stage]
            first = [ap for q, ap in aps if q.endswith("_1")]
            out[(path.parent.name, stage)] = (sum(ap for _, ap in aps) / len(aps), sum(first) / len(first))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", nargs="+", default=["pillow", "dither0", "dither1"])
    ap.add_argument("--compare", nargs="*", type=Path, help="finished demo checkouts to compare instead of new runs")
    ap.add_argument("--time-queries", type=int, nargs="+", metavar="Q",
                    help="only time the whole demo from scratch with Q queries an object, for each Q in turn")
    args = ap.parse_args()
    if args.time_queries:  # the run time's cost of the queries, nothing compared
        print(hardware())
        for q in args.time_queries:
            changed_run("none", q)
        return
    base = maps(REPO)
    if not base:
        sys.exit("error: results/per_query holds no demo run; run make demo first")
    runs = {str(p): p for p in args.compare} if args.compare else {c: changed_run(c) for c in args.changes}
    print(f"\n{hardware()}")
    n_all = sum(1 for r in csv.DictReader((REPO / "results/per_query/sift_cosine/synthetic.csv").open())
                if r["stage"] == "first_stage")
    print(f"mAP change against this checkout's demo: all {n_all} queries | each object's first query")
    worst, means = [0.0, 0.0], []
    for name, root in runs.items():
        other = maps(root)
        print(f"\n{name}\n  {'run':<24} {'stage':<12} {'all':>8} {'first':>8}")
        for key in sorted(base):
            d_all, d_first = (other[key][i] - base[key][i] for i in (0, 1))
            worst = [max(worst[0], abs(d_all)), max(worst[1], abs(d_first))]
            print(f"  {key[0]:<24} {key[1]:<12} {d_all:+8.4f} {d_first:+8.4f}")
        diffs = [[abs(other[k][i] - base[k][i]) for k in base] for i in (0, 1)]
        means.append([sum(d) / len(d) for d in diffs])
        print(f"  mean |change|: all {means[-1][0]:.4f}, first {means[-1][1]:.4f}")
        for method in sorted({k[0].split("_")[0] for k in base}):
            d = [[abs(other[k][i] - base[k][i]) for k in base if k[0].startswith(method + "_")] for i in (0, 1)]
            print(f"    {method:<6} largest |change|: all {max(d[0]):.4f}, first {max(d[1]):.4f}")
    print(f"\nlargest |change|: all queries {worst[0]:.4f}, first queries {worst[1]:.4f}; mean |change| over "
          f"the runs: all {sum(m[0] for m in means) / len(means):.4f}, first {sum(m[1] for m in means) / len(means):.4f}")


if __name__ == "__main__":
    main()
