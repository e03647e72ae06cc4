"""The CPU threads a step's numerical libraries use: one declared count (params ``compute.threads``),
applied by the step itself, so a step runs alike whichever tool started it.

Snakemake exports OMP_NUM_THREADS (and the like) set to a rule's ``threads``, scaled down to
``--cores``; DVC exports nothing. A step that relied on the environment thus ran on one core under
one tool and on all under the other, and oneDNN's convolutions (blcf, frcnn) and OpenBLAS's products
(the PCA-whitening) round differently with another thread count. :func:`apply` sets the count for
every library at once: the environment (read by torch, OpenMP and the BLAS when they load, and by
DataLoader workers), threadpoolctl (the BLAS and OpenMP runtimes already loaded), and the pools of
OpenCV, faiss and torch that the environment does not reach.
"""

from __future__ import annotations

import logging
import os
import sys

from .errors import InstanceSearchError

ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
       "NUMEXPR_NUM_THREADS")
_applied: dict = {"threads": None}


def available() -> int:
    """The CPUs this process may run on (a cgroup or Slurm allocation included), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve(value) -> int:
    """``compute.threads`` as a count: a positive integer, or ``all`` = :func:`available`."""
    if value == "all":
        return available()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise InstanceSearchError(f"compute.threads={value!r}: must be a positive integer or 'all'")


def apply(value) -> int:
    """Make every numerical library of this process (and of the processes it starts) use ``value`` threads."""
    n = resolve(value)
    for var in ENV:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import cv2

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # not its probing of CPU builds, in every step's log
    import faiss

    cv2.setNumThreads(n)
    faiss.omp_set_num_threads(n)
    _applied["threads"] = n
    if "torch" in sys.modules:
        sync_torch()
    return n


def sync_torch() -> None:
    """Give torch's intra-op pool the applied count. Called where a network is built: torch reads
    OMP_NUM_THREADS when it loads but caps it at the physical cores, so the environment alone is not enough."""
    if _applied["threads"] is not None:
        import torch

        torch.set_num_threads(_applied["threads"])


def in_use() -> dict[str, int]:
    """What the loaded libraries report now: {'blas': n, 'openmp': n, 'opencv': n, 'faiss': n, 'torch': n}."""
    from threadpoolctl import threadpool_info

    out = {}
    for lib in threadpool_info():
        kind = "openmp" if lib["user_api"] == "openmp" else "blas"
        out[kind] = max(out.get(kind, 0), lib["num_threads"])
    if "cv2" in sys.modules:
        out["opencv"] = sys.modules["cv2"].getNumThreads()
    if "faiss" in sys.modules:
        out["faiss"] = sys.modules["faiss"].omp_get_max_threads()
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    return out


def applied() -> int | None:
    """The count :func:`apply` set in this process, if any."""
    return _applied["threads"]
