"""Adapter for UKBench (Nister & Stewenius 2006): groups of 4 views of one object, no boxes.

On disk: a folder of ``ukbenchNNNNN.jpg`` and a CSV ``image,object``; or ``groundtruth: by-name`` for
the full release, whose groups are the file numbers divided by 4 (00000-00003 ...). Every image is a query whose
box is the whole image, the database is every image (the query included), and the positives are
the 4 images of its group (itself included), so the N-S score is the mean number of them in the
top 4.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Query
from .oxford import resolve_unreadable, scan_images

GROUP = 4
BY_NAME = "by-name"  # groundtruth value: groups from the file numbers (the full 10,200-image release)


def _read_groups(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise InstanceSearchError(f"{path}: ground-truth file not found; check datasets.<name>.groundtruth")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"image", "object"} <= set(reader.fieldnames):
            raise InstanceSearchError(f"{path}: expected a CSV with columns image,object")
        groups = {Path(row["image"]).stem: row["object"] for row in reader}
    if not groups:
        raise InstanceSearchError(f"{path}: no rows; the ground-truth file is empty")
    return groups


def load_ukbench(name: str, images_dir: str | os.PathLike, groundtruth_csv: str | os.PathLike, *,
                 skip_unreadable: bool = False) -> GroundTruth:
    """Every image is a query and a positive, so an unreadable one is always an error (all named at once)."""
    bad: dict = {}
    images = scan_images(images_dir, unreadable=bad)
    resolve_unreadable(bad, bad, skip_unreadable, images_dir, name)
    if str(groundtruth_csv) == BY_NAME:
        try:
            groups = {im.name: str(int(im.name.removeprefix("ukbench")) // GROUP) for im in images}
        except ValueError:
            raise InstanceSearchError(f"{images_dir}: image names are not ukbenchNNNNN; give a groundtruth CSV") from None
    else:
        groups = _read_groups(Path(groundtruth_csv))
    missing = [im.name for im in images if im.name not in groups]
    if missing:
        raise InstanceSearchError(f"{groundtruth_csv}: no object for image {missing[0]} ({len(missing)} missing)")
    members: dict[str, list[int]] = {}
    for i, im in enumerate(images):
        members.setdefault(groups[im.name], []).append(i)
    odd = [g for g, m in members.items() if len(m) != GROUP]
    if odd:
        raise InstanceSearchError(
            f"{groundtruth_csv}: object {odd[0]} has {len(members[odd[0]])} images, expected {GROUP}; check the image folder")
    queries = [Query(name=im.name, image=i, box=(0.0, 0.0, float(im.width), float(im.height)),
                     good=tuple(members[groups[im.name]]))
               for i, im in enumerate(images)]
    return GroundTruth(name, str(images_dir), images, len(images), queries)
