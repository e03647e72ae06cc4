"""Adapter for the Oxford Buildings ground-truth format (also Paris6k, Sculptures6k, the synthetic set).

On disk: a folder of ``*.jpg`` images (Paris: one sub-folder per landmark) and a folder of ground-truth
files per query ``<q>_query.txt`` (one line ``<image> x1 y1 x2 y2``; Oxford prefixes the image name
with ``oxc1_``) and ``<q>_good.txt``, ``<q>_ok.txt``, ``<q>_junk.txt`` (one image name per line, no
extension). Positives are good + ok; junk is ignored by the protocol.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

import cv2

from .. import io
from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Image, Query, check_counts

log = logging.getLogger(__name__)

QUERY_PREFIX = "oxc1_"
LISTS = ("good", "ok", "junk")
BOX_TOLERANCE = 1.0  # pixels a box may overshoot its image (float rounding in the official files)


def _image_size(path: Path) -> tuple[int, int]:
    # A full (greyscale) decode: it is what rejects truncated or corrupt files with a clear error.
    h, w = io.read_image(path, cv2.IMREAD_GRAYSCALE).shape[:2]
    return w, h


def index_images(images_dir: str | os.PathLike, skip: Iterable[str] = ()) -> dict[str, Path]:
    """``{name: path}`` of every ``*.jpg`` under ``images_dir`` (any depth, sorted by relative path), minus
    the names in ``skip``; the name is the file stem and must be unique. Nothing is decoded yet."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InstanceSearchError(f"{root}: image folder not found; download or generate the dataset first")
    skip = set(skip)
    paths = sorted(root.rglob("*.jpg"), key=lambda p: p.relative_to(root).as_posix())
    kept = [p for p in paths if p.stem not in skip]
    if len(paths) != len(kept):
        log.info("%s: left out %d known-corrupt images on purpose (skip list)", root, len(paths) - len(kept))
    if not kept:
        raise InstanceSearchError(f"{root}: no .jpg images found; check the dataset's images folder")
    seen: dict[str, Path] = {}
    for p in kept:
        if p.stem in seen:
            raise InstanceSearchError(f"{p}: image name {p.stem} also used by {seen[p.stem]}; names must be unique")
        seen[p.stem] = p
    return seen


def describe_images(root: str | os.PathLike, named_paths: Iterable[tuple[str, Path]]) -> list[Image]:
    """Decode each image (in parallel) for its size; the first unreadable one is a one-line error."""
    root = Path(root)
    named_paths = list(named_paths)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV decodes without the GIL
        sizes = list(pool.map(_image_size, (p for _, p in named_paths)))
    return [Image(name=name, path=p.relative_to(root).as_posix(), width=w, height=h)
            for (name, p), (w, h) in zip(named_paths, sizes)]


def scan_images(images_dir: str | os.PathLike, skip: Iterable[str] = ()) -> list[Image]:
    """Every ``*.jpg`` under ``images_dir`` (sorted by relative path) except the names in ``skip``."""
    return describe_images(images_dir, index_images(images_dir, skip).items())


def _parse_query_line(path: Path) -> tuple[str, tuple[float, float, float, float]]:
    lines = [(n, line.split()) for n, line in enumerate(_read_lines(path), start=1) if line.strip()]
    if not lines:
        raise InstanceSearchError(f"{path}: empty query file; expected one line '<image> x1 y1 x2 y2'")
    if len(lines) > 1:
        raise InstanceSearchError(f"{path}: line {lines[1][0]}: a query file holds one line '<image> x1 y1 x2 y2'")
    number, fields = lines[0]
    try:
        if len(fields) != 5:
            raise ValueError
        box = tuple(float(v) for v in fields[1:])
    except ValueError:
        raise InstanceSearchError(
            f"{path}: line {number}: expected '<image> x1 y1 x2 y2', got {' '.join(fields)!r}; fix the file") from None
    name = fields[0]
    return (name[len(QUERY_PREFIX):] if name.startswith(QUERY_PREFIX) else name), box


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InstanceSearchError(f"{path}: ground-truth file missing; restore the dataset's ground-truth folder")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InstanceSearchError(f"{path}: not a text file; restore the dataset's ground-truth folder") from None


def clip_box(path: str | os.PathLike, box, image: Image) -> tuple[float, float, float, float]:
    """Clip an overshoot of up to BOX_TOLERANCE pixels; a box further out, or empty, is an error."""
    w, h, t = float(image.width), float(image.height), BOX_TOLERANCE
    x1, y1, x2, y2 = (float(v) for v in box)
    cx1, cy1, cx2, cy2 = min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)
    if min(x1, y1) < -t or x2 > w + t or y2 > h + t or not (cx1 < cx2 and cy1 < cy2):
        raise InstanceSearchError(
            f"{path}: box {x1:g} {y1:g} {x2:g} {y2:g} is empty or not inside {image.name} "
            f"({image.width}x{image.height}); fix the box")
    return cx1, cy1, cx2, cy2


def _read_list(path: Path, index: dict[str, int], skip: set[str]) -> tuple[int, ...]:
    ids = set()
    for line in _read_lines(path):
        name = line.strip()
        name = name[:-4] if name.lower().endswith(".jpg") else name
        if not name or name in skip:  # known-corrupt images are left out of the lists as well
            continue
        if name not in index:
            raise InstanceSearchError(f"{path}: image {name} is not in the database; fix the list or the image folder")
        ids.add(index[name])
    return tuple(sorted(ids))


def load_oxford(name: str, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
                skip: Iterable[str] = (), expect: Mapping[str, int] | None = None) -> GroundTruth:
    """Parse an Oxford-format dataset into the normalised ground truth (database = all its images).

    ``skip``: image names left out on purpose (known-corrupt files), from the lists as well.
    ``expect``: published counts to check (:data:`groundtruth.COUNT_KEYS`); None checks nothing.
    """
    skip = set(skip)
    images = scan_images(images_dir, skip)
    index = {im.name: i for i, im in enumerate(images)}
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InstanceSearchError(f"{gt_dir}: ground-truth folder not found; download or generate the dataset first")
    query_files = sorted(gt_dir.glob("*_query.txt"))
    if not query_files:
        raise InstanceSearchError(f"{gt_dir}: no *_query.txt files; check the dataset's groundtruth folder")
    queries = []
    for qfile in query_files:
        qname = qfile.name[: -len("_query.txt")]
        image_name, box = _parse_query_line(qfile)
        if image_name not in index:
            raise InstanceSearchError(f"{qfile}: query image {image_name} is not in {images_dir}; fix the file or the image folder")
        image = index[image_name]
        lists = {kind: _read_list(gt_dir / f"{qname}_{kind}.txt", index, skip) for kind in LISTS}
        if not lists["good"] and not lists["ok"]:
            raise InstanceSearchError(
                f"{gt_dir / (qname + '_good.txt')}: query {qname} has no positive image (its good and ok lists "
                f"are empty); list its positives or remove the query")
        queries.append(Query(name=qname, image=image, box=clip_box(qfile, box, images[image]), **lists))
    gnd = GroundTruth(dataset=name, root=Path(images_dir).as_posix(), images=images, n_database=len(images),
                      queries=queries)
    gnd.validate(str(gt_dir))
    check_counts(gnd, expect, str(gt_dir))
    log.info("%s: %d images, %d queries", name, len(images), len(queries))
    return gnd
