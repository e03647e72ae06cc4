"""The versions of the libraries that decide the bytes the pipeline writes.

The same code and params give other features, vocabularies and rankings under another numpy, OpenCV,
Pillow or torch (a JPEG encoder, a convolution's rounding): requirements.lock pins them for the pipeline,
and each step's log and each index's manifest record them, so that an index queried under other
versions says which differ (a warning: its scores may differ slightly, it is not wrong).
"""

from __future__ import annotations

import logging
import os
import re
from functools import cache
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# PyPI names; the order is the one logs and manifests show
BYTE_DECIDING = ("numpy", "scipy", "opencv-python-headless", "pillow", "torch", "torchvision", "faiss-cpu",
                 "scikit-learn", "scikit-image")


def installed() -> dict[str, str]:
    """{package: version} of :data:`BYTE_DECIDING` in this environment ("-" where one is missing)."""
    found = {}
    for name in BYTE_DECIDING:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def line() -> str:
    """One log line's worth: ``numpy 2.4.6, scipy 1.17.1, ...``."""
    return ", ".join(f"{name} {version}" for name, version in installed().items())


def differences(recorded: dict[str, str]) -> list[str]:
    """``"<package> <recorded> (built) vs <here> (here)"`` for each recorded package whose version here differs."""
    here = installed()
    return [f"{name} {version} (built) vs {here.get(name, '-')} (here)"
            for name, version in sorted(recorded.items()) if here.get(name, "-") != version]


@cache  # once per index folder and set of differences, however often a server reloads it
def warn_if_built_elsewhere(what: str, recorded: tuple[tuple[str, str], ...]) -> None:
    diff = differences(dict(recorded))
    if diff:
        log.warning("%s was built under other library versions, so its scores may differ slightly from a "
                    "rebuild here: %s", what, "; ".join(diff))


def normalise(name: str) -> str:
    """A package name as PEP 503 compares them: ``OpenCV_python.headless`` -> ``opencv-python-headless``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | os.PathLike) -> dict[str, str]:
    """{package: version} of a requirements lock (``name==version`` lines, names normalised)."""
    pins = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        text = raw.split("#", 1)[0].strip()
        if "==" in text and not text.startswith("-"):
            name, version = text.split("==", 1)
            pins[normalise(name.split("[", 1)[0])] = version.split(";", 1)[0].split()[0].rstrip("\\")
    return pins


def environment(exclude: tuple[str, ...] = ("instance-search",)) -> dict[str, str]:
    """{package: version} of every distribution installed in this environment (names normalised)."""
    found = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {name: version for name, version in found.items() if name not in exclude}


def lock_differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per package where an environment is not the lock: missing, at another version, or extra."""
    out = []
    for name in sorted(set(locked) | set(present)):
        want, have = locked.get(name), present.get(name)
        if have is None:
            out.append(f"{name}: locked at {want}, not installed")
        elif want is None:
            out.append(f"{name}: {have} installed, not in the lock")
        elif want != have:
            out.append(f"{name}: locked at {want}, {have} installed")
    return out
