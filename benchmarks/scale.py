"""Cost growth: each method's steps on the embedded benchmark grown with distractors, timed, their peak
memory and disk measured, a growth exponent fitted per step, drawn on a log-log plot.

    python benchmarks/scale.py                                  # 500, 2,000, 8,000 database images
    python benchmarks/scale.py --sizes 250 500 1000 --methods sift gem
    python benchmarks/scale.py --plot-only                      # table and plot from the stored results

Each size gets a folder under --out with params.yaml's settings but the generator grown (objects =
database / 40, between 12 and the schema's 38, 8 views each, the rest
distractors; one query per object) and runs the pipeline's own step commands (dvc.yaml's, cosine),
one process each: fetch and prepare, then per method weights, extract, codebook, encode, rank,
rerank, expand, evaluate. Per step: wall time, the peak memory of its process tree (DataLoader
workers included) as summed RSS (psutil, every 0.1 s; counts the pages a forked worker shares with
its parent once per process) and as summed PSS (Linux, every second: shared pages split, the real
footprint), and the bytes of its outputs. results.json keeps
every measurement: a step measured already is not run again (run the same command to resume or to add
sizes). Then, per method and step, the exponent b of time ~ database^b (least squares in log-log;
the search steps also per query, as queries grow with the database up to 38), and the extrapolated
time of params.yaml's settings on the full profile's datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import hardware  # noqa: E402

BUILD = ("weights", "extract", "codebook", "encode")
SEARCH = ("rank", "rerank", "expand", "evaluate")
SIMILARITY = "cosine"
# The full profile's datasets: (database images, queries) (reference.md)
FULL = {"oxford5k": (5063, 55), "paris6k": (6392, 55), "roxford5k": (4993, 70), "rparis6k": (6322, 70),
        "instre": (27293, 1250), "sculptures6k": (3170, 70), "ukbench": (10200, 10200)}


def grown(params: dict, n: int, seed: int) -> dict:
    objects = int(min(38, max(12, n // 40)))  # the schema's maximum
    views = 8
    g = params["datasets"]["synthetic"]["generator"]
    g.update(objects=objects, views=views, distractors=n - objects * views)
    params["seed"] = seed
    params["run"]["datasets"] = ["synthetic"]
    return params


def stage_commands(root: Path, method: str) -> list[tuple[str, str, list[str]]]:
    """(step, command, outputs) of dvc.yaml's stages for the synthetic dataset, this method, cosine."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    item = {"dataset": "synthetic", "method": method, "similarity": SIMILARITY}

    def fill(text: str) -> str:
        for k, v in item.items():
            text = text.replace(f"${{item.{k}}}", v)
        return text

    out = []
    for step in ("fetch", "prepare", *BUILD, *SEARCH):
        st = stages[step]
        outs = [fill(next(iter(o)) if isinstance(o, dict) else o) for kind in ("outs", "metrics") for o in st.get(kind, [])]
        out.append((step, fill(st["cmd"]), outs))
    return out


def tree_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def pss(pid: int) -> int:
    """Proportional set size in bytes (Linux): each shared page split among the processes that map it,
    so forked DataLoader workers do not count the parent's pages again (their RSS does); 0 where the
    kernel does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def run_measured(command: str, cwd: Path) -> tuple[float, float, float]:
    """(seconds, peak MiB of the process tree's summed RSS, peak MiB of its summed PSS) of one step command."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(command, shell=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    peak, peak_pss, done = 0, 0, threading.Event()

    def sample():
        nonlocal peak, peak_pss
        root = psutil.Process(proc.pid)
        tick = 0
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
                if tick % 10 == 0:  # PSS walks the page tables: every second, or it takes a core from the step
                    peak_pss = max(peak_pss, sum(pss(p.pid) for p in tree))
            except psutil.Error:
                pass
            tick += 1
            done.wait(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"error: {command} failed in {cwd}:\n{err.decode()[-2000:]}")
    return time.perf_counter() - started, peak / 2**20, peak_pss / 2**20


def measure(sizes: list[int], methods: list[str], out: Path, seed: int) -> dict:
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    results["machine"] = hardware()
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for n in sizes:
        root = out / str(n)
        root.mkdir(parents=True, exist_ok=True)
        params = grown(json.loads(json.dumps(base)), n, seed)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        for link in ("workflow",):
            if not (root / link).exists():
                (root / link).symlink_to(REPO / link)
        g = params["datasets"]["synthetic"]["generator"]
        for method in methods:
            key = f"{n}/{method}"
            got = results["runs"].get(key)
            if got is None or got["queries"] != g["objects"]:  # new, or measured with another generator
                got = results["runs"][key] = {"database": n, "queries": g["objects"], "method": method, "steps": {}}
            for step, command, outputs in stage_commands(root, method):
                if step in ("fetch", "prepare") and (root / outputs[0]).exists():
                    continue  # shared by the methods of this size
                if step in got["steps"]:
                    continue
                seconds, peak, peak_pss = run_measured(command, root)
                got["steps"][step] = {"seconds": round(seconds, 3), "peak_mib": round(peak, 1),
                                      "pss_mib": round(peak_pss, 1), "bytes": tree_bytes([root / o for o in outputs])}
                print(f"{n:>6} {method:>6} {step:>9}: {seconds:8.2f} s, peak RSS {peak:7.0f} MiB, "
                      f"PSS {peak_pss:7.0f} MiB", flush=True)
                results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def fits(results: dict) -> dict:
    """{method: {step: (exponent, per-query exponent or None, sizes)}} over the sizes measured."""
    by = {}
    for run in results["runs"].values():
        for step, m in run["steps"].items():
            if step in BUILD + SEARCH:
                by.setdefault(run["method"], {}).setdefault(step, []).append(
                    (run["database"], run["queries"], m["seconds"]))
    out = {}
    for method, steps in by.items():
        for step, points in steps.items():
            points.sort()
            if len(points) < 2:
                continue
            n, q, t = (np.array(v, float) for v in zip(*points))
            b = np.polyfit(np.log(n), np.log(np.maximum(t, 1e-3)), 1)[0]
            bq = np.polyfit(np.log(n), np.log(np.maximum(t / q, 1e-6)), 1)[0] if step in SEARCH else None
            out.setdefault(method, {})[step] = (float(b), None if bq is None else float(bq), points)
    return out


def extrapolate(fitted: dict) -> dict[str, float]:
    """Hours of params.yaml's settings on the full profile's datasets, per method, from each step's fit
    through its largest measured size (build steps by database size, search steps per query). The
    exponents are clipped to [0, 2]: a step that only starts a process (a few seconds) measures
    flat or noisy, and none may grow faster than database x queries."""
    hours = {}
    for method, steps in fitted.items():
        total = 0.0
        for step, (b, bq, points) in steps.items():
            n0, q0, t0 = points[-1]
            for n, q in FULL.values():
                total += (t0 * (n / n0) ** min(max(b, 0.0), 2.0) if bq is None
                          else t0 / q0 * q * (n / n0) ** min(max(bq, 0.0), 2.0))
        hours[method] = total / 3600
    return hours


def report(results: dict, plot: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = fits(results)
    print(f"\nmachine: {results['machine']}")
    runs = sorted(results["runs"].values(), key=lambda r: (r["method"], r["database"]))
    print("\nstep seconds / peak MiB summed RSS / PSS / output MiB per database size (queries), and the growth exponents")
    for method in sorted({r["method"] for r in runs}):
        mine = [r for r in runs if r["method"] == method]
        print(f"\n{method}: " + ", ".join(f"{r['database']} images ({r['queries']} queries)" for r in mine))
        for step in BUILD + SEARCH:
            cells = [r["steps"].get(step) for r in mine]
            text = "  ".join("-" if c is None else f"{c['seconds']:8.2f}s {c['peak_mib']:6.0f}M/"
                             + (f"{c['pss_mib']:.0f}M" if "pss_mib" in c else "-") + f" {c['bytes'] / 2**20:7.2f}M"
                             for c in cells)
            b = fitted.get(method, {}).get(step)
            exp = "" if b is None else f"  exponent {b[0]:.2f}" + ("" if b[1] is None else f" (per query {b[1]:.2f})")
            print(f"  {step:>9}: {text}{exp}")
        for r in mine:  # a ranking file against the queries x database product it replaces
            if "rank" in r["steps"]:
                full = r["queries"] * r["database"] * 8
                print(f"  rank.npz at {r['database']}: {r['steps']['rank']['bytes'] / 1024:.0f} KiB "
                      f"(queries x database x 8 bytes: {full / 1024:.0f} KiB)")
    hours = extrapolate(fitted)
    if hours:
        print("\nextrapolated to the full profile's datasets with params.yaml's settings, this machine:")
        for method, h in sorted(hours.items()):
            print(f"  {method}: {h:.1f} h")
    methods = sorted(fitted)
    if not methods:
        return
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        sizes = set()
        for step, (b, _, points) in sorted(fitted[method].items(), key=lambda kv: (BUILD + SEARCH).index(kv[0])):
            n, _, t = zip(*points)
            sizes |= set(n)
            ax.loglog(n, t, marker="o", label=f"{step} ({b:.2f})")
        ax.set_xticks(sorted(sizes), [f"{int(n):,}" for n in sorted(sizes)])
        ax.minorticks_off()
        ax.set_title(method)
        ax.set_xlabel("database images")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="step (exponent)", title_fontsize=7, loc="center right")
    axes[0][0].set_ylabel("seconds")
    fig.suptitle(f"Cost growth ({results['machine'].split(',')[0]})", fontsize=9)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"\nplot: {plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000], help="database images")
    p.add_argument("--methods", nargs="+", default=None, help="default: params.yaml's run.methods")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/out/scale")
    p.add_argument("--plot", type=Path, default=REPO / "docs/scale.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    if min(args.sizes) < 12 * 8:
        sys.exit("error: --sizes: at least 96 database images (12 objects x 8 views)")
    methods = args.methods or yaml.safe_load((REPO / "params.yaml").read_text())["run"]["methods"]
    if args.plot_only:
        results = json.loads((args.out / "results.json").read_text())
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        results = measure(args.sizes, methods, args.out, args.seed)
    report(results, args.plot)


if __name__ == "__main__":
    main()
