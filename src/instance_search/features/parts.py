"""A dataset's extraction split into part jobs (``compute.parts``), gathered into the artifact one
job would have written, byte for byte.

Part i of n extracts a run of whole units (a feature shard, or one image): units are dealt out
evenly and in order, so every image is computed as it would be in one job (the same shard, the same
batches) and gathering only concatenates. Each part folder holds the method's arrays for its images
and ``part.json``: which part, which images, and the extraction's config (a gather refuses parts of
another config, or a set of parts that does not cover the images exactly once).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InstanceSearchError
from ..io import read_json, write_json

MANIFEST = "part.json"


def check(part: tuple[int, int]) -> tuple[int, int]:
    i, n = part
    if not 0 <= i < n:
        raise InstanceSearchError(f"part {i} of {n}: expected 0 <= part < parts")
    return i, n


def image_range(n_images: int, unit: int, part: tuple[int, int] | None) -> range:
    """The images of ``part`` (i, n): units of ``unit`` images dealt out evenly; all of them for None."""
    if part is None:
        return range(n_images)
    i, n = check(part)
    units = -(-n_images // unit)
    return range(min(n_images, i * units // n * unit), min(n_images, (i + 1) * units // n * unit))


def write_manifest(folder: str | os.PathLike, part: tuple[int, int], images: range, config: dict, **extra) -> None:
    write_json(Path(folder) / MANIFEST, {"part": list(part), "images": [images.start, images.stop], "config": config,
                                         **extra})


def read_manifests(folders: list[str | os.PathLike], n_images: int) -> list[dict]:
    """The parts' manifests in part order, checked: one config, parts 0..n-1, images covered once."""
    if not folders:
        raise InstanceSearchError("no parts to gather; run the extract_part jobs first")
    found = []
    for folder in folders:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise InstanceSearchError(f"{folder}: not a finished extraction part (no {MANIFEST}); re-run its job")
        found.append({**read_json(path), "folder": Path(folder)})
    found.sort(key=lambda m: m["part"][0])
    n = found[0]["part"][1]
    if [m["part"] for m in found] != [[i, n] for i in range(n)]:
        raise InstanceSearchError(f"{found[0]['folder'].parent}: parts {[m['part'] for m in found]} are not 0..{n - 1} "
                                  f"of {n}; re-run the extraction's part jobs")
    if any(m["config"] != found[0]["config"] for m in found):
        raise InstanceSearchError(f"{found[0]['folder'].parent}: parts extracted with different settings; re-run them")
    stops = [0] + [m["images"][1] for m in found]
    if [m["images"][0] for m in found] != stops[:-1] or stops[-1] != n_images:
        raise InstanceSearchError(f"{found[0]['folder'].parent}: the parts do not cover the {n_images} images once; "
                                  "re-run the extraction's part jobs")
    return found
