"""One instruction set for the numerical libraries' CPU kernels, so the bytes do not follow the CPU model.

OpenCV, faiss, torch and oneDNN each pick their kernels by what the CPU offers (SSE4, AVX2, AVX-512),
and the kernels round differently: on the demo, an AVX-512 machine and an AVX2 one gave other SIFT and
XFeat features (OpenCV's dispatched SIFT and resize) and other blcf words (faiss's k-means), so the
golden numbers and dvc.lock held only on the CPU kind that wrote them (docs/reproducibility.md).
:func:`pin` caps every library at AVX2, which the x86-64 servers of the last decade all have. It only
sets environment variables, which the libraries read when they load: it must run before the first
import of cv2, faiss or torch in the process (``import instance_search`` does it), and a value already
in the environment is kept, so a user can lift the cap (e.g. ``FAISS_OPT_LEVEL=AVX512``).
"""

from __future__ import annotations

import os

CAPS = {"FAISS_OPT_LEVEL": "AVX2",        # faiss: load its AVX2 build, never the AVX-512 one
        "ATEN_CPU_CAPABILITY": "avx2",    # torch's own kernels
        "ONEDNN_MAX_CPU_ISA": "AVX2",     # torch's convolutions (oneDNN)
        "OPENCV_IPP": "avx2"}             # OpenCV's Intel IPP kernels
# OpenCV's dispatched AVX-512 code paths (its names); only those the CPU has are named, since OpenCV
# warns on stderr about every feature it is asked to disable and cannot find.
_OPENCV_AVX512 = {"avx512f": "AVX512F", "avx512cd": "AVX512CD", "avx512bw": "AVX512BW", "avx512dq": "AVX512DQ",
                  "avx512vl": "AVX512VL", "avx512ifma": "AVX512IFMA", "avx512vbmi": "AVX512VBMI",
                  "avx512_vbmi2": "AVX512VBMI2", "avx512_vnni": "AVX512VNNI", "avx512_bitalg": "AVX512BITALG",
                  "avx512_vpopcntdq": "AVX512VPOPCNTDQ"}
_OPENCV_GROUPS = ("AVX512-COMMON", "AVX512-SKX", "AVX512-CLX", "AVX512-ICL")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def opencv_disabled(flags: set[str]) -> str:
    """OPENCV_CPU_DISABLE's value: the AVX-512 features this CPU has ("" without AVX-512)."""
    if "avx512f" not in flags:
        return ""
    return ",".join([name for flag, name in _OPENCV_AVX512.items() if flag in flags] + list(_OPENCV_GROUPS))


def pin() -> None:
    """Cap the libraries at AVX2 (environment values already set are kept)."""
    for key, value in CAPS.items():
        os.environ.setdefault(key, value)
    disabled = opencv_disabled(cpu_flags())
    if disabled:
        os.environ.setdefault("OPENCV_CPU_DISABLE", disabled)
