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
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

import cv2

from .. import io
from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Image, Query, check_expected

log = logging.getLogger(__name__)

QUERY_PREFIX = "oxc1_"
LISTS = ("good", "ok", "junk")
BOX_TOLERANCE = 1.0  # pixels a box may overshoot its image (float rounding in the official files)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared in lower case: .JPG from a camera is an image too
MAX_LISTED = 10  # unreadable files named in one message; the rest are counted


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def strip_image_suffix(name: str) -> str:
    """``a.jpg``, ``a.JPG``, ``a.png`` -> ``a`` (lists name images with or without the extension)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_size(path: Path) -> tuple[int, int]:
    # A full (greyscale) decode: it is what rejects truncated or corrupt files with a clear error.
    h, w = io.read_image(path, cv2.IMREAD_GRAYSCALE).shape[:2]
    return w, h


def _probe(path: Path) -> tuple[int, int] | io.UnreadableImage:
    try:
        return _image_size(path)
    except io.UnreadableImage as exc:
        return exc


def index_images(images_dir: str | os.PathLike, skip: Iterable[str] = ()) -> dict[str, Path]:
    """``{name: path}`` of every image (``.jpg``, ``.jpeg``, ``.png``, any case) under ``images_dir`` (any
    depth, sorted by relative path), minus the names in ``skip``; the name is the file stem and must be
    unique. Nothing is decoded yet."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InstanceSearchError(f"{root}: image folder not found; download or generate the dataset first")
    skip = set(skip)
    paths = sorted((p for p in root.rglob("*") if is_image_file(p) and p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    kept = [p for p in paths if p.stem not in skip]
    if len(paths) != len(kept):
        log.info("%s: left out %d known-corrupt images on purpose (skip list)", root, len(paths) - len(kept))
    if not kept:
        raise InstanceSearchError(f"{root}: no images (.jpg, .jpeg, .png) found; check the dataset's images folder")
    seen: dict[str, Path] = {}
    for p in kept:
        if p.stem in seen:
            raise InstanceSearchError(f"{p}: image name {p.stem} also used by {seen[p.stem]}; names must be unique")
        seen[p.stem] = p
    return seen


def inside_root(root: Path, path: str | os.PathLike, source: str | os.PathLike) -> Path:
    """``root / path`` for a relative path that stays inside ``root``; else one line naming both."""
    text = str(path).replace("\\", "/")
    rel = PurePosixPath(text)
    if rel.is_absolute() or (rel.parts and ":" in rel.parts[0]) or ".." in rel.parts or not rel.parts:
        raise InstanceSearchError(
            f"{source}: image path {text} is not inside the dataset folder {root}; image paths must be relative "
            f"to it, without '..': fix the file or download it again")
    return root / rel


def describe_images(root: str | os.PathLike, named_paths: Iterable[tuple[str, Path]], *,
                    unreadable: dict[str, io.UnreadableImage] | None = None,
                    source: str | os.PathLike | None = None) -> list[Image]:
    """Decode each image (in parallel) for its size, every one of them even when some fail.

    Unreadable images are gathered: without ``unreadable`` they are all reported in one line (count and
    names); with it they are recorded there (name -> error) and left out of the list, for the adapter
    to decide (:func:`resolve_unreadable`). Every path must lie inside ``root`` (``source``: the file
    that named them, for the message).
    """
    root = Path(root)
    named_paths = list(named_paths)
    for _, p in named_paths:
        try:
            rel = Path(p).relative_to(root)
        except ValueError:
            rel = None
        if rel is None or ".." in rel.parts:
            raise InstanceSearchError(f"{source or root}: image path {p} is not inside the dataset folder {root}; "
                                      f"fix the ground-truth file or the images folder")
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))  # OpenCV decodes without the GIL
    try:
        sizes = list(pool.map(_probe, (p for _, p in named_paths)))
    finally:  # an interrupted step does not wait for the queued images
        pool.shutdown(wait=True, cancel_futures=True)
    bad = {name: size for (name, _), size in zip(named_paths, sizes) if isinstance(size, io.UnreadableImage)}
    if bad and unreadable is None:
        raise unreadable_error(bad, root)
    if unreadable is not None:
        unreadable.update(bad)
    return [Image(name=name, path=Path(p).relative_to(root).as_posix(), width=size[0], height=size[1])
            for (name, p), size in zip(named_paths, sizes) if name not in bad]


def listing(bad: Mapping[str, io.UnreadableImage], root: Path) -> str:
    """``a.jpg (truncated or corrupt JPEG), b.jpg (...) and 3 more``: the first MAX_LISTED by path."""
    def rel(exc: io.UnreadableImage) -> str:
        try:
            return Path(exc.path).relative_to(root).as_posix()
        except ValueError:
            return str(exc.path)

    items = sorted(f"{rel(e)} ({e.reason})" for e in bad.values())
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def unreadable_error(bad: Mapping[str, io.UnreadableImage], root: Path, dataset: str = "<name>") -> InstanceSearchError:
    n = len(bad)
    return InstanceSearchError(
        f"{root}: {n} unreadable image{'s' if n > 1 else ''}: {listing(bad, root)}; replace {'them' if n > 1 else 'it'}, "
        f"or list known-corrupt files in datasets.{dataset}.skip, or set datasets.{dataset}.skip_unreadable: true to "
        f"leave out unreadable database images")


def resolve_unreadable(bad: Mapping[str, io.UnreadableImage], protected: Iterable[str], skip_unreadable: bool,
                       root: str | os.PathLike, dataset: str) -> set[str]:
    """The names to leave out of the database; raise when any unreadable image must stay.

    Without ``skip_unreadable`` every unreadable image is an error (all named in one line). With it,
    unreadable database images are left out and counted in the log, but a query image or a positive
    (``protected``) is never left out: benchmark counts stay honest.
    """
    root = Path(root)
    if not bad:
        return set()
    if not skip_unreadable:
        raise unreadable_error(bad, root, dataset)
    protected = set(protected)
    stuck = {name: exc for name, exc in bad.items() if name in protected}
    if stuck:
        n = len(stuck)
        raise InstanceSearchError(
            f"{root}: {n} unreadable query or positive image{'s' if n > 1 else ''}, which "
            f"datasets.{dataset}.skip_unreadable never leaves out: {listing(stuck, root)}; replace "
            f"{'them' if n > 1 else 'it'}")
    log.warning("%s: left out %d unreadable database images (datasets.%s.skip_unreadable): %s",
                root, len(bad), dataset, listing(bad, root))
    return set(bad)


def check_counts_before(gnd: GroundTruth, expect: Mapping[str, int] | None, source: str, dropped: set[str]) -> None:
    """The published counts (``expect``) checked as the dataset was before unreadable images were left
    out: those are counted in the log, not mistaken for an incomplete download."""
    counts = gnd.counts()
    counts["images"] += len(dropped)
    counts["database"] += len(dropped)
    check_expected(counts, expect, source, gnd.dataset)


def scan_images(images_dir: str | os.PathLike, skip: Iterable[str] = (), *,
                unreadable: dict[str, io.UnreadableImage] | None = None) -> list[Image]:
    """Every image under ``images_dir`` (sorted by relative path) except the names in ``skip``."""
    return describe_images(images_dir, index_images(images_dir, skip).items(), unreadable=unreadable)


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


def _read_names(path: Path, index: Mapping[str, object], skip: set[str]) -> set[str]:
    names = set()
    for line in _read_lines(path):
        name = strip_image_suffix(line.strip())
        if not name or name in skip:  # known-corrupt images are left out of the lists as well
            continue
        if name not in index:
            raise InstanceSearchError(f"{path}: image {name} is not in the database; fix the list or the image folder")
        names.add(name)
    return names


def load_oxford(name: str, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
                skip: Iterable[str] = (), expect: Mapping[str, int] | None = None,
                skip_unreadable: bool = False) -> GroundTruth:
    """Parse an Oxford-format dataset into the normalised ground truth (database = all its images).

    ``skip``: image names left out on purpose (known-corrupt files), from the lists as well.
    ``expect``: published counts to check (:data:`groundtruth.COUNT_KEYS`); None checks nothing.
    ``skip_unreadable``: leave out unreadable images that are neither a query image nor a positive.
    """
    skip = set(skip)
    found = index_images(images_dir, skip)
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InstanceSearchError(f"{gt_dir}: ground-truth folder not found; download or generate the dataset first")
    query_files = sorted(gt_dir.glob("*_query.txt"))
    if not query_files:
        raise InstanceSearchError(f"{gt_dir}: no *_query.txt files; check the dataset's groundtruth folder")
    # The ground truth first (cheap, by name), then one decoding pass over every image.
    parsed = []
    for qfile in query_files:
        qname = qfile.name[: -len("_query.txt")]
        image_name, box = _parse_query_line(qfile)
        if image_name not in found:
            raise InstanceSearchError(f"{qfile}: query image {image_name} is not in {images_dir}; fix the file or the image folder")
        lists = {kind: _read_names(gt_dir / f"{qname}_{kind}.txt", found, skip) for kind in LISTS}
        if not lists["good"] and not lists["ok"]:
            raise InstanceSearchError(
                f"{gt_dir / (qname + '_good.txt')}: query {qname} has no positive image (its good and ok lists "
                f"are empty); list its positives or remove the query")
        parsed.append((qfile, qname, image_name, box, lists))
    return build_oxford(name, images_dir, found, parsed, gt_dir, expect=expect, skip_unreadable=skip_unreadable)


def build_oxford(name: str, images_dir: str | os.PathLike, found: Mapping[str, Path], parsed: list, source: Path, *,
                 expect: Mapping[str, int] | None = None, skip_unreadable: bool = False) -> GroundTruth:
    """The normalised ground truth of parsed Oxford-style queries over the images ``found``.

    ``parsed``: per query ``(file, name, image name, box or None, {good, ok, junk: names})``; a None
    box is the whole query image. ``source`` names the ground truth in messages.
    """
    bad: dict[str, io.UnreadableImage] = {}
    images = describe_images(images_dir, found.items(), unreadable=bad)
    protected = {n for _, _, image_name, _, lists in parsed for n in (image_name, *lists["good"], *lists["ok"])}
    dropped = resolve_unreadable(bad, protected, skip_unreadable, images_dir, name)
    index = {im.name: i for i, im in enumerate(images)}
    queries = []
    for qfile, qname, image_name, box, lists in parsed:
        ids = {kind: tuple(sorted(index[n] for n in lists[kind] if n not in dropped)) for kind in LISTS}
        image = index[image_name]
        if box is None:
            box = (0.0, 0.0, float(images[image].width), float(images[image].height))
        queries.append(Query(name=qname, image=image, box=clip_box(qfile, box, images[image]), **ids))
    gnd = GroundTruth(dataset=name, root=Path(images_dir).as_posix(), images=images, n_database=len(images),
                      queries=queries)
    gnd.validate(str(source))
    check_counts_before(gnd, expect, str(source), dropped)
    log.info("%s: %d images, %d queries", name, len(images), len(queries))
    return gnd
