"""`instance-search index` of the 500 ukbench-500 photos with each method, two versions of the library
side by side: the wall time of the whole command (interpreter start to exit: extraction, the model,
encoding) and of its extraction (between its log lines "1/3" and "2/3"), this checkout's library against another checkout's ``src`` (``--before``), interleaved method by
method (the order reversed every other method) so that a drifting load hits both. The indexes' N-S
(20 whole-image queries by ``instance-search query``, the group's 4 photos in the top 4) shows that
both versions still retrieve. Run from the repository root:

    git worktree add --detach /tmp/before <commit>
    python benchmarks/index_time.py --before /tmp/before/src [--methods sift gem] [--images 500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"
METHODS = ("sift", "blcf", "frcnn", "gem", "xfeat")


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_index(src: Path, images: Path, method: str, out: Path) -> tuple[float, float]:
    """(seconds of the whole command, seconds of its extraction: from its "1/3" log line to its "2/3")."""
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    marks = {}
    proc = subprocess.Popen([sys.executable, "-m", "instance_search.cli", "index", "--images", str(images),
                             "--method", method, "--out", str(out), "--params", str(REPO / "params.yaml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    for line in proc.stderr:
        for mark in ("1/3", "2/3"):
            if f" {mark} " in line and mark not in marks:
                marks[mark] = time.perf_counter()
    if proc.wait() != 0 or len(marks) < 2:
        raise SystemExit(f"instance-search index --method {method} failed (PYTHONPATH={src})")
    return time.perf_counter() - start, marks["2/3"] - marks["1/3"]


def n_s(src: Path, index: Path, photos: list[Path]) -> float:
    """Mean count of the query's group in the top 4 over 20 whole-image queries (every 25th photo)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    queries = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    with queries:
        queries.write("image,x1,y1,x2,y2\n")
        for p in photos[::25]:
            queries.write(f"{p},,,,\n")
    out = subprocess.run([sys.executable, "-m", "instance_search.cli", "query", "--index", str(index),
                          "--queries", queries.name, "--json", "--results", "4"],
                         env=env, check=True, capture_output=True, text=True, cwd=REPO).stdout
    os.unlink(queries.name)
    found = []
    for p, line in zip(photos[::25], out.splitlines()):
        n = int(p.stem[len("ukbench"):])
        group = {f"ukbench{n // 4 * 4 + k:05d}" for k in range(4)}
        found.append(sum(h["name"] in group for h in json.loads(line)["hits"][:4]))
    return statistics.mean(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout's src folder")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--images", type=int, default=500)
    args = ap.parse_args()
    after = REPO / "src"
    photos = sorted(PHOTOS.glob("*.jpg"))[:args.images]
    print(f"machine: {hardware()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        for p in photos:
            (tmp / "photos" / p.name).symlink_to(p)
        for i, method in enumerate(args.methods):
            times, extract, scores, loads = {}, {}, {}, []
            order = [("before", args.before), ("after", after)]
            for name, src in (order if i % 2 == 0 else order[::-1]):
                out = tmp / f"{method}-{name}"
                loads.append(load())
                times[name], extract[name] = run_index(src, tmp / "photos", method, out)
                scores[name] = n_s(src, out, photos)
            loads.append(load())
            rows.append((method, times, extract, scores, loads))
            print(f"  {method}: before {times['before']:.0f} s, after {times['after']:.0f} s (load {loads})",
                  file=sys.stderr)
    print(f"\n`instance-search index` of {len(photos)} ukbench-500 photos (params.yaml; seconds, whole command)\n")
    print("| method | before | after | before / after | extraction before | after | before / after "
          "| N-S before | N-S after | load (1/5/15 min) at start |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for method, t, e, s, loads in rows:
        print(f"| {method} | {t['before']:.0f} | {t['after']:.0f} | {t['before'] / t['after']:.2f} | "
              f"{e['before']:.0f} | {e['after']:.0f} | {e['before'] / e['after']:.2f} | "
              f"{s['before']:.2f} | {s['after']:.2f} | {loads[0]} |")


if __name__ == "__main__":
    main()
