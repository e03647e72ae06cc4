"""Speed of local CNN feature extraction (blcf): images per second and peak memory, per backbone.

Runs ``features.cnn.extract_images`` -- decoding, resizing, the forward pass and the copy back, as
the pipeline's extract step does -- on real photos of ../shared/data/ukbench-500 (read in place),
at max_side 340 (the paper's setting, params-full.yaml's; --max-side to change), on whatever device
it finds (CUDA if present, else the CPU), for a few batch sizes x DataLoader worker counts x torch
intra-op thread counts. The configurations are interleaved round by round (the order reversed every
other round), so that a drifting load on a shared machine hits them all alike; each figure is the
median over the rounds, and each ratio to the baseline (params.yaml's batch_size and workers with
torch's default thread count; else the last configuration) is the median of the per-round ratios.
"net only" is the forward pass alone on a ready batch of the same size (no decoding, no
DataLoader). Each run starts its own DataLoader workers, as each extract shard does: with few images
their start-up weighs more than in the pipeline. A backbone whose weights are not in torchvision's
cache is reported as "weights missing", not a failure. Run from the repository root:

    python benchmarks/cnn_speed.py                         # CPU: under a minute idle, minutes when busy
    python benchmarks/cnn_speed.py --images 32 --rounds 5 --batch-sizes 1 2 4 8 16 --workers 0 --threads 1
    python benchmarks/cnn_speed.py --omp-wait-policy passive --workers 0 2
    python benchmarks/cnn_speed.py --device cuda --half    # GPU, float16
    python benchmarks/cnn_speed.py --quick                 # a few seconds

Peak memory: on the GPU torch.cuda.max_memory_allocated (reset before each configuration); on the
CPU the main process's peak RSS (resource.getrusage), reset before each configuration through
/proc/self/clear_refs where the kernel allows it (else the running peak, said so), and the largest
peak RSS of any DataLoader worker so far (RUSAGE_CHILDREN: a running maximum; forked workers share
the parent's pages, so it overstates what they add).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import yaml

from instance_search.errors import InstanceSearchError
from instance_search.features import backbones
from instance_search.features.cnn import Extractor, extract_images, resized_size
from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"
NOTES: set[str] = set()


def machine(device: str) -> str:
    import cv2
    import torch

    return (f"{hardware()}; running on {device}; "
            f"{platform.system()} {platform.release()}, python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}), opencv {cv2.__version__}")


def pipeline_defaults() -> dict:
    """batch_size and workers of params.yaml's blcf.extract (fallbacks 16 and 2); max_side is the
    paper's 340 (params-full.yaml's), not the demo's, whatever params.yaml says."""
    out = {"max_side": 340, "batch_size": 16, "workers": 2}
    try:
        ex = yaml.safe_load((REPO / "params.yaml").read_text())["blcf"]["extract"]
        out.update({k: int(ex[k]) for k in ("batch_size", "workers") if k in ex})
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return out


class PeakRss:
    """Peak RSS of this process (reset per configuration where /proc/self/clear_refs allows)."""

    def __init__(self):
        self.resettable = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.resettable:
            self._reset()

    @staticmethod
    def self_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    @staticmethod
    def children_mib() -> float:
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


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


def net_only(extractor: Extractor, size: tuple[int, int], n: int, batch_size: int) -> float:
    """Seconds for the forward passes alone over n images of ``size`` = (w, h), in batches."""
    import torch

    w, h = size
    batch = torch.randn(batch_size, 3, h, w, generator=torch.Generator().manual_seed(0))
    if extractor.device == "cuda":
        batch = batch.pin_memory()
    full, rest = divmod(n, batch_size)
    start = time.perf_counter()
    for _ in range(full):
        extractor.maps(batch)
    if rest:
        extractor.maps(batch[:rest])
    return time.perf_counter() - start


def bench_backbone(name: str, args, paths, dims, configs, baseline, rows: list) -> None:
    import torch

    missing = backbones.weight_file(name)
    if not missing.is_file():  # the pipeline's own check would raise InstanceSearchError here
        print(f"{name}: weights missing ({missing.name} not in {missing.parent}); skipped", flush=True)
        rows.append((name, None, f"{missing} (sha256 starts with {backbones.expected_hash_prefix(missing)})"))
        return
    try:
        ex = Extractor(name, device=args.device, half=args.half)
    except InstanceSearchError as exc:  # e.g. a corrupt weight file: reported, the others still run
        print(f"{name}: error: {exc}", flush=True)
        rows.append((name, None, f"error: {exc}"))
        return
    cuda = ex.device == "cuda"
    rss = PeakRss()
    sizes = {resized_size(w, h, args.max_side, ex.stride) for w, h in dims}
    size = max(sizes, key=lambda s: s[0] * s[1])  # ukbench: all 640x480 -> one size
    print(f"{name}: layer {ex.layer}, {ex.dim} channels, stride {ex.stride}, input {size[0]}x{size[1]}"
          f"{' (and %d other sizes)' % (len(sizes) - 1) if len(sizes) > 1 else ''}, "
          f"{'float16' if ex.half else 'float32'} on {ex.device}; model loaded: peak RSS {rss.self_mib():.0f} MiB",
          flush=True)
    default_threads = torch.get_num_threads()
    net_keys = sorted({(bs, th) for bs, _, th in configs})
    n, n_net = len(paths), min(len(paths), max(bs for bs, _ in net_keys))

    # warm-up: allocator, cuDNN/oneDNN kernel choice, first touch of the weights, page cache
    for bs, th in net_keys:
        torch.set_num_threads(th)
        extract_images(ex, paths[:min(n, 2 * bs)], dims[:min(n, 2 * bs)],
                       max_side=args.max_side, batch_size=bs, workers=0)
        net_only(ex, size, bs, bs)
    if cuda:
        torch.cuda.synchronize()

    times = {c: [] for c in configs}
    net_times = {k: [] for k in net_keys}
    peak = {c: 0.0 for c in configs}
    worker_peak = {c: 0.0 for c in configs}
    for r in range(args.rounds):
        for c in (configs if r % 2 == 0 else configs[::-1]):
            bs, workers, th = c
            torch.set_num_threads(th)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            rss.reset()
            start = time.perf_counter()
            out = extract_images(ex, paths, dims, max_side=args.max_side, batch_size=bs, workers=workers)
            times[c].append(time.perf_counter() - start)
            peak[c] = max(peak[c], torch.cuda.max_memory_allocated() / 2**20 if cuda else rss.self_mib())
            worker_peak[c] = rss.children_mib() if workers else 0.0
            del out
        for k in (net_keys if r % 2 == 0 else net_keys[::-1]):
            torch.set_num_threads(k[1])
            net_times[k].append(net_only(ex, size, n_net, k[0]))
            if cuda:
                torch.cuda.synchronize()
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    torch.set_num_threads(default_threads)
    for c in configs:
        bs, workers, th = c
        rate = [n / t for t in times[c]]
        ratio = statistics.median(b / t for b, t in zip(times[baseline], times[c])) if baseline in times else None
        rows.append((name, c, dict(rate=statistics.median(rate), lo=min(rate), hi=max(rate),
                                   net=statistics.median(n_net / t for t in net_times[(bs, th)]), ratio=ratio,
                                   peak=peak[c], worker=worker_peak[c])))
    if not cuda and not rss.resettable:
        NOTES.add("/proc/self/clear_refs is not writable here: CPU peaks are running maxima, not per configuration")
    del ex
    if cuda:
        torch.cuda.empty_cache()


def print_table(rows, baseline, n, rounds, cuda: bool) -> None:
    mem = "peak GPU MiB (allocated)" if cuda else "peak RSS MiB: main | largest worker"
    print()
    print(f"{n} images per run, median of {rounds} interleaved rounds (min-max beside it); ratio = baseline time /"
          f" time, median over rounds (baseline: batch {baseline[0]}, {baseline[1]} workers, {baseline[2]} torch"
          f" threads; > 1 is faster); net only = forward passes alone")
    print(f"{'backbone':>13} {'batch':>5} {'workers':>7} {'threads':>7} | {'images/s':>8} {'(min-max)':>13} | "
          f"{'net only':>8} | {'ratio':>5} | {mem}")
    for name, c, d in rows:
        if c is None:
            print(f"{name:>13} {'-':>5} {'-':>7} {'-':>7} | {d if d.startswith('error') else 'weights missing: ' + d}")
            continue
        bs, workers, th = c
        m = (f"{d['peak']:8.0f}" if cuda else
             f"{d['peak']:8.0f} | {d['worker']:6.0f}" if workers else f"{d['peak']:8.0f} |      -")
        r = f"{d['ratio']:5.2f}" if d["ratio"] is not None else "    -"
        print(f"{name:>13} {bs:>5} {workers:>7} {th:>7} | {d['rate']:8.1f} ({d['lo']:5.1f}-{d['hi']:5.1f}) | "
              f"{d['net']:8.1f} | {r} | {m}")


def main() -> None:
    defaults = pipeline_defaults()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None,
                    help="photos per run (default 16 on the CPU, 500 on CUDA; more than 500 repeat)")
    ap.add_argument("--backbones", nargs="+", default=list(backbones.BACKBONES),
                    choices=list(backbones.BACKBONES))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--half", action="store_true", help="float16 autocast (GPU only, as blcf.extract.half)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help=f"default: 1 and params.yaml's {defaults['batch_size']} on the CPU, 1 16 64 on CUDA")
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help=f"DataLoader worker counts (default: params.yaml's {defaults['workers']})")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch intra-op threads (default: 1 and torch's default on the CPU; torch's default on CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every configuration")
    ap.add_argument("--max-side", type=int, default=defaults["max_side"])
    ap.add_argument("--quick", action="store_true", help="4 images, 1 round, batch 1 and 4, 1 thread: a smoke run")
    ap.add_argument("--omp-wait-policy", choices=["active", "passive"], default=None,
                    help="set OMP_WAIT_POLICY before torch starts (libgomp's default spins: bad on a busy CPU)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    torch_threads = torch.get_num_threads()
    if args.quick:
        args.images, args.rounds = args.images or 4, 1
        args.batch_sizes = args.batch_sizes or [1, 4]
        args.threads = args.threads or [1]
    n = args.images or (500 if cuda else 16)
    batch_sizes = sorted(set(args.batch_sizes or ([1, 16, 64] if cuda else [1, defaults["batch_size"]])))
    workers = sorted(set(args.workers if args.workers is not None else [defaults["workers"]]))
    threads = sorted(set(args.threads or ([torch_threads] if cuda else [1, torch_threads])))
    configs = [(bs, w, th) for th in threads for w in workers for bs in batch_sizes]
    # the baseline: params.yaml's setting with torch's thread count when it is measured, else the last one
    baseline = (defaults["batch_size"], defaults["workers"], torch_threads)
    if baseline not in configs:
        baseline = configs[-1]
    paths, dims = image_list(n)
    print(f"machine: {machine(device)}")
    print(f"input: {n} photos of {UKBENCH} ({len(set(dims))} original size(s): "
          f"{', '.join(f'{w}x{h}' for w, h in sorted(set(dims)))}), max_side {args.max_side}; "
          f"batch sizes {batch_sizes} x workers {workers} x torch threads {threads}, {args.rounds} rounds")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} (1 min), {load0[1]:.2f} (5 min) on {os.cpu_count()} CPUs", flush=True)
    start = time.perf_counter()
    rows: list = []
    for name in args.backbones:
        bench_backbone(name, args, paths, dims, configs, baseline, rows)
    print_table(rows, baseline, n, args.rounds, cuda)
    for note in sorted(NOTES):
        print(f"note: {note}")
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} (1 min), {load1[1]:.2f} (5 min); total {time.perf_counter() - start:.0f} s")
    if not cuda and load0[0] > 0.5:
        print(f"note: other processes were using the CPU when this started (load {load0[0]:.2f} before any of this"
              f" benchmark's work): timings are noisy; the interleaved rounds keep the ratios fairer than the rates")


if __name__ == "__main__":
    main()
