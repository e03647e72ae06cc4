"""What every benchmark prints about the machine it ran on, and the interleaved timer of the side-by-side
benchmarks (imported by the scripts beside it)."""

import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """CPU model, usable cores and the GPU (if torch sees one)."""
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = (f"GPU {torch.cuda.get_device_name(0)} "
           f"({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
           if torch.cuda.is_available() else "no GPU")
    return f"{cpu_model()}, {cores} usable CPUs ({os.cpu_count()} online), {gpu}"


def interleaved(variants: dict, rounds: int) -> dict:
    """Each callable of ``variants`` run once a round, the order reversed every other round so a drifting
    load hits all: {name: (median seconds, median per-round ratio of the first variant's seconds to its own)}."""
    import statistics
    import time

    names = list(variants)
    secs = {k: [] for k in names}
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            variants[k]()
            secs[k].append(time.perf_counter() - start)
    base = secs[names[0]]
    return {k: (statistics.median(v), statistics.median(b / s for b, s in zip(base, v))) for k, v in secs.items()}
