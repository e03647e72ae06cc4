"""A folder of one's own photos as a dataset (``format: folder``): no ground truth.

Every image under the folder (any depth; .jpg, .jpeg, .png in any case; sorted by relative path) is
a database image, named by its relative path without the extension. Unreadable files are named in
the log and left out: the rest are indexed. Queries are optional: a CSV ``image,x1,y1,x2,y2`` (image
= a path relative to the folder, box in its pixels) gives queries without positives, so the
pipeline ranks them but evaluates nothing.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Image, Query
from .oxford import describe_images, is_image_file, listing

log = logging.getLogger(__name__)


def list_images(images_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    root = Path(images_dir)
    if not root.is_dir():
        raise InstanceSearchError(f"{root}: image folder not found; give a folder of JPEG or PNG images")
    files = sorted((p for p in root.rglob("*") if p.is_file() and is_image_file(p)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise InstanceSearchError(f"{root}: no .jpg, .jpeg or .png image in the folder")
    return [(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]


def readable_images(images_dir: str | os.PathLike) -> list[Image]:
    """The folder's readable images; the unreadable ones are named in one log line and left out."""
    root = Path(images_dir)
    bad: dict = {}
    images = describe_images(root, list_images(root), unreadable=bad)
    if bad:
        log.warning("%s: left out %d unreadable images: %s", root, len(bad), listing(bad, root))
    if not images:
        raise InstanceSearchError(f"{root}: none of the {len(bad)} images is readable")
    return images


def _queries(path: Path, images: list[Image]) -> list[Query]:
    if not path.is_file():
        raise InstanceSearchError(f"{path}: query file not found; check datasets.<name>.queries")
    index = {im.path: i for i, im in enumerate(images)}
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                i = index[Path(row["image"]).as_posix()]
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            except KeyError:
                raise InstanceSearchError(f"{path}: line {n}: expected columns image,x1,y1,x2,y2 with an image of "
                                          "the folder") from None
            except (TypeError, ValueError):
                raise InstanceSearchError(f"{path}: line {n}: the box must be four numbers") from None
            out.append(Query(name=f"{Path(row['image']).stem}_{n - 1}", image=i, box=box, good=()))
    return out


def load_folder(name: str, images_dir: str | os.PathLike, queries: str | os.PathLike | None = None) -> GroundTruth:
    root = Path(images_dir)
    images = readable_images(root)
    gnd = GroundTruth(dataset=name, root=str(images_dir), images=images, n_database=len(images),
                      queries=_queries(Path(queries), images) if queries else [], labelled=False)
    log.info("%s: %d images, %d queries, no ground truth (evaluation and tables leave it out)", name, len(images),
             len(gnd.queries))
    return gnd
