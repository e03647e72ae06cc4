"""Cold latency of one query: a fresh process per run, as ``instance-search query`` starts, split
into phases, for each index given (default: the demo's five, results/synthetic/<method>).

Two measurements per run, each in its own process:

- ``cli``: the wall time of ``python -m instance_search.cli query --index D --image I --box B``
  (interpreter start to exit), measured from outside;
- phases, timed inside one fresh process (``--phases``): ``import`` (the query modules),
  ``params`` (load and validate params.yaml), ``load`` (the index: files, fingerprints, gnd),
  ``network`` (the method's query encoder: model, extractor, network), then the query's own
  ``extract``, ``rank``, ``rerank``, ``expand``.

The query: each index's first benchmark query (image and box). Only functions that every version
since the query command has (``load_index``, ``run_query``, ``Method.image_encoder``) are called,
so the same script measures an older checkout: ``PYTHONPATH=<checkout>/src python
benchmarks/cold_query.py``. Run from the repository root; the median of ``--runs`` runs is printed,
with the load average before and after (other work on the machine slows every phase).

    python benchmarks/cold_query.py --runs 3
    python benchmarks/cold_query.py --index results/synthetic/gem --runs 5 --json benchmarks/out/cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("import", "params", "load", "network", "extract", "rank", "rerank", "expand")


def phases(index_dir: str, params_file: str) -> dict:
    """One cold query's phases in this (fresh) process."""
    t = time.perf_counter()
    from instance_search.config import load_params, schema_path
    from instance_search.index import load_index
    from instance_search.query import run_query
    out = {"import": time.perf_counter() - t}

    t = time.perf_counter()
    params = load_params(params_file, schema_path(params_file))
    out["params"] = time.perf_counter() - t
    t = time.perf_counter()
    index = load_index(index_dir)
    out["load"] = time.perf_counter() - t
    t = time.perf_counter()
    index._encoder = index.method.image_encoder(index.manifest["extraction"], index._model(), index.db)
    out["network"] = time.perf_counter() - t
    q = index.gnd.queries[0]
    answer = run_query(index, index.image_path(q.image), q.box, params=params, params_source=params_file)
    out.update({k: answer.timings.get(k, 0.0) for k in ("extract", "rank", "rerank", "expand")})
    out["top"] = [h.name for h in answer.hits[:5]]
    return out


def run_phases(index_dir: str, params_file: str) -> dict:
    got = subprocess.run([sys.executable, __file__, "--child", index_dir, "--params", params_file],
                         capture_output=True, text=True, check=True)
    return json.loads(got.stdout.splitlines()[-1])


def run_cli(index_dir: str, params_file: str) -> float:
    sys.path.insert(0, str(REPO / "src"))
    from instance_search.groundtruth import load  # the query's image and box, read outside the timed process
    from instance_search.index import image_root

    folder = Path(index_dir)
    gnd_file = folder / "gnd.json" if (folder / "gnd.json").is_file() else folder.parent / "gnd.json"
    gnd = load(gnd_file)
    q = gnd.queries[0]
    image = image_root(gnd.root, folder) / gnd.images[q.image].path
    box = ",".join(f"{v:g}" for v in q.box)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "instance_search.cli", "query", "--index", index_dir, "--image", str(image),
                    "--box", box, "--params", params_file], capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", default=None, help="an index folder (repeat); default: the demo's")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--json", default=None, help="also write every run here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(phases(args.child, args.params)))
        return
    indexes = args.index or [str(Path("results") / "synthetic" / m) for m in ("sift", "blcf", "frcnn", "gem", "xfeat")]
    print(f"load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'index':<26} {'cli':>6} " + " ".join(f"{p:>7}" for p in PHASES) + "   (seconds, medians)")
    results = {}
    for index_dir in indexes:
        runs = []
        for _ in range(args.runs):
            row = run_phases(index_dir, args.params)
            row["cli"] = run_cli(index_dir, args.params)
            row["load_average"] = os.getloadavg()[0]
            runs.append(row)
        med = {k: statistics.median(r[k] for r in runs) for k in ("cli", *PHASES)}
        loads = [r["load_average"] for r in runs]
        print(f"{index_dir:<26} {med['cli']:6.2f} " + " ".join(f"{med[p]:7.3f}" for p in PHASES)
              + f"   load {min(loads):.1f}-{max(loads):.1f}", flush=True)
        results[index_dir] = runs
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
