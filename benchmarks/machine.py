"""What every benchmark prints about the machine it ran on (imported by the scripts beside it)."""

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
