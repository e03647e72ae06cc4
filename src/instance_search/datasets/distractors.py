"""Distractor images (e.g. the revisitop 1M set) appended to a dataset's database.

``datasets.<name>.distractors: data/revisitop1m`` (optional, off by default): the fetch step
downloads that registry dataset (its folder name) with a disk-space check before the first byte, and
prepare appends every image (``.jpg``, ``.jpeg``, ``.png``, any case) under the folder to the database, after the dataset's own images and
before its query-only images. They are never positives, so the ground truth's labels are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Image
from .oxford import resolve_unreadable, scan_images

log = logging.getLogger(__name__)


def add_distractors(gnd: GroundTruth, folder: str | os.PathLike, *, skip_unreadable: bool = False) -> GroundTruth:
    """``skip_unreadable``: leave out unreadable distractors (never positives), counted in the log."""
    bad: dict = {}
    extra = scan_images(folder, unreadable=bad)  # decodes each image for its size: minutes for a million
    resolve_unreadable(bad, (), skip_unreadable, folder, gnd.dataset)
    rel = Path(os.path.relpath(folder, gnd.root)).as_posix()
    own = {im.name for im in gnd.images}
    clash = next((im.name for im in extra if im.name in own), None)
    if clash is not None:
        raise InstanceSearchError(f"{folder}: distractor {clash} has the name of an image of {gnd.dataset}; "
                                  "distractors must be other images")
    extra = [Image(im.name, f"{rel}/{im.path}", im.width, im.height) for im in extra]
    n_db, k = gnd.n_database, len(extra)
    queries = [q if q.image < n_db else dataclasses.replace(q, image=q.image + k) for q in gnd.queries]
    log.info("%s: %d distractors from %s added to the database of %d images", gnd.dataset, k, folder, n_db)
    return GroundTruth(gnd.dataset, gnd.root, gnd.images[:n_db] + extra + gnd.images[n_db:], n_db + k, queries)
