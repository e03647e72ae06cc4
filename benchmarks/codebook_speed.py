"""Speed of the blcf vocabulary: faiss k-means (vocabulary.train) against scikit-learn's MiniBatchKMeans
at equal iterations, and nearest-word assignment (vocabulary.Assigner), at the paper's scale.

Input: N = 1M random but structured D = 512 float32 features (a seeded mixture of 2000 Gaussians,
rectified and L2-normalised like CNN local features), k = 25,000 words. On a CPU one full Lloyd
iteration of 1M x 25k x 512 is ~26 TFLOP (minutes on two cores), so both sides run a fixed small
number of iterations (--iterations, default 2) and the time of 20 iterations (blcf.codebook
.iterations) is extrapolated from the per-iteration times, labelled as such:

- faiss: vocabulary.train(x, k, iterations, seed) as the pipeline calls it (random initial centres,
  no subsampling at 1M / 25k); per-iteration times from faiss's own iteration statistics.
- scikit-learn: MiniBatchKMeans(k, init="random", n_init=1, max_iter=iterations, batch_size=4096,
  tol=0, max_no_improvement=None, compute_labels=False): the same number of passes over the data
  (max_iter counts passes: iterations * N / batch_size steps), no early stopping, no final labelling
  pass. init="random" because k-means++ on 25k centres costs k sequential passes over its init
  sample: prohibitive on its own. Step times come from its verbose per-step lines; its one-off init
  (3k-point init sample and an inertia evaluation on it) is reported apart. If the run would exceed
  --sklearn-cap minutes (estimated from a pilot run on a subsample), it runs on a subsample and the
  per-pass time is scaled linearly to N (cost per step is fixed, steps per pass are N / batch_size),
  which the output says.
- assignment: vocabulary.Assigner over the learned centres: faiss IndexFlatL2 on the CPU; torch
  matrix products on CUDA too when a GPU is visible. Rate in features per second.

Memory: the features take N * D * 4 bytes (2 GiB at 1M x 512); neither library copies them. Run from
the repository root:

    python benchmarks/codebook_speed.py --quick            # seconds: 50k x 128, k = 1000
    python benchmarks/codebook_speed.py                    # 1M x 512, k = 25k, 2 iterations: ~1 h on 2 busy cores
    python benchmarks/codebook_speed.py --iterations 1 --assign-n 200000 --sklearn-cap 9   # 28 min there
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import time

import faiss
import numpy as np
import sklearn
from sklearn.cluster import MiniBatchKMeans

from instance_search.retrieval import vocabulary
from machine import cpu_model  # benchmarks/machine.py, beside this script

SEED = 0


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu_model()}, {cores} usable CPUs, {mem:.0f} GiB RAM, {gpu}; {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__} "
            f"({faiss.omp_get_max_threads()} threads), scikit-learn {sklearn.__version__}, torch {torch.__version__}")


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def busy(cpu: float, wall: float) -> str:
    return f"{cpu:.0f} s CPU = {cpu / wall:.2f} of {cores()} cores busy"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def features(n: int, dim: int, seed: int, components: int = 2000, chunk: int = 1 << 16) -> np.ndarray:
    """(n, dim) float32: a seeded Gaussian mixture, rectified (ReLU, as conv features) and L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, dim), dtype=np.float32)
    weights = rng.dirichlet(np.full(components, 0.5))  # unequal component sizes, as visual words have
    spread = rng.uniform(0.3, 1.0, components).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        z = rng.choice(components, hi - lo, p=weights)
        part = centres[z] + spread[z, None] * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        np.maximum(part, 0, out=part)
        part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        x[lo:hi] = part
    return x


class _Capture(faiss.Kmeans):
    """faiss.Kmeans that remembers its last instance (for the per-iteration statistics)."""

    last = None

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _Capture.last = self


def faiss_train(x: np.ndarray, k: int, iterations: int):
    """vocabulary.train, timed; returns (centroids, total seconds, per-iteration seconds)."""
    original = faiss.Kmeans
    faiss.Kmeans = _Capture  # vocabulary.train looks faiss.Kmeans up at call time
    try:
        start = time.perf_counter()
        centroids = vocabulary.train(x, k, iterations, SEED)
        total = time.perf_counter() - start
    finally:
        faiss.Kmeans = original
    stats = _Capture.last.iteration_stats  # cumulative seconds since the start of the loop
    cumulative = [s["time"] for s in stats]
    per_iter = np.diff([0.0] + cumulative)
    return centroids, total, per_iter, [s["obj"] for s in stats]


class _StepClock(io.TextIOBase):
    """Stands in for stdout during a verbose MiniBatchKMeans fit; stamps its lines."""

    def __init__(self):
        self.init_done = None
        self.steps: list[float] = []
        self.buf = ""

    def write(self, s: str) -> int:
        now = time.perf_counter()
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.startswith("Minibatch step"):
                self.steps.append(now)
            elif line.startswith("Inertia for init"):
                self.init_done = now
        return len(s)


def sklearn_fit(x: np.ndarray, k: int, passes: int, batch_size: int) -> dict:
    """One MiniBatchKMeans fit of ``passes`` passes over x, its time split into init and steps."""
    km = MiniBatchKMeans(n_clusters=k, init="random", n_init=1, max_iter=passes, batch_size=batch_size, tol=0.0,
                         max_no_improvement=None, compute_labels=False, random_state=SEED, verbose=1)
    clock = _StepClock()
    start = time.perf_counter()
    with contextlib.redirect_stdout(clock):
        km.fit(x)
    total = time.perf_counter() - start
    init_done = clock.init_done or start
    n_steps = len(clock.steps)
    step_time = (clock.steps[-1] - init_done) / n_steps if n_steps else float("nan")
    return dict(total=total, init=init_done - start, steps=n_steps, step=step_time,
                centroids=np.ascontiguousarray(km.cluster_centers_, dtype=np.float32))


def distortion(centroids: np.ndarray, x: np.ndarray) -> float:
    """Mean squared distance of x to its nearest centroid (k-means objective per feature)."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return float(index.search(x, 1)[0].mean())


def assign_rate(centroids: np.ndarray, x: np.ndarray, device: str) -> tuple[float, float]:
    """(features per second, seconds) of vocabulary.Assigner on ``device``; CUDA is warmed up first."""
    a = vocabulary.Assigner(centroids, device)
    if device != "cpu":
        import torch

        a(x[: min(len(x), a.batch)])
        torch.cuda.synchronize()
    start = time.perf_counter()
    a(x)
    t = time.perf_counter() - start
    return len(x) / t, t


def fmt_s(t: float) -> str:
    return f"{t:.1f} s" if t < 120 else f"{t:.0f} s ({t / 60:.1f} min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="features")
    ap.add_argument("--k", type=int, default=25_000, help="words")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=2, help="k-means iterations = MiniBatchKMeans passes")
    ap.add_argument("--extrapolate", type=int, default=20, help="iterations the extrapolated times are for")
    ap.add_argument("--batch-size", type=int, default=4096, help="MiniBatchKMeans batch size")
    ap.add_argument("--sklearn-cap", type=float, default=15.0,
                    help="minutes: above this (estimated), scikit-learn runs on a subsample, scaled linearly")
    ap.add_argument("--assign-n", type=int, default=None, help="features assigned (default: --n)")
    ap.add_argument("--eval-n", type=int, default=20_000, help="features the mean squared distance is measured on")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--quick", action="store_true", help="50k x 128-d, k = 1000: a smoke run (seconds)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.k, args.dim = 50_000, 1000, 128
    n, k, dim, iters = args.n, args.k, args.dim, args.iterations
    n_assign = min(args.assign_n or n, n)
    if n < k:
        raise SystemExit(f"--n {n} is smaller than --k {k}")

    import torch

    print(f"machine: {machine()}")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} (1 min), {load0[1]:.2f} (5 min) on {os.cpu_count()} CPUs"
          + ("  -- other jobs share the CPU: timings are noisy" if load0[0] > 0.5 else ""))
    gflop = 2.0 * n * k * dim / 1e9
    print(f"input: N={n:,} x D={dim} float32 ({n * dim * 4 / 2**30:.2f} GiB), k={k:,} words, {iters} iteration(s); "
          f"one Lloyd iteration = {gflop:,.0f} GFLOP of distance products (2 N k D)", flush=True)

    start = time.perf_counter()
    x = features(n, dim, SEED)
    print(f"features generated in {time.perf_counter() - start:.1f} s; peak RSS {peak_rss_gib():.2f} GiB", flush=True)

    # faiss
    c0 = cpu_seconds()
    centroids, f_total, f_iter, f_obj = faiss_train(x, k, iters)
    f_cpu = cpu_seconds() - c0
    f_setup = f_total - float(np.sum(f_iter))
    f_mean = float(np.mean(f_iter))
    x_eval = x[:: max(1, n // args.eval_n)][: args.eval_n]
    f_dist = distortion(centroids, x_eval)
    print(f"faiss k-means (vocabulary.train): {iters} iteration(s) in {fmt_s(f_total)} "
          f"[per iteration: {', '.join(f'{t:.1f}' for t in f_iter)} s; outside faiss's loop {f_setup:.1f} s; "
          f"{busy(f_cpu, f_total)}; "
          f"{gflop / f_mean:.0f} GFLOP/s]; mean squared distance on {len(x_eval):,} of the features {f_dist:.4f}; "
          f"peak RSS {peak_rss_gib():.2f} GiB",
          flush=True)
    f_extra = f_setup + args.extrapolate * f_mean

    # scikit-learn
    s_extra = None
    if not args.skip_sklearn:
        steps_per_pass = n / args.batch_size
        pilot_n = min(n, max(args.batch_size * 8, 3 * k + args.batch_size))
        c0 = cpu_seconds()
        pilot = sklearn_fit(x[:pilot_n], k, 1, args.batch_size)
        pilot["cpu"] = cpu_seconds() - c0
        est = pilot["init"] + iters * steps_per_pass * pilot["step"]
        print(f"scikit-learn pilot on {pilot_n:,} features: init {pilot['init']:.1f} s, {pilot['step'] * 1e3:.0f} ms per"
              f" {args.batch_size}-feature step -> full run estimated at {fmt_s(est)}", flush=True)
        if est <= args.sklearn_cap * 60:
            sub = n
        else:
            budget_steps = (args.sklearn_cap * 60 - pilot["init"]) / pilot["step"]
            sub = int(min(n, max(pilot_n, budget_steps / iters * args.batch_size)))
            sub = max(sub - sub % args.batch_size, pilot_n)
        if sub == pilot_n and iters == 1:
            s = pilot
        else:
            c0 = cpu_seconds()
            s = sklearn_fit(x[:sub], k, iters, args.batch_size)
            s["cpu"] = cpu_seconds() - c0
        s_pass_measured = s["step"] * (sub / args.batch_size)
        s_pass = s["step"] * steps_per_pass  # scaled to N when sub < N
        s_total = s["init"] + iters * s_pass
        scaled = sub < n
        label = (f"measured on a subsample of {sub:,} features ({s['steps']} steps) because the full run was"
                 f" estimated above --sklearn-cap {args.sklearn_cap:g} min, then scaled linearly to N={n:,}"
                 if scaled else f"{s['steps']} steps measured")
        print(f"scikit-learn MiniBatchKMeans: {iters} pass(es) of {steps_per_pass:.0f} steps {'would take' if scaled else 'took'}"
              f" {fmt_s(s_total)} [init {s['init']:.1f} s, {s['step'] * 1e3:.0f} ms per step, per pass"
              f" {fmt_s(s_pass)}{f' (measured pass over the subsample: {fmt_s(s_pass_measured)})' if scaled else ''};"
              f" {gflop / s_pass:.0f} GFLOP/s; {busy(s['cpu'], s['total'])}]; {label}; peak RSS {peak_rss_gib():.2f} GiB",
              flush=True)
        s_dist = distortion(s["centroids"], x_eval)
        print(f"  quality: mean squared distance on the same {len(x_eval):,} features {s_dist:.4f} (faiss {f_dist:.4f})"
              + (f"; not comparable: scikit-learn saw {iters} pass(es) over a {sub:,} subsample only" if scaled else ""))
        s_extra = s["init"] + args.extrapolate * s_pass
        s_share = s["cpu"] / s["total"]
        print(f"ratio at equal iterations ({iters}): scikit-learn / faiss = {s_total / f_total:.2f} "
              f"(per iteration, init excluded: {s_pass / f_mean:.2f})")

    # assignment
    xa = x[:n_assign]
    c0 = cpu_seconds()
    rate, t = assign_rate(centroids, xa, "cpu")
    a_cpu = cpu_seconds() - c0
    print(f"assignment (vocabulary.Assigner, faiss CPU): {n_assign:,} features -> {k:,} words in {fmt_s(t)}: "
          f"{rate:,.0f} features/s ({2.0 * n_assign * k * dim / 1e9 / t:.0f} GFLOP/s; {busy(a_cpu, t)})", flush=True)
    if torch.cuda.is_available():
        rate_g, t_g = assign_rate(centroids, xa, "cuda")
        print(f"assignment (vocabulary.Assigner, torch CUDA {torch.cuda.get_device_name(0)}): {fmt_s(t_g)}: "
              f"{rate_g:,.0f} features/s, x{rate_g / rate:.0f} the CPU")

    print()
    print(f"EXTRAPOLATED to {args.extrapolate} iterations (from the per-iteration times above, not run):")
    print(f"  faiss k-means: {fmt_s(f_extra)}  (outside the loop + {args.extrapolate} x {f_mean:.1f} s per iteration)")
    if s_extra is not None:
        print(f"  scikit-learn MiniBatchKMeans: {fmt_s(s_extra)}  (init + {args.extrapolate} x {s_pass:.1f} s per pass)"
              f"  -> x{s_extra / f_extra:.2f} faiss")
    shares = [f_cpu / f_total] + ([s_share] if s_extra is not None else [])
    if min(shares) < 0.9 * cores():
        scale = [sh / cores() for sh in shares]
        print(f"  this process had {' and '.join(f'{sh:.2f}' for sh in shares)} of {cores()} cores on average"
              f" (shared CPU); with all {cores()} cores to itself, assuming perfect scaling (CPU time / cores: an"
              f" optimistic estimate, not measured): faiss {fmt_s(f_extra * scale[0])}"
              + (f", scikit-learn {fmt_s(s_extra * scale[1])}" if s_extra is not None else ""))
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} (1 min); total {fmt_s(time.perf_counter() - start)}; "
          f"peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
