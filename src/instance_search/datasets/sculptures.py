"""Adapter for Sculptures6k (Arandjelovic & Zisserman, "Smooth object retrieval using a bag of
boundaries", ICCV 2011): 6,340 Flickr photographs of Henry Moore and Auguste Rodin sculptures.

The dataset comes in two disjoint halves of 3,170 images, ``train`` and ``test``, each with its own
70 queries (10 sculptures x 7) and Oxford-style good/ok/junk lists. The train half is for learning
(vocabularies, parameters); retrieval results are reported on the TEST half, which is what this
adapter evaluates by default (``half: test``): its database is the test images only, its queries
the test queries.

The images lie in one sub-folder per half: ``<images>/test/*.jpg``, ``<images>/train/*.jpg``. The
ground truth is read in either of two layouts, chosen by what is on disk (no copy of the official
ground truth is public, so both are supported; see docs/datasets):

- per-query lists, one sub-folder per half (the Oxford format)::

    <groundtruth>/test/<q>_query.txt, <q>_good.txt, <q>_ok.txt, <q>_junk.txt
    <groundtruth>/train/...

- one file, ``sculptures6k_gt.txt`` (in ``<groundtruth>/``, in
  ``<groundtruth>/sculptures6k_evaluation/``, or ``groundtruth`` naming the file itself), as the one
  public loader (NelleV/SORBB, src/load.py) reads it: a header line, then four lines a query::

    <query image name>
    <a line that loader skips: read here as the box x1 y1 x2 y2 when it is four numbers, else the
     whole query image is the query>
    <positives, separated by spaces>
    <images to ignore (junk), separated by spaces>

  The queries of the evaluated half are those whose image is in that half; their positives and
  ignored images must be in the same half (each half is its own database).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from .oxford import build_oxford, index_images, load_oxford, strip_image_suffix

log = logging.getLogger(__name__)

HALVES = ("test", "train")
EVALUATED_HALF = "test"
GT_FILE = "sculptures6k_gt.txt"
GT_FILE_FOLDER = "sculptures6k_evaluation"


def single_file(gt: Path) -> Path | None:
    """The single ground-truth file when ``gt`` is (or holds) one, else None (per-query lists)."""
    for path in (gt, gt / GT_FILE, gt / GT_FILE_FOLDER / GT_FILE):
        if path.is_file():
            return path
    return None


def _box(line: str) -> tuple[float, float, float, float] | None:
    fields = line.split()
    if len(fields) != 4:
        return None
    try:
        return tuple(float(v) for v in fields)
    except ValueError:
        return None


def load_single_file(name: str, images_dir: Path, path: Path, half: str, *,
                     expect: Mapping[str, int] | None = None, skip_unreadable: bool = False) -> GroundTruth:
    """One half of Sculptures6k from the single ``sculptures6k_gt.txt`` (see the module's docstring)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InstanceSearchError(f"{path}: not a text file; restore the dataset's ground-truth file") from None
    body = lines[1:]
    while len(body) % 4 and not body[-1].strip():  # trailing blank lines (an empty ignore line is data)
        body.pop()
    if not body or len(body) % 4:
        raise InstanceSearchError(
            f"{path}: {len(body)} lines after the header, expected 4 a query (name, box line, positives, ignore); "
            f"fix the file or use the per-query lists in <groundtruth>/{half}/")
    found = index_images(images_dir)
    parsed, wholes, elsewhere = [], 0, 0
    for start in range(0, len(body), 4):
        number = start + 2  # 1-based line number of the query's first line (after the header)
        qline, boxline, positives, ignore = body[start:start + 4]
        image_name = strip_image_suffix(qline.strip())
        if not image_name:
            raise InstanceSearchError(f"{path}: line {number}: empty query name; fix the file")
        if image_name not in found:
            elsewhere += 1  # a query of the other half
            continue
        lists = {"good": set(), "ok": set(), "junk": set()}
        for kind, text, offset in (("good", positives, 2), ("junk", ignore, 3)):
            for item in text.split():
                listed = strip_image_suffix(item)
                if listed not in found:
                    raise InstanceSearchError(
                        f"{path}: line {number + offset}: image {listed} is not in {images_dir} (the {half} half); "
                        f"fix the file or the image folder")
                lists[kind].add(listed)
        if not lists["good"]:
            raise InstanceSearchError(f"{path}: line {number + 2}: query {image_name} has no positive image; "
                                      f"list its positives or remove the query")
        box = _box(boxline)
        wholes += box is None
        parsed.append((path, image_name, image_name, box, lists))
    if not parsed:
        raise InstanceSearchError(f"{path}: none of its {len(body) // 4} queries is an image of {images_dir}; "
                                  f"check datasets.{name}.half and the images folder")
    if wholes:
        log.info("%s: %d queries without a box line: the whole query image is the query", name, wholes)
    log.info("%s: %d queries of the %s half (%d of the other half left out)", name, len(parsed), half, elsewhere)
    parsed.sort(key=lambda q: q[1])
    return build_oxford(name, images_dir, found, parsed, path, expect=expect, skip_unreadable=skip_unreadable)


def load_sculptures(name: str, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
                    half: str = EVALUATED_HALF, expect: Mapping[str, int] | None = None,
                    skip_unreadable: bool = False) -> GroundTruth:
    """One half of Sculptures6k (default: the test half the literature reports) as its own dataset."""
    if half not in HALVES:
        raise InstanceSearchError(f"params.yaml: key datasets.{name}.half: {half!r} is not one of {list(HALVES)}")
    images, gt = Path(images_dir) / half, Path(gt_dir) / half
    one_file = None if gt.is_dir() else single_file(Path(gt_dir))
    for folder, what in ((images, "images"), *(() if one_file else ((gt, "ground-truth files"),))):
        if not folder.is_dir():
            raise InstanceSearchError(
                f"{folder}: folder of the {half} half not found; unpack Sculptures6k so that the {what} of "
                f"each half lie in {Path(folder).parent}/<train|test>/"
                + ("" if what == "images" else f" (or give the single file {GT_FILE_FOLDER}/{GT_FILE})"))
    if one_file:
        return load_single_file(name, images, one_file, half, expect=expect, skip_unreadable=skip_unreadable)
    return load_oxford(name, images, gt, expect=expect, skip_unreadable=skip_unreadable)
