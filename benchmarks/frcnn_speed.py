"""Speed of the frcnn method: extraction images/s, storage per image, filtering and re-ranking queries/s.

1. Extraction: ``features.frcnn.extract_images`` (decoding, resizing, the forward pass, RoIAlign of
   the proposals and the copy back, as the pipeline's extract step runs it) on real photos of
   ../shared/data/ukbench-500 (read in place), max_side 512, at most 300 proposals, on whatever device
   it finds (CUDA if present, else the CPU): the grid source on mobilenet_v2 at features.18 (1280-d)
   and features.17 (320-d), and the rpn source (the COCO detector) when its weights are in torchvision's
   cache; otherwise that row says "weights missing". Grid parameters, pooling, RoI op, batch size and
   workers are params.yaml's frcnn.extract. One warm-up batch per extractor is not timed; each timed run
   starts its own DataLoader workers, as each extract shard does.
2. Storage per image: the stored arrays (image-wise vector float32 (C,), boxes float32 (P, 4), region
   vectors float16 (P, C), one int64 offset), arithmetically for P proposals at each layer's dimension
   and for the COCO FPN level (256-d, 300 proposals); beside it the bytes measured on the extracted
   RegionFeatures.
3. Filtering: the frcnn method's ``search`` (``methods.regions.RegionMethod.search``) of nq queries
   against n database image-wise vectors (synthetic, non-negative with about half of the coordinates
   zero, as pooled post-ReLU vectors), all queries in one call and one query at a time, both
   similarities.
4. Re-ranking: the method's ``rerank`` (best proposal) of the top 100 of the filtering rankings of 3.
   (the first 20 queries) over 300 synthetic float16 proposals per image, and the pipeline's expansion
   step (the method's ``expand``: average over the best proposals of the top 5, then the top 100
   re-ranked again), against the naive baseline: a loop over queries x images with one small
   (1, C) x (C, 300) product per pair (``retrieval.similarity.scores``), timed on a few queries and scaled
   to all of them (said so in the table). The database's region features come from a pool of
   ``--distinct`` different images (image i uses pool entry i mod distinct): 5,000 x 300 x 1280 float16
   would be 3.8 GB; the pool (~380 MB at 1280-d) is still far larger than any CPU cache. Re-ranking
   runs once with numpy's default BLAS threads (as the pipeline runs it) and once with 1 thread
   (``--blas-threads``): its many tiny products (a few query rows x 300 proposals per image) can be
   much slower multi-threaded when the CPU is busy, while the naive loop's one-row products are not.

Run from the repository root:

    python benchmarks/frcnn_speed.py                  # CPU: 3-5 minutes on 2 busy cores
    python benchmarks/frcnn_speed.py --images 500     # more photos (the default on CUDA)
    python benchmarks/frcnn_speed.py --quick          # a smoke run (about a minute on a busy CPU)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.features import backbones, frcnn
from instance_search.methods.base import Queries
from instance_search.methods.regions import RegionDatabase
from instance_search.retrieval import linalg
from instance_search.retrieval import similarity as sim
from instance_search.retrieval.ranking import Ranking
from instance_search.retrieval.similarity import SIMILARITIES
from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"
LAYER_DIMS = {"features.18": 1280, "features.17": 320}   # mobilenet_v2
COCO_FPN_DIM, COCO_PROPOSALS = 256, 300
ALPHA = 0.8
METHOD = methods.get("frcnn")   # methods.regions.RegionMethod


def machine(device: str) -> str:
    import torch

    return (f"{hardware()}; extraction on {device}, "
            f"filtering and re-ranking on the CPU (numpy); {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def extract_params() -> dict:
    """params.yaml's frcnn.extract, with the benchmark's max_side 512 and 300 proposals."""
    p = {"detector": "fasterrcnn_resnet50_fpn", "scales": [1.0, 0.7, 0.5, 0.35], "aspect_ratios": [0.5, 1.0, 2.0],
         "stride": 0.5, "pooling": "max", "roi": "align", "roi_size": 7, "batch_size": 8, "workers": 2, "half": False}
    try:
        p.update(yaml.safe_load((REPO / "params.yaml").read_text())["frcnn"]["extract"])
    except (OSError, KeyError, TypeError):
        pass
    p.update(max_side=512, proposals=300)
    return p


def image_list(n: int) -> tuple[list[str], list[tuple[int, int]]]:
    from PIL import Image

    if not UKBENCH.is_dir():
        raise SystemExit(f"{UKBENCH}: missing; this benchmark reads the ukbench-500 photos in place")
    files = sorted(UKBENCH.glob("*.jpg"))
    if not files:
        raise SystemExit(f"{UKBENCH}: no .jpg files")
    files = [files[k % len(files)] for k in range(n)]  # more than 500 asked: the photos repeat
    dims = []
    for p in files:
        with Image.open(p) as im:  # header only
            dims.append(im.size)
    return [str(p) for p in files], dims


def stored_bytes(dim: int, proposals: float) -> float:
    """Bytes per image of RegionFeatures: vector f32 (C,), boxes f32 (P, 4), regions f16 (P, C), offset i64."""
    return 4 * dim + 16 * proposals + 2 * proposals * dim + 8


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ------------------------------------------------------------------------------------------- extraction

def bench_extraction(args, p: dict, device: str) -> list[dict]:
    paths, dims = image_list(args.images)
    print(f"\n[1] extraction: {len(paths)} photos of {UKBENCH} "
          f"({', '.join(f'{w}x{h}' for w, h in sorted(set(dims)))}), max_side {p['max_side']}, <= {p['proposals']} "
          f"proposals, {p['pooling']} pooling, RoI{p['roi']} {p['roi_size']}x{p['roi_size']}, batch {args.batch_size}, "
          f"{args.workers} DataLoader workers, on {device}{' (float16)' if p['half'] and device == 'cuda' else ''}",
          flush=True)
    configs = [("grid", f"mobilenet_v2 {layer}", dict(backbone="mobilenet_v2", layer=layer)) for layer in args.layers]
    configs.append(("rpn", f"{p['detector']} FPN", dict(detector=p["detector"])))
    rows = []
    for source, name, kw in configs:
        row = {"source": source, "name": name}
        rows.append(row)
        if source == "rpn":
            weights = frcnn.detector_weight_file(p["detector"])
            if not weights.is_file():  # RegionExtractor would raise InstanceSearchError naming it
                row["missing"] = f"{weights.name} not in {weights.parent}"
                print(f"  rpn {name}: weights missing ({row['missing']}); skipped", flush=True)
                continue
        elif not backbones.weight_file("mobilenet_v2").is_file():
            row["missing"] = f"{backbones.weight_file('mobilenet_v2')}"
            print(f"  grid {name}: weights missing ({row['missing']}); skipped", flush=True)
            continue
        try:
            ex = frcnn.RegionExtractor(source, proposals=p["proposals"], scales=p["scales"],
                                       aspect_ratios=p["aspect_ratios"], stride=p["stride"], pooling=p["pooling"],
                                       roi=p["roi"], roi_size=p["roi_size"], device=device, half=p["half"], **kw)
        except InstanceSearchError as exc:
            row["missing"] = f"error: {exc}"
            print(f"  {source} {name}: {exc}", flush=True)
            continue
        run = dict(max_side=p["max_side"], batch_size=args.batch_size)
        warm = min(len(paths), args.batch_size)
        frcnn.extract_images(ex, paths[:warm], dims[:warm], workers=0, **run)   # warm-up, not timed
        (got, fallbacks), t = timed(lambda: frcnn.extract_images(ex, paths, dims, workers=args.workers, **run))
        feats = frcnn.RegionFeatures.from_images(got)
        n = len(got)
        row.update(rate=n / t, seconds=t, dim=ex.dim, proposals=len(feats.boxes) / n, fallbacks=fallbacks,
                   measured=(feats.vectors.nbytes + feats.regions.nbytes + feats.boxes.nbytes + feats.offsets.nbytes) / n)
        print(f"  {source} {name}: {n} images in {t:.1f} s = {n / t:.2f} images/s; {ex.dim}-d, "
              f"{row['proposals']:.0f} proposals per image, {fallbacks} fell back", flush=True)
        del ex, got, feats
    return rows


def print_extraction(rows: list[dict]) -> None:
    print(f"\n{'source':>6} {'network / layer':>34} | {'images/s':>8} {'s':>6} | {'dim':>5} {'proposals':>9} "
          f"{'fallbacks':>9} | {'stored KiB/image (measured)':>27}")
    for r in rows:
        if "missing" in r:
            what = r["missing"] if r["missing"].startswith("error") else "weights missing: " + r["missing"]
            print(f"{r['source']:>6} {r['name']:>34} | {what}")
            continue
        print(f"{r['source']:>6} {r['name']:>34} | {r['rate']:8.2f} {r['seconds']:6.1f} | {r['dim']:>5} "
              f"{r['proposals']:9.0f} {r['fallbacks']:>9} | {r['measured'] / 1024:27.1f}")


# ---------------------------------------------------------------------------------------------- storage

def print_storage(extraction: list[dict], grid_proposals: float | None) -> None:
    print("\n[2] storage per image (arithmetic): vector f32 (C,) + boxes f32 (P, 4) + regions f16 (P, C) "
          "+ offset i64; uncompressed npz, as the extract step writes it")
    print(f"{'what':>40} {'C':>5} {'P':>5} | {'vector B':>8} {'boxes B':>8} {'regions B':>10} | "
          f"{'total KiB':>9} | {'GB per 1M images':>16}")
    rows = []
    for layer, dim in LAYER_DIMS.items():
        if grid_proposals:
            rows.append((f"grid mobilenet_v2 {layer}", dim, grid_proposals))
        rows.append((f"grid mobilenet_v2 {layer}", dim, 300))
    rows.append(("rpn COCO FPN level (256-d)", COCO_FPN_DIM, COCO_PROPOSALS))
    for name, dim, prop in rows:
        total = stored_bytes(dim, prop)
        print(f"{name:>40} {dim:>5} {prop:5.0f} | {4 * dim:8.0f} {16 * prop:8.0f} {2 * prop * dim:10.0f} | "
              f"{total / 1024:9.1f} | {total * 1e6 / 1e9:16.1f}")
    for r in extraction:
        if "measured" in r:
            expect = stored_bytes(r["dim"], r["proposals"])
            print(f"  measured on the extraction ({r['name']}): {r['measured'] / 1024:.1f} KiB/image "
                  f"(arithmetic for its {r['proposals']:.1f} proposals: {expect / 1024:.1f})")


# ------------------------------------------------------------------------------- filtering and re-ranking

def nonneg(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    """Non-negative vectors with about half of the coordinates exactly zero (pooled post-ReLU-like)."""
    return np.maximum(rng.standard_normal(shape, dtype=np.float32), 0).astype(dtype)


class ProposalPool:
    """Stands in for the index's RegionFeatures: image i has the proposals of pool entry i mod distinct."""

    def __init__(self, boxes: np.ndarray, regions: np.ndarray):
        self.boxes, self.regions = boxes, regions

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        j = i % len(self.regions)
        return self.boxes[j], self.regions[j]


def database(vectors: np.ndarray, proposals: ProposalPool | None = None) -> RegionDatabase:
    """A RegionDatabase of synthetic image-wise vectors (and proposals), as RegionMethod.load makes it."""
    return RegionDatabase(vectors, proposals, {}, len(vectors))


def queries(q: np.ndarray) -> Queries:
    """Queries whose box, whole image and box region are all the vectors q."""
    return Queries([str(j) for j in range(len(q))], box=q, image=q, extra={"box_region": q})


def method_params(args) -> dict:
    """The frcnn search / rerank / expand parameters the method reads."""
    return {"search": {"query": "ls"}, "rerank": {"candidates": args.top},
            "expand": {"mode": "lqe", "neighbours": args.expand_top}}


def filter_rank(q: np.ndarray, d: np.ndarray, name: str = "cosine", alpha: float = ALPHA) -> Ranking:
    """The filtering step: RegionMethod.search (L2 both sides, dense similarity, stable sort of all)."""
    return METHOD.search(database(d), queries(q), {"search": {"query": "ls"}}, name, alpha)


def naive_rerank(q: np.ndarray, cand: np.ndarray, get, name: str) -> np.ndarray:
    """One query, image after image, one (1, C) x (C, P) product per pair; returns the sorted best scores."""
    best = np.empty(len(cand))
    for k, i in enumerate(cand):
        _, v = get(int(i))
        best[k] = sim.scores(q, v, name, ALPHA)[0].max()
    return best[np.argsort(-best, kind="stable")]


def naive_expand(q: np.ndarray, top: np.ndarray, get, name: str) -> np.ndarray:
    total, count = linalg.l2(q[None])[0], 1
    for i in top:
        _, v = get(int(i))
        s = sim.scores(q, v, name, ALPHA)[0]
        total = total + linalg.l2(np.asarray(v[int(np.argmax(s))], np.float64)[None])[0]
        count += 1
    return total / count


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        info = [i for i in info if "numpy" in i.get("filepath", "")] or info   # numpy's own, not scipy's copy
        return ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in info) or "unknown"
    except ImportError:
        return "unknown (no threadpoolctl)"


def blas_limit(threads: int):
    """A context limiting numpy's BLAS threads (0: as numpy starts, no limit)."""
    import contextlib

    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads, user_api="blas")


def bench_rerank(args, fr, fs, qr, db: RegionDatabase, name: str) -> dict:
    """Batched rerank and expansion step of the queries qr, and the naive loops on the first few, scaled."""
    top, k, nr, ns = args.top, args.expand_top, len(qr), args.naive_queries
    p, qs, get = method_params(args), queries(qr), db.proposals.image
    reranked, t_rr = timed(lambda: METHOD.rerank(db, qs, Ranking(fr, fs), p, name, ALPHA))
    rr_ranks, rr_scores = reranked.ranks, reranked.scores

    def expansion_step():   # expand over the top k best proposals, then re-rank the top again
        return METHOD.expand(db, qs, reranked, p, name, ALPHA)

    _, t_qe = timed(expansion_step)
    naive_scores, t_nrr = timed(lambda: [naive_rerank(qr[j], fr[j, :top], get, name) for j in range(ns)])
    diff = max(np.abs(naive_scores[j] - rr_scores[j, :top]).max() for j in range(ns))

    def naive_qe():
        for j in range(ns):
            e = naive_expand(qr[j], rr_ranks[j, :k], get, name)
            naive_rerank(e, rr_ranks[j, :top], get, name)

    _, t_nqe = timed(naive_qe)
    return dict(distinct=len(np.unique(fr[:, :top])), t_rr=t_rr, t_qe=t_qe, t_nrr=t_nrr * nr / ns,
                t_nqe=t_nqe * nr / ns, diff=diff, nr=nr)


def bench_search(args) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    nq, n, top, k = args.queries, args.database, args.top, args.expand_top
    nr = min(args.rerank_queries, nq)
    print(f"\n[3] filtering: {nq} queries x {n:,} database vectors (synthetic non-negative, ~50% zeros), "
          f"RegionMethod.search (L2, dense product, stable argsort of all {n:,}); numpy BLAS: {blas()}",
          flush=True)
    print(f"[4] re-ranking: {nr} of those queries, top {top} of their filtering ranking x {args.proposals} synthetic "
          f"float16 proposals per image ({args.distinct} distinct images' proposals, reused mod {args.distinct}); "
          f"expansion step = RegionMethod.expand (top {k}, then re-rank of the top {top}); naive baseline on "
          f"{args.naive_queries} queries, scaled x{nr / args.naive_queries:g}; numpy BLAS threads "
          f"{', '.join(str(b) if b else 'default' for b in args.blas_threads)}", flush=True)
    filt, rer = [], []
    for dim in args.dims:
        d = nonneg(rng, (n, dim))
        q = nonneg(rng, (nq, dim))
        pool = nonneg(rng, (args.distinct, args.proposals, dim), np.float16)
        xy = rng.uniform(0, 400, (args.distinct, args.proposals, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(20, 200, xy.shape).astype(np.float32)], axis=2)

        db = database(d, ProposalPool(boxes, pool))

        filter_rank(q[:8], d[:256], "cosine")   # warm-up: BLAS threads, page faults
        for name in SIMILARITIES:
            runs = [timed(lambda: filter_rank(q, d, name, ALPHA)) for _ in range(2)]  # best of 2
            first, t_all = runs[0][0], min(t for _, t in runs)
            ranks, scores = first.ranks, first.scores
            n_one = min(nq, args.single_queries)
            _, t_one = timed(lambda: [filter_rank(q[j:j + 1], d, name, ALPHA) for j in range(n_one)])
            filt.append(dict(dim=dim, name=name, qps=nq / t_all, t=t_all, qps_one=n_one / t_one))
            print(f"  filter {dim:>4}-d {name:>15}: {nq / t_all:9.1f} queries/s all at once ({t_all:.2f} s), "
                  f"{n_one / t_one:7.1f} queries/s one at a time", flush=True)

            fr, fs, qr = ranks[:nr], scores[:nr], q[:nr]
            for threads in args.blas_threads:
                with blas_limit(threads):
                    row = bench_rerank(args, fr, fs, qr, db, name)
                    row.update(dim=dim, name=name, blas=blas())
                rer.append(row)
                print(f"  rerank {dim:>4}-d {name:>15} (BLAS {row['blas']}): {nr / row['t_rr']:6.1f} queries/s "
                      f"({row['t_rr']:.2f} s; naive est. {row['t_nrr']:.1f} s, x{row['t_nrr'] / row['t_rr']:.1f}); "
                      f"expansion step {nr / row['t_qe']:6.1f} queries/s ({row['t_qe']:.2f} s; naive est. "
                      f"{row['t_nqe']:.1f} s, x{row['t_nqe'] / row['t_qe']:.1f}); {row['distinct']:,} distinct images "
                      f"in the top lists; max |score diff| vs naive {row['diff']:.1e}", flush=True)
        del d, q, pool, boxes, db
    return filt, rer


def print_search(args, filt: list, rer: list) -> None:
    print(f"\nfiltering: {args.queries} queries x {args.database:,} images")
    print(f"  (all at once: one search call, best of 2; one at a time: {args.single_queries} calls of one query, "
          f"each re-normalising the database as RegionMethod.search does)")
    print(f"{'dim':>5} {'similarity':>15} | {'queries/s (all at once)':>23} {'s':>6} | {'queries/s (one at a time)':>25}")
    for r in filt:
        print(f"{r['dim']:>5} {r['name']:>15} | {r['qps']:23.1f} {r['t']:6.2f} | {r['qps_one']:25.1f}")
    print(f"\nre-ranking: top {args.top} x {args.proposals} proposals; naive = one (1, C) x (C, {args.proposals}) product "
          f"per (query, image) pair, timed on {args.naive_queries} queries and scaled to {rer[0]['nr'] if rer else 0} "
          f"(estimate); ratio = naive / batched")
    print(f"{'dim':>5} {'similarity':>15} {'BLAS':>20} {'images':>6} | {'rerank q/s':>10} {'naive q/s':>9} {'ratio':>6} | "
          f"{'rerank+QE q/s':>13} {'naive q/s':>9} {'ratio':>6} | {'max|diff|':>9}")
    for r in rer:
        nr = r["nr"]
        print(f"{r['dim']:>5} {r['name']:>15} {r['blas']:>20} {r['distinct']:>6} | {nr / r['t_rr']:10.1f} {nr / r['t_nrr']:9.1f} "
              f"{r['t_nrr'] / r['t_rr']:6.1f} | {nr / r['t_qe']:13.1f} {nr / r['t_nqe']:9.1f} "
              f"{r['t_nqe'] / r['t_qe']:6.1f} | {r['diff']:9.1e}")
    print(f"  (images: distinct database images among the top-{args.top} lists; 'rerank+QE' is the expansion step "
          f"alone, run on the re-ranked lists: expand over the top {args.expand_top}, then rerank the top {args.top})")


def main() -> None:
    p = extract_params()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="photos to extract (default 24 on the CPU, 500 on CUDA)")
    ap.add_argument("--layers", nargs="+", default=list(LAYER_DIMS), help="mobilenet_v2 layers of the grid source")
    ap.add_argument("--batch-size", type=int, default=int(p["batch_size"]))
    ap.add_argument("--workers", type=int, default=int(p["workers"]))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--queries", type=int, default=500, help="filtering queries")
    ap.add_argument("--database", type=int, default=5000, help="database images")
    ap.add_argument("--dims", type=int, nargs="+", default=[1280, 256], help="vector dimensions for 3. and 4.")
    ap.add_argument("--single-queries", type=int, default=20, help="filtering queries run one at a time")
    ap.add_argument("--rerank-queries", type=int, default=20, help="re-ranked queries (the first of --queries)")
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--proposals", type=int, default=300, help="synthetic proposals per database image (4.)")
    ap.add_argument("--expand-top", type=int, default=5)
    ap.add_argument("--distinct", type=int, default=500, help="distinct images' synthetic proposals (4.)")
    ap.add_argument("--naive-queries", type=int, default=2, help="queries the naive baseline is timed on")
    ap.add_argument("--blas-threads", type=int, nargs="+", default=[0, 1],
                    help="numpy BLAS thread counts for re-ranking (threadpoolctl; 0: numpy's default, as the "
                         "pipeline runs; default: 0 1)")
    ap.add_argument("--skip-extraction", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke run (small sizes)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.quick:
        args.images = args.images or 4
        args.queries, args.database, args.distinct, args.single_queries = 50, 500, 50, 3
        args.rerank_queries, args.naive_queries = 10, 1
    args.images = args.images or (500 if device == "cuda" else 24)
    args.naive_queries = max(1, min(args.naive_queries, args.rerank_queries, args.queries))

    print(f"machine: {machine(device)}")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} (1 min), {load0[1]:.2f} (5 min) on {os.cpu_count()} CPUs", flush=True)
    start = time.perf_counter()
    extraction = [] if args.skip_extraction else bench_extraction(args, p, device)
    grid = [r["proposals"] for r in extraction if r["source"] == "grid" and "proposals" in r]
    filt, rer = bench_search(args)

    print("\n=== summary ===")
    if extraction:
        print_extraction(extraction)
    print_storage(extraction, grid[0] if grid else None)
    print_search(args, filt, rer)
    load1 = os.getloadavg()
    print(f"\nload average at end: {load1[0]:.2f} (1 min), {load1[1]:.2f} (5 min); total {time.perf_counter() - start:.0f} s")
    if load0[0] > 0.5 * os.cpu_count():
        print(f"note: other processes were using the CPU (load {load0[0]:.2f} at start on {os.cpu_count()} CPUs): "
              f"timings are noisy; one run, no repetitions")


if __name__ == "__main__":
    main()
